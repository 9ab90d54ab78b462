"""GSM-CR (cascade regression on GSM features): training, fitting, state round trips.

Trained on small synthetic images: a textured background with a few Gaussian blobs of
different sizes and polarities at known landmarks, placed by random similarities.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_gsm.features import (FeatureSpec, Pyramid, feature_map, preprocess_patches,
                                 sample_patches)
from napari_gsm.methods import METHODS
from napari_gsm.responses import FeatureReader
from napari_gsm.methods.cascade import CascadeState, fit_cascade, load_cascade
from napari_gsm.methods.cascade_train import train_cascade
from napari_gsm.methods.gsm import fit_gsm
from napari_gsm.model import Sample, TrainParams, load_model, train

BASE = np.array([[-1.0, -0.6], [1.0, -0.7], [0.0, 0.1], [-0.7, 0.9], [0.8, 0.8], [0.1, -1.2]])
RADII = np.array([3.0, 4.0, 2.5, 3.5, 3.0, 4.5])
SIGNS = np.array([1.0, 1.0, -1.0, 1.0, -1.0, 1.0])


def _render(rng, size=110):
    """One image ``(size, size)`` and its ``(6, 2)`` landmarks at a random similarity."""
    ang = rng.normal(0, 0.15)
    scale = 20 * np.exp(rng.normal(0, 0.08))
    R = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    shape_noise = rng.normal(0, 0.04, BASE.shape)
    pts = (BASE + shape_noise) @ R.T * scale + size / 2 + rng.normal(0, 4, 2)
    yy, xx = np.mgrid[:size, :size].astype(float)
    img = 0.5 + 0.04 * np.sin(xx / 5.0 + rng.uniform(0, 6)) * np.cos(yy / 7.0)
    img += rng.normal(0, 0.02, img.shape)
    for (x, y), r, s in zip(pts, RADII * scale / 20, SIGNS):
        img += 0.35 * s * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * r * r))
    return img.astype(np.float32), pts


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(123)
    return [_render(rng) for _ in range(44)]


@pytest.fixture(scope="module")
def params():
    return TrainParams(features="grey", patch=15, ref_size=20.0, sigma=2.0)


@pytest.fixture(scope="module")
def model(data, params):
    return train(data[:36], "gsm-cr", params=params, levels=4, perturbations=12, seed=0,
                 spread=1.5)


def _samples(data):
    return [Sample(f"s{i}", img, pts) for i, (img, pts) in enumerate(data)]


def _nme(points, truth):
    return float(np.linalg.norm(points - truth, axis=1).mean())


def test_feature_reader_matches_detector_responses():
    """The fast reader equals responses(preprocess(sample_patches)) at 1/32-pixel centres."""
    rng = np.random.default_rng(0)
    for kind, L, D in (("grey", 11, 1), ("hog", 7, 9)):
        spec = FeatureSpec(kind=kind, patch=L, cell=3)
        fmap = feature_map(rng.random((60, 64)).astype(np.float32), spec)
        v, n = 5, 3
        filt = rng.standard_normal((v, 6, L, L, D)).astype(np.float32)
        # Centres on OpenCV's 1/32 grid, some near/outside the border (replicated).
        centres = np.round(rng.uniform(-5, 66, (n, v, 2)) * 32) / 32
        got = FeatureReader(filt, spec).read(fmap, centres)
        for j in range(n):
            p = preprocess_patches(sample_patches(fmap, centres[j], spec), spec)
            ref = np.einsum("vk,vjk->jv", p.reshape(v, -1), filt.reshape(v, 6, -1)).ravel()
            np.testing.assert_allclose(got[j], ref, rtol=1e-4, atol=1e-4)
    # More patches than one cv2.remap map may hold (SHRT_MAX rows) are read in chunks.
    reader = FeatureReader(filt, spec)
    many = rng.uniform(0, 60, (6100, v, 2))
    big = reader.read(fmap, many)
    assert big.shape == (6100, 6 * v)
    np.testing.assert_allclose(big[-3:], reader.read(fmap, many[-3:]), rtol=1e-5, atol=1e-6)


def test_registered():
    m = METHODS["gsm-cr"]
    assert m.train is train_cascade and m.load is load_cascade


def test_error_decreases_level_by_level(model):
    info = model.state.params()
    tr, ho = info["train_error"], info["heldout_error"]
    assert len(tr) == 5 and len(info["lam"]) == 4
    assert tr[1] < tr[0] * 0.8 and tr[2] < tr[1] and tr[3] < tr[2]
    assert ho[1] < ho[0] * 0.8 and ho[2] < ho[1]
    assert info["n_heldout"] > 0 and info["init"] == "prior"
    assert model.state.R.shape == (4, 6 * 6 + 1, 12)


def test_fit_improves_on_new_images(model, data):
    """On unseen images, from noisy boxes, the cascade lands much closer than its start."""
    rng = np.random.default_rng(5)
    before, after = [], []
    for img, pts in data[36:]:
        lo, hi = pts.min(0), pts.max(0)
        box = np.r_[lo, hi] + rng.normal(0, 0.06 * (hi[0] - lo[0]), 4)
        r = model.fit(img, init="box", box=box)
        assert r.method == "gsm-cr" and r.n_iter == 4 and len(r.history) == 5
        before.append(_nme(r.start, pts))
        after.append(_nme(r.points, pts))
    assert np.mean(after) < 0.5 * np.mean(before)


def test_default_fit_starts_where_training_simulated(model, data):
    """A fit with no box or points starts from the prior, the start 'auto' trained for."""
    before, after = [], []
    for img, pts in data[36:]:
        r = model.fit(img)
        assert r.init == "prior"
        before.append(_nme(r.start, pts))
        after.append(_nme(r.points, pts))
    assert np.mean(after) < 0.2 * np.mean(before)  # a box-trained cascade: 0.24


def test_every_init(model, data):
    img, pts = data[40]
    lo, hi = pts.min(0), pts.max(0)
    for kw in ({"init": "box", "box": np.r_[lo, hi]}, {"init": "prior"},
               {"init": "points", "points": pts + 2.0}):
        r = model.fit(img, **kw)
        assert r.init == kw["init"]
        assert np.isfinite(r.points).all() and r.points.shape == (6, 2)
    part = np.full_like(pts, np.nan)
    part[:3] = pts[:3]
    r = model.fit(img, init="points", points=part)
    assert np.isfinite(r.points).all()


def test_pinned_points_stay_exactly(model, data):
    img, pts = data[41]
    start = pts + np.random.default_rng(1).normal(0, 3, pts.shape)
    pinned = np.array([True, False, False, True, False, False])
    r = model.fit(img, init="points", points=start, pinned=pinned)
    assert np.array_equal(r.points[pinned], start[pinned])
    assert all(np.array_equal(h[pinned], start[pinned]) for h in r.history)
    assert not np.allclose(r.points[~pinned], start[~pinned])


def test_a_fit_with_pins_is_gsms_newton_fit(model, data):
    # The cascade cannot hold a landmark; re-running it from a fit a person has corrected
    # moved the others away (its levels are learned from rough starts).
    img, pts = data[42]
    start = pts + np.random.default_rng(2).normal(0, 2, pts.shape)
    pinned = np.array([False, True, False, False, False, False])
    start[pinned] = pts[pinned]
    r = model.fit(img, init="points", points=start, pinned=pinned)
    newton = fit_gsm(model, Pyramid(img), start, pinned=pinned)
    np.testing.assert_array_equal(r.points, newton.points)


def test_training_is_deterministic(model, data):
    samples = _samples(data[:20])
    a = train_cascade(model, samples, levels=2, perturbations=5, seed=3)
    b = train_cascade(model, samples, levels=2, perturbations=5, seed=3)
    c = train_cascade(model, samples, levels=2, perturbations=5, seed=4)
    assert np.array_equal(a.R, b.R) and a.params() == b.params() | {
        "train_seconds": a.params()["train_seconds"]}
    assert not np.allclose(a.R, c.R)


def test_threads_and_exact_warps_agree_with_defaults(model, data):
    """Two worker threads give bitwise the same cascade; exact warps give nearly the same."""
    samples = _samples(data[:16])
    a = train_cascade(model, samples, levels=2, perturbations=4, seed=0)
    b = train_cascade(model, samples, levels=2, perturbations=4, seed=0, threads=2)
    assert np.array_equal(a.R, b.R)
    c = train_cascade(model, samples, levels=2, perturbations=4, seed=0, share=None)
    assert c.params()["train_error"][1] == pytest.approx(a.params()["train_error"][1], rel=0.25)


def test_state_round_trip(model):
    st = load_cascade(model.state.to_arrays(), model.state.params())
    assert isinstance(st, CascadeState)
    assert st.R.dtype == np.float64 and np.array_equal(st.R, model.state.R)
    assert st.params() == model.state.params()


def test_model_file_round_trip_gives_identical_fits(model, data, tmp_path):
    path = model.save(tmp_path / "cr.npz")
    again = load_model(path)
    assert again.method == "gsm-cr"
    img, pts = data[42]
    lo, hi = pts.min(0), pts.max(0)
    a = model.fit(img, init="box", box=np.r_[lo, hi])
    b = again.fit(img, init="box", box=np.r_[lo, hi])
    assert np.array_equal(a.points, b.points)


def _exact_fit(model, img, start):
    """Algorithm 3 as written: a warp and a feature map at every level's pose."""
    from napari_gsm.geometry import pose_from_shape
    from napari_gsm.methods.cascade import _from_frame, _sigma_index, _to_frame
    from napari_gsm.shape import from_vec

    shape, spec, state = model.shape, model.features, model.state
    pyramid = Pyramid(img)
    s = np.asarray(start, float)
    for k, R in enumerate(state.R):
        theta = pose_from_shape(s, shape.s0, shape.sm)
        fmap = feature_map(pyramid.warp(theta, shape.sm, shape.frame_shape), spec)
        x = _to_frame(s[None], theta[None], shape.sm)
        reader = model.detectors.reader(_sigma_index(model, k, state.info["coarse_levels"]),
                                        spec)
        dx = np.r_[reader.read(fmap, x)[0], 1.0] @ R
        s = _from_frame(x + from_vec(dx)[None], theta[None], shape.sm)[0]
    return s


