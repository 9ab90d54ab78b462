"""GSM 2D: derivatives checked by finite differences, convergence, pins, model files."""

import numpy as np
import pytest

from napari_gsm import GSMParams, TrainParams, load_model, train
from napari_gsm.methods.gsm import (assemble, assemble_local, image_step, limit_step,
                                    newton_step, regulariser)
from synthetic import make_set, random_shape, render


def _fd_grad(f, p, h=1e-6):
    g = np.zeros_like(p)
    for i in range(len(p)):
        e = np.zeros_like(p)
        e[i] = h
        g[i] = (f(p + e) - f(p - e)) / (2 * h)
    return g


def _fd_hess(grad, p, h=1e-6):
    H = np.zeros((len(p), len(p)))
    for i in range(len(p)):
        e = np.zeros_like(p)
        e[i] = h
        H[:, i] = (grad(p + e) - grad(p - e)) / (2 * h)
    return H


def _problem(v=5, seed=0):
    rng = np.random.default_rng(seed)
    s0 = rng.normal(size=(v, 2)) * 10 + 30
    s0vec = s0.T.reshape(-1)
    sm = s0.mean(0)
    M = rng.normal(size=(2 * v, 2 * v))
    prec = M @ M.T / (2 * v) + 0.1 * np.eye(2 * v)
    shape = rng.normal(size=(v, 2)) * 12 + 80
    p = np.concatenate([shape.T.reshape(-1), [0.6, 0.3, -5.0, 7.0]])
    return p, s0vec, sm, prec


