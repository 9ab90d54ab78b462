"""NRSfM 3D shape model (napari_gsm.shape3d) on synthetic data with a known 3D truth."""

import numpy as np
import pytest

from napari_gsm.shape3d import (Shape3DModel, euler_to_rotation, load_mean3d, nrsfm,
                                ortho_procrustes, rotation_to_euler)


def _object(rng, v=30):
    X0 = rng.normal(0, 10, (v, 3))
    X0[:, 2] *= 0.6
    modes = rng.normal(0, 1.2, (3, v, 3))
    return X0 - X0.mean(0), modes - modes.mean(1, keepdims=True)


def _views(X0, modes, rng, n=200, noise=0.01):
    shapes, rots = [], []
    for _ in range(n):
        R = euler_to_rotation(rng.uniform(-60, 60), rng.uniform(-30, 30), rng.uniform(-10, 10))
        X = X0 + np.einsum("k,kva->va", rng.normal(0, 1, 3), modes)
        w = rng.uniform(0.8, 1.2) * X @ R[:2].T + rng.normal(0, 5, 2)
        size = np.sqrt(((w - w.mean(0)) ** 2).sum(1).mean())
        shapes.append(w + rng.normal(0, noise * size, w.shape))
        rots.append(R)
    return np.array(shapes), np.array(rots)


def _similarity_error(A, B):
    """Relative RMS error of A mapped onto B by the best similarity, allowing a reflection."""
    A, B = A - A.mean(0), B - B.mean(0)
    best = np.inf
    for D in (np.eye(3), np.diag([1.0, 1.0, -1.0])):
        Ad = A @ D
        U, S, Vt = np.linalg.svd(B.T @ Ad)
        E = np.diag([1, 1, np.sign(np.linalg.det(U @ Vt))])
        R = U @ E @ Vt
        s = (S * np.diag(E)).sum() / (Ad**2).sum()
        err = np.sqrt(((s * Ad @ R.T - B) ** 2).sum(1).mean() / (B**2).sum(1).mean())
        best = min(best, err)
    return best


def test_nrsfm_recovers_mean_shape_with_missing_landmarks():
    rng = np.random.default_rng(1)
    X0, modes = _object(rng)
    shapes, _ = _views(X0, modes, rng)
    shapes[rng.random(shapes.shape[:2]) < 0.05] = np.nan
    model, cams = nrsfm(shapes, n_modes=3)
    # Orthographic NRSfM fixes the shape up to a similarity and a depth reflection.
    assert _similarity_error(model.mean, X0) < 0.03
    # A flat (depth-less) shape would be far off: the depth really is recovered.
    flat = X0.copy()
    flat[:, 2] = 0
    assert _similarity_error(flat, X0) > 0.2
    # Deformation subspace: the true modes lie (mostly) in the learned span.
    Vt = np.stack([m.T.reshape(-1) for m in modes], 1)
    B = model.basis
    # Compare after removing the similarity between frames: project true modes mapped into
    # the model frame through the best rotation of the means.
    A, C = model.mean - model.mean.mean(0), X0
    for D in (np.eye(3), np.diag([1.0, 1.0, -1.0])):
        U, S, W = np.linalg.svd(A.T @ (C @ D))
        E = np.diag([1, 1, np.sign(np.linalg.det(U @ W))])
        Rm = U @ E @ W
        if np.abs(A - (C @ D) @ Rm.T * (S * np.diag(E)).sum() / (C**2).sum()).max() < \
                0.1 * np.abs(A).max():
            break
    Vm = np.stack([((m @ D) @ Rm.T).T.reshape(-1) for m in modes], 1)
    Q, _ = np.linalg.qr(B)
    captured = np.linalg.norm(Q.T @ Vm) ** 2 / np.linalg.norm(Vm) ** 2
    assert captured > 0.8
    assert Vt.shape == Vm.shape


def test_nrsfm_units_and_conventions():
    rng = np.random.default_rng(2)
    X0, modes = _object(rng)
    shapes, _ = _views(X0, modes * 0.3, rng, n=120)
    model, cams = nrsfm(shapes, n_modes=2)
    # Reference-frame units: mean camera scale 1.
    assert np.isclose(cams["sigma"].mean(), 1.0)
    # Mean training camera is the identity rotation.
    U, _, Vt = np.linalg.svd(cams["R"].sum(0))
    assert np.allclose(U @ Vt, np.eye(3), atol=1e-6)
    # Depth sign convention: outer points further away (positive correlation).
    rad = (model.mean[:, :2] ** 2).sum(1)
    assert np.dot(rad - rad.mean(), model.mean[:, 2]) >= 0
    # Cameras are rotations.
    assert np.allclose(np.einsum("nij,nkj->nik", cams["R"], cams["R"]), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(cams["R"]), 1)
    # Covariance: symmetric positive definite, precision is its inverse.
    C = model.cov
    assert np.allclose(C, C.T)
    assert np.linalg.eigvalsh(C).min() >= model.var_floor - 1e-9
    assert np.allclose(model.precision @ C, np.eye(len(C)), atol=1e-8)
    # Round trip.
    back = Shape3DModel.from_arrays(model.to_arrays())
    assert np.array_equal(back.mean, model.mean) and np.allclose(back.cov, C)


def test_nrsfm_with_known_mean_keeps_it():
    rng = np.random.default_rng(3)
    X0, modes = _object(rng)
    shapes, _ = _views(X0, modes * 0.5, rng, n=100)
    model, cams = nrsfm(shapes, n_modes=3, mean3d=X0 * 7.0)
    k = np.linalg.norm(model.mean) / np.linalg.norm(X0)
    assert np.allclose(model.mean, k * X0, atol=1e-9)  # kept: only scaled and centred
    assert np.isclose(cams["sigma"].mean(), 1.0)


def test_ortho_procrustes_exact():
    rng = np.random.default_rng(4)
    X = rng.normal(0, 5, (20, 3))
    R = euler_to_rotation(35, -20, 12)
    w = 1.7 * X @ R[:2].T + [3.0, -4.0]
    w[3] = np.nan
    s, Rf, t = ortho_procrustes(X, w)
    assert np.isclose(s, 1.7) and np.allclose(t, [3.0, -4.0], atol=1e-6)
    assert np.allclose(Rf, R, atol=1e-6)
    assert np.allclose(rotation_to_euler(Rf), (35, -20, 12), atol=1e-4)


def test_load_mean3d(tmp_path):
    X = np.arange(15, dtype=float).reshape(5, 3)
    np.save(tmp_path / "m.npy", X)
    np.savetxt(tmp_path / "m.csv", X, delimiter=",")
    assert np.array_equal(load_mean3d(tmp_path / "m.npy", 5), X)
    assert np.allclose(load_mean3d(tmp_path / "m.csv", 5), X)
    with pytest.raises(ValueError, match="m.csv.*4 landmarks|m.csv"):
        load_mean3d(tmp_path / "m.csv", 4)
    np.savetxt(tmp_path / "two.csv", X[:, :2], delimiter=",")
    with pytest.raises(ValueError, match="two.csv.*3 columns"):
        load_mean3d(tmp_path / "two.csv", 5)
    bad = X.copy()
    bad[1, 1] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match="bad.npy.*non-finite"):
        load_mean3d(tmp_path / "bad.npy", 5)
    with pytest.raises(ValueError, match="missing.npy"):
        load_mean3d(tmp_path / "missing.npy", 5)