def _box_starts(model, data, seed):
    """Starts placed in noisy boxes around the true shapes, with their images and truths."""
    from napari_gsm.init import start_from_box

    rng = np.random.default_rng(seed)
    out = []
    for img, pts in data:
        lo, hi = pts.min(0), pts.max(0)
        box = np.r_[lo, hi] + rng.normal(0, 0.08 * (hi[0] - lo[0]), 4)
        out.append((img, pts, start_from_box(model.shape.s0, box)))
    return out


def test_frame_tol_zero_warps_at_every_level_as_algorithm_3(model, data):
    for img, _, start in _box_starts(model, data[36:], 7):
        r = fit_cascade(model, Pyramid(img), start, frame_tol=0.0)
        assert r.extra["n_warps"] == model.state.levels
        np.testing.assert_allclose(r.points, _exact_fit(model, img, start), atol=1e-6)


def test_default_frame_tol_warps_less_and_lands_where_the_exact_fit_does(model, data):
    """The default keeps a frame while the pose moves little: fewer warps, and final shapes
    within a small fraction of the fit's own error from Algorithm 3's. Never re-warping
    (an infinite tolerance) lands visibly farther off."""
    warps, gap, gap_never, err, err_exact = [], [], [], [], []
    for img, pts, start in _box_starts(model, data[36:] + data[:8], 7):
        exact = _exact_fit(model, img, start)
        r = fit_cascade(model, Pyramid(img), start)
        never = fit_cascade(model, Pyramid(img), start, frame_tol=np.inf)
        assert never.extra["n_warps"] <= r.extra["n_warps"] <= model.state.levels
        warps.append(r.extra["n_warps"])
        gap.append(_nme(r.points, exact))
        gap_never.append(_nme(never.points, exact))
        err.append(_nme(r.points, pts))
        err_exact.append(_nme(exact, pts))
    # 0.02: 3 warps of 4, 0.046 px from the exact fits (0.05: 2.6 warps, 0.049 px; never
    # re-warping: 1.25 warps, 0.16 px), whose error is 0.40 px.
    assert np.mean(warps) < model.state.levels - 0.5
    assert np.mean(gap) < 0.2 * np.mean(err_exact)
    assert np.mean(gap) < 0.6 * np.mean(gap_never)
    assert np.mean(err) < 1.05 * np.mean(err_exact)