def test_regulariser_gradient_and_hessian_match_finite_differences():
    p, s0vec, sm, prec = _problem()
    R, g, H = regulariser(p, s0vec, sm, prec)
    np.testing.assert_allclose(g, _fd_grad(lambda q: regulariser(q, s0vec, sm, prec)[0], p),
                               rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(H, _fd_hess(lambda q: regulariser(q, s0vec, sm, prec)[1], p),
                               rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(H, H.T, atol=1e-9)
    # the factor d s_BM / d s (the matrix A) that the paper's eq. 24 drops is kept
    assert R > 0


class _Bumps:
    """A smooth image-frame data term: D_i(s_i) = w_i exp(-|s_i - c_i|^2 / (2 r^2))."""

    def __init__(self, v, rng):
        self.c = rng.normal(size=(v, 2)) * 12 + 80
        self.w = rng.uniform(0.5, 1.5, v)
        self.r = 6.0

    def value(self, p):
        v = len(self.w)
        s = p[: 2 * v].reshape(2, v).T
        d2 = ((s - self.c) ** 2).sum(1)
        return -(self.w * np.exp(-d2 / (2 * self.r**2))).sum()

    def responses(self, p):
        """What the detectors would report: value and cost derivatives in the base mesh."""
        v = len(self.w)
        s = p[: 2 * v].reshape(2, v).T
        a, b = p[2 * v], p[2 * v + 1]
        A = np.array([[a, -b], [b, a]])
        Ai = np.linalg.inv(A)
        d = s - self.c
        e = self.w * np.exp(-(d**2).sum(1) / (2 * self.r**2))
        grad_img = d / self.r**2 * e[:, None]  # gradient of -D_i in the image frame
        hess_img = (np.eye(2) / self.r**2 - np.einsum("vi,vj->vij", d, d) / self.r**4) * e[:, None, None]
        g_bm = grad_img @ Ai  # A^-T g
        h_bm = np.einsum("ji,vjk,kl->vil", Ai, hess_img, Ai)
        return np.column_stack([e, g_bm, h_bm[:, 0, 0], h_bm[:, 1, 1], h_bm[:, 0, 1]])


def test_full_cost_gradient_and_hessian_match_finite_differences():
    rng = np.random.default_rng(7)
    p, s0vec, sm, prec = _problem(v=6, seed=7)
    data = _Bumps(6, rng)
    lam = 0.3

    def cost(q):
        return data.value(q) + lam * regulariser(q, s0vec, sm, prec)[0]

    def grad(q):
        return assemble(q, data.responses(q), s0vec, sm, prec, lam)[1]

    f, g, H = assemble(p, data.responses(p), s0vec, sm, prec, lam)
    assert f == pytest.approx(cost(p))
    np.testing.assert_allclose(g, _fd_grad(cost, p), rtol=1e-5, atol=1e-6)
    # Exact except for the data term's dependence on the pose through the patch shape,
    # which GSM neglects (as the paper does): the bumps here have none, so it is exact.
    np.testing.assert_allclose(H, _fd_hess(grad, p), rtol=1e-5, atol=1e-5)


def test_local_step_variables_give_the_same_system_and_step():
    """assemble_local is assemble in du = J_s ds: T^-T g, T^-T H T^-1, the same Newton step."""
    rng = np.random.default_rng(8)
    p, s0vec, sm, prec = _problem(v=6, seed=8)
    v, lam = 6, 0.3
    resp = rng.normal(size=(v, 6))
    resp[:, 3:5] += 4.0
    theta_frame = np.array([0.63, 0.27, -4.0, 6.0])  # the kept frame's pose, not p's
    a, b = p[2 * v], p[2 * v + 1]
    Tinv = np.eye(2 * v + 4)
    Tinv[:2 * v, :2 * v] = np.kron(np.linalg.inv([[a, -b], [b, a]]), np.eye(v))
    for floor in (0.0, 0.5):
        f, g, H = assemble(p, resp, s0vec, sm, prec, lam, floor, theta_frame)
        fl, gl, Hl = assemble_local(p, resp, s0vec, sm, prec, lam, floor, theta_frame)
        assert fl == pytest.approx(f, rel=1e-12)
        np.testing.assert_allclose(gl, Tinv.T @ g, atol=1e-12 * np.abs(g).max())
        np.testing.assert_allclose(Hl, Tinv.T @ H @ Tinv, atol=1e-12 * np.abs(H).max())
        free = np.r_[1:6, 7:16]  # landmark 0 pinned
        Hpd = H + 50 * np.eye(len(p))  # positive definite: an undamped step
        step = image_step(newton_step(Tinv.T @ g, Tinv.T @ Hpd @ Tinv, free), p, v)
        np.testing.assert_allclose(step, newton_step(g, Hpd, free), atol=1e-12)


def test_cholesky_solves_and_reports_indefinite_matrices():
    from napari_gsm.methods.gsm import cho_solve, cholesky

    rng = np.random.default_rng(9)
    M = rng.normal(size=(30, 30))
    H = M @ M.T + np.eye(30)
    b = rng.normal(size=30)
    x = np.linalg.solve(H, b)
    for overwrite in (False, True):
        Hc = H.copy()
        np.testing.assert_allclose(cho_solve(cholesky(Hc, overwrite=overwrite), b), x,
                                   rtol=1e-10)
        if not overwrite:
            assert np.array_equal(Hc, H)
    H[3, 3] = -1.0  # no longer positive definite
    assert cholesky(H) is None and cholesky(H.copy(), overwrite=True) is None


def test_newton_step_leaves_pinned_coordinates_alone():
    p, s0vec, sm, prec = _problem()
    _, g, H = regulariser(p, s0vec, sm, prec)
    H = H + 1e3 * np.eye(len(p))  # positive definite, so no damping is added
    free = np.r_[1:5, 6:10, 10:14]  # landmark 0 pinned (x_0 and y_0)
    step = newton_step(g, H, free)
    assert step[0] == 0 and step[5] == 0
    # On a quadratic-in-s problem the free-variable Newton step solves the reduced system.
    np.testing.assert_allclose(H[np.ix_(free, free)] @ step[free], -g[free], atol=1e-8)


@pytest.fixture(scope="module")
def synth_model():
    return train(make_set(40, seed=1), "gsm",
                 params=TrainParams(features="grey", ref_size=20.0, sigma=2.0))


def test_newton_converges_to_known_shape(synth_model):
    rng = np.random.default_rng(11)
    errs0, errs = [], []
    for k in range(6):
        truth = random_shape(rng, deform=0.3)
        img = render(truth, seed=5000 + k)
        start = truth + np.array([4.0, -3.0]) + rng.normal(0, 1.0, truth.shape)
        res = synth_model.fit(img, "points", points=start)
        errs0.append(np.linalg.norm(start - truth, axis=1).mean())
        errs.append(np.linalg.norm(res.points - truth, axis=1).mean())
        assert res.costs[-1] < res.costs[0]
    assert np.mean(errs) < 1.0 < 4.0 < np.mean(errs0)


def test_pinned_points_stay_exactly_and_help_the_rest(synth_model):
    rng = np.random.default_rng(12)
    truth = random_shape(rng, deform=0.3)
    img = render(truth, seed=6000)
    start = synth_model.start(img, "box", box=(*(truth.min(0) + 9), *(truth.max(0) + 9)))[0]
    pinned = np.zeros(len(truth), bool)
    pinned[[0, 2, 6]] = True
    start[pinned] = truth[pinned] + 0.123  # a person's (slightly off) placement
    res = synth_model.fit(img, "points", points=start, pinned=pinned)
    np.testing.assert_array_equal(res.points[pinned], start[pinned])
    free_err = np.linalg.norm(res.points[~pinned] - truth[~pinned], axis=1).mean()
    assert free_err < 1.0


def test_model_round_trip_gives_identical_fits(synth_model, tmp_path):
    path = synth_model.save(tmp_path / "m.npz")
    again = load_model(path)
    img = render(make_set(1, seed=9)[0][1], seed=77)
    a = synth_model.fit(img, "prior")
    b = again.fit(img, "prior")
    np.testing.assert_array_equal(a.points, b.points)
    assert again.landmark_names == synth_model.landmark_names
    assert again.gsm_params == synth_model.gsm_params


def test_incremental_update_improves_a_model_trained_on_few_images():
    data = make_set(24, seed=3)
    params = TrainParams(features="grey", ref_size=20.0, sigma=2.0)
    model = train(data[:2], "gsm", params=params)
    held_out = make_set(6, seed=4)

    def error(m):
        return np.mean([np.linalg.norm(m.fit(img, "points", points=pts + [3, -2]).points - pts,
                                       axis=1).mean() for img, pts in held_out])

    before = error(model)
    n0 = model.detectors.n
    for img, pts in data[2:]:
        model.update(img, pts)
    assert model.detectors.n == n0 + 22 and model.shape.n_shapes == 24
    assert error(model) < 0.7 * before


def test_gsm_params_reach_the_fitter(synth_model):
    img, truth = make_set(1, seed=21)[0]
    res = synth_model.fit(img, "points", points=truth + 3, history=True)
    assert res.n_iter <= synth_model.gsm_params.max_iter
    m2 = train(make_set(10, seed=1), "gsm", params=TrainParams(features="grey", ref_size=20.0),
               gsm_params=GSMParams(max_iter=2))
    assert m2.fit(img, "points", points=truth + 3).n_iter <= 2


def test_frame_tolerances_decide_how_often_the_frame_is_rewarped(synth_model):
    from dataclasses import replace

    img, truth = make_set(1, seed=22)[0]
    start = truth + np.array([5.0, -4.0])
    gp = synth_model.gsm_params
    exact = synth_model.fit(img, "points", points=start,
                            params=replace(gp, frame_tol=0.0, coarse_frame_tol=0.0))
    assert exact.extra["n_warps"] == exact.n_iter  # Algorithm 1 as written
    loose = synth_model.fit(img, "points", points=start,
                            params=replace(gp, frame_tol=0.0, coarse_frame_tol=0.5))
    assert loose.extra["n_warps"] < loose.n_iter
    for res in (exact, loose):
        assert np.linalg.norm(res.points - truth, axis=1).mean() < 1.0


def test_data_block_floor_clamps_every_eigenvalue():
    from napari_gsm.methods.gsm import data_terms

    rng = np.random.default_rng(3)
    resp = rng.normal(size=(200, 6))
    resp[:4, 5] = 0.0
    resp[:4, 4] = resp[:4, 3]  # repeated eigenvalues
    theta = np.array([0.7, 0.2, 3.0, 4.0])
    A = np.array([[0.7, -0.2], [0.2, 0.7]])
    _, _, h = data_terms(resp, theta, floor=0.3)
    H = np.stack([[h[:, 0], h[:, 2]], [h[:, 2], h[:, 1]]]).transpose(2, 0, 1)
    Hb = np.einsum("ij,vjk,lk->vil", np.linalg.inv(A).T, H, np.linalg.inv(A).T)
    raw = np.stack([[resp[:, 3], resp[:, 5]], [resp[:, 5], resp[:, 4]]]).transpose(2, 0, 1)
    w_raw, U_raw = np.linalg.eigh(raw)
    w, U = np.linalg.eigh(Hb)
    np.testing.assert_allclose(w, np.sort(np.maximum(np.abs(w_raw), 0.3), axis=1), atol=1e-12)
    # same eigenvectors: the clamped block commutes with the raw one
    np.testing.assert_allclose(np.einsum("vij,vjk->vik", Hb, raw),
                               np.einsum("vij,vjk->vik", raw, Hb), atol=1e-12)


def test_limit_step_caps_landmark_and_pose_moves():
    # A square of side 20 px (corners 10 * sqrt(2) px from the centroid), pose scale 2.
    x = np.array([0.0, 20.0, 20.0, 0.0]) + 50
    y = np.array([0.0, 0.0, 20.0, 20.0]) + 30
    p = np.concatenate([x, y, [2.0, 0.0, 0.0, 0.0]])
    v = 4
    # Landmark moves in the frame are |A| times image moves: 2 * 3 = 6 px, 2 * 8 = 16 px.
    step = np.zeros(12)
    step[0], step[v + 1] = 3.0, 8.0
    capped, rms = limit_step(step, p, v, 10.0)
    np.testing.assert_allclose(capped, step * 10.0 / 16.0)
    np.testing.assert_allclose(rms, np.sqrt((6.0**2 + 16.0**2) / 4) * 10.0 / 16.0)
    # A pose change alone: |dA| = 1 moves the corners by 10 sqrt(2) px in the frame; it is
    # capped like a landmark move, but it is not a landmark move for convergence.
    step = np.zeros(12)
    step[2 * v], step[2 * v + 1] = 0.6, 0.8
    capped, rms = limit_step(step, p, v, 10.0)
    np.testing.assert_allclose(capped, step * 10.0 / (10 * np.sqrt(2)))
    assert rms == 0.0
    small = step * 0.01  # within the trust region: unchanged
    assert np.array_equal(limit_step(small, p, v, 10.0)[0], small)