def test_warm_start_warps_only_for_the_levels_it_runs(model, data):
    img, _, start = _box_starts(model, data[40:41], 3)[0]
    r = fit_cascade(model, Pyramid(img), start, warm_start=True, frame_tol=0.0)
    assert r.n_iter == r.extra["n_warps"] == model.state.levels - 2


def test_fixed_lam_skips_holdout(model, data):
    st = train_cascade(model, _samples(data[:12]), levels=1, perturbations=4, lam=0.5)
    info = st.params()
    assert info["n_heldout"] == 0 and info["lam_rel"] == [0.5]
    assert info["heldout_error"] == [None, None]


def test_progress_reports_and_cancels(model, data):
    seen = []
    train_cascade(model, _samples(data[:10]), levels=2, perturbations=3,
                  progress=lambda d, t, w: seen.append((d, t, w)))
    assert seen[-1][:2] == (20, 20) and "level 2/2" in seen[-1][2]
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)

    class Stop(Exception):
        pass

    def stop(done, total, what):
        raise Stop

    for threads in (1, 2):
        with pytest.raises(Stop):
            train_cascade(model, _samples(data[:12]), levels=2, perturbations=3,
                          progress=stop, threads=threads)


def test_residual_noise_option(model, data):
    """Algorithm 4's per-level noise (off by default) perturbs the later levels only."""
    samples = _samples(data[:12])
    a = train_cascade(model, samples, levels=2, perturbations=4, seed=0)
    b = train_cascade(model, samples, levels=2, perturbations=4, seed=0, noise=0.5)
    assert np.array_equal(a.R[0], b.R[0]) and not np.allclose(a.R[1], b.R[1])
    assert np.isfinite(b.R).all()


def test_local_ridge_reads_only_each_landmarks_own_features():
    from napari_gsm.methods.cascade_parts import _gram
    from napari_gsm.methods.cascade_train import _ridge, _ridge_local

    # Updates that depend on each landmark's own six features only (plus a bias): the local
    # ridge recovers the coefficients and is exactly zero elsewhere; the full one is not.
    rng = np.random.default_rng(5)
    v, n = 4, 3000
    F = np.ones((n, 6 * v + 1))
    F[:, :-1] = rng.normal(size=(n, 6 * v)) * rng.uniform(0.1, 5, 6 * v)
    true = np.zeros((6 * v + 1, 2 * v))
    for i in range(v):
        own = np.r_[i:6 * v:v, 6 * v]
        true[np.ix_(own, [i, v + i])] = rng.normal(size=(7, 2))
    dP = F @ true + rng.normal(0, 0.01, (n, 2 * v))
    G, B = _gram(F, dP, np.arange(n))
    (R,) = _ridge_local(G, B, n, (1e-9,))
    np.testing.assert_allclose(R, true, atol=2e-3)
    assert np.all(R[true == 0] == 0)
    (R_full,) = _ridge(G, B, n, (1e-9,))
    assert np.count_nonzero(R_full[true == 0]) > 0


def test_structure_choice_is_recorded(model):
    info = model.state.params()
    assert len(info["local"]) == 4 and all(isinstance(x, bool) for x in info["local"])
    assert all(len(g) == 14 for g in info["heldout_grid"])  # 7 weights x {full, local}
    for k, local in enumerate(info["local"]):
        if local:  # a local level's matrix is zero outside each landmark's own rows
            R, v = model.state.R[k], 6
            for i in range(v):
                other = np.setdiff1d(np.arange(6 * v), np.r_[i:6 * v:v])
                assert np.all(R[other][:, [i, v + i]] == 0)


def test_vectorised_poses_match_geometry():
    from napari_gsm.geometry import pose_from_shape, to_base_mesh
    from napari_gsm.methods.cascade import _from_frame, _poses, _to_frame

    rng = np.random.default_rng(2)
    s0 = rng.uniform(10, 50, (7, 2))
    sm = s0.mean(0)
    shapes = rng.uniform(0, 300, (4, 7, 2))
    th = _poses(shapes, s0, sm)
    for k in range(4):
        np.testing.assert_allclose(th[k], pose_from_shape(shapes[k], s0, sm), rtol=1e-10,
                                   atol=1e-9)
        np.testing.assert_allclose(_to_frame(shapes, th, sm)[k],
                                   to_base_mesh(shapes[k], th[k], sm), atol=1e-9)
    np.testing.assert_allclose(_from_frame(_to_frame(shapes, th, sm), th, sm), shapes,
                               atol=1e-9)


def test_simulated_start_kinds(model, data):
    """'auto' simulates face-box starts for a face model, prior starts otherwise; 'box' too."""
    import copy
    from dataclasses import replace

    samples = _samples(data[:12])
    box = train_cascade(model, samples, levels=1, perturbations=6, lam=1.0, init="box")
    auto = train_cascade(model, samples, levels=1, perturbations=6, lam=1.0)
    assert box.params()["init"] == "box" and auto.params()["init"] == "prior"
    face_model = copy.copy(model)
    errors = np.random.default_rng(0).normal(0, [0.5, 0.5, 0.1, 0.1], (200, 4))
    face_model.starts = replace(model.starts, face=np.array([0.5, 0.6, 0.4]),
                                face_std=np.array([0.2, 0.2, 0.05]), face_errors=errors)
    face = train_cascade(face_model, samples, levels=1, perturbations=6, lam=1.0)
    assert face.params()["init"] == "face"
    # Simulated starts err like the measured ones: a centroid error of 0.5 sizes is far
    # larger than the synthetic box spread.
    assert face.params()["train_error"][0] > 1.5 * box.params()["train_error"][0]
    with pytest.raises(ValueError):
        train_cascade(model, samples, levels=1, perturbations=2, init="face")
