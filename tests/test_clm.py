"""The exhaustive-search CLM baseline (napari_gsm.methods.clm)."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import make_set, render

from napari_gsm.detectors import Detectors
from napari_gsm.features import FeatureSpec, Pyramid, preprocess_patches, sample_patches
from napari_gsm.methods import METHODS
from napari_gsm.methods.clm import (fit_clm, g_filters, mean_shift, response_maps,
                                    search_offsets)


@pytest.mark.parametrize("kind", ["grey", "hog"])
def test_response_map_is_gsm_dot_product_at_every_candidate(kind):
    # Each map value must be exactly <preprocess(patch at candidate), h>, the number GSM
    # computes at that position; both correlation back-ends must agree.
    rng = np.random.default_rng(1)
    spec = FeatureSpec(kind=kind, patch=9 if kind == "hog" else 11, cell=3)
    D = spec.channels
    fmap = rng.random((90, 90, D)).astype(np.float32)
    filt = rng.standard_normal((5, spec.patch, spec.patch, D)).astype(np.float32)
    centres = rng.uniform(35, 55, (5, 2))
    R = 7
    maps = response_maps(fmap, centres, filt, spec, R, backend="fft")
    maps_cv = response_maps(fmap, centres, filt, spec, R, backend="cv2")
    assert maps.shape == (5, R, R)
    np.testing.assert_allclose(maps, maps_cv, atol=2e-5)
    o = search_offsets(R, spec.stride)
    for r, c in [(0, 0), (3, 3), (1, 5), (6, 2)]:
        patches = preprocess_patches(sample_patches(fmap, centres + [o[c], o[r]], spec), spec)
        expect = (patches * filt).sum(axis=(1, 2, 3))
        np.testing.assert_allclose(maps[:, r, c], expect, atol=2e-5)


def _detector(points, sigma=2.0, L=21):
    """Grey filters trained on the synthetic landmark patterns (one image per seed)."""
    spec = FeatureSpec(kind="grey", patch=L)
    det = Detectors.empty(len(points), L, 1, sigmas=(sigma,), stride=1)
    for seed in range(12):
        img = render(points, seed=seed)[..., None]
        det.accumulate(preprocess_patches(sample_patches(img, points, spec), spec))
    return det.solve(), spec


def test_response_peak_and_mean_shift_recover_a_known_shift():
    pts = np.array([[40.0, 44.0], [84.0, 46.0], [62.0, 80.0]])
    det, spec = _detector(pts)
    img = render(pts, seed=99)[..., None]  # unseen background and noise
    shift = np.array([3.0, -4.0])  # the search starts this far from the truth
    R = 15
    maps = response_maps(img, pts + shift, g_filters(det), spec, R)
    o = search_offsets(R, spec.stride)
    k = maps.reshape(len(pts), -1).argmax(1)
    r, c = np.unravel_index(k, (R, R))
    np.testing.assert_array_equal(np.column_stack([o[c], o[r]]), np.tile(-shift, (3, 1)))
    # Mean-shift with a small kernel, run to convergence from the start, lands on the peak.
    target = mean_shift(maps, o, rho=2.0, n_steps=30)
    np.testing.assert_allclose(target, np.tile(-shift, (3, 1)), atol=0.5)
    # A single step (what one fitting iteration takes) already heads towards the truth.
    one = mean_shift(maps, o, rho=9.0)
    cos = one @ -shift / (np.hypot(*one.T) * np.hypot(*shift))
    assert (cos > 0.9).all() and (np.hypot(*one.T) > 0.3 * np.hypot(*shift)).all()


def test_mean_shift_on_a_gaussian_bump_converges_to_its_centre():
    o = search_offsets(21, 1.0)
    yy, xx = np.meshgrid(o, o, indexing="ij")
    centre = np.array([2.3, -1.6])
    maps = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * 1.5**2))[None]
    out = mean_shift(maps - 0.05, o, rho=1.0, n_steps=200)  # negative weights are ignored
    np.testing.assert_allclose(out[0], centre, atol=0.05)
    # All weights zero: the landmark stays where it started.
    np.testing.assert_array_equal(mean_shift(np.zeros((1, 5, 5)), o[:5], 1.0,
                                             start=[[0.5, 0.5]]), [[0.5, 0.5]])


@pytest.fixture(scope="module")
def model():
    from napari_gsm.model import TrainParams, train

    data = make_set(30, seed=3)
    return train(data, method="clm", params=TrainParams(features="grey", ref_size=30,
                                                        patch=21, sigma=2.0))


def test_clm_is_registered():
    assert METHODS["clm"].fit is fit_clm


def test_fit_converges_to_the_truth(model):
    (img, truth), = make_set(1, seed=77)
    err = lambda p: np.hypot(*(p - truth).T).mean()  # noqa: E731
    # The optimum sits near, not on, the truth (the prior pulls towards the mean shape).
    from_truth = fit_clm(model, Pyramid(img), truth, lam=0.1).points
    assert err(from_truth) < 1.0
    rng = np.random.default_rng(0)
    for _ in range(3):
        start = truth + rng.choice([-4.0, 4.0], 2) + rng.normal(0, 1.0, truth.shape)
        assert err(start) > 4.0
        res = fit_clm(model, Pyramid(img), start, lam=0.1)
        assert err(res.points) < 1.0
        assert np.abs(res.points - from_truth).max() < 0.3  # the same optimum
        assert len(res.history) == res.n_iter + 1 and len(res.costs) == res.n_iter
        assert sum(res.extra["bandwidth_iters"]) == res.n_iter <= 30
        # The default prior weight finds its own optimum from anywhere nearby too.
        far = fit_clm(model, Pyramid(img), start).points
        near = fit_clm(model, Pyramid(img), truth).points
        assert np.abs(far - near).max() < 0.3 and err(far) < 2.0
    # Through the model: same method, fit_ms and metadata filled in.
    res = model.fit(img, init="points", points=start, lam=0.1)
    assert res.method == "clm" and res.fit_ms > 0 and res.init == "points"
    assert err(res.points) < 1.0


def test_pinned_points_stay_put(model):
    (img, truth), = make_set(1, seed=78)
    start = truth + [4.0, -3.0]
    pinned = np.zeros(len(truth), bool)
    pinned[[0, 5]] = True
    start[pinned] = truth[pinned]  # placed by a person
    res = fit_clm(model, Pyramid(img), start, pinned=pinned, lam=0.1)
    np.testing.assert_array_equal(res.points[pinned], truth[pinned])
    # The free points move to the truth around the held ones.
    assert np.hypot(*(res.points[~pinned] - truth[~pinned]).T).mean() < 1.0
    # Pinned points that disagree with the image are still held exactly, at every step
    # (they are not optimised at all), and the pose and free points follow them.
    start[pinned] = truth[pinned] + [[2.5, 0.0], [0.0, -2.5]]
    res = fit_clm(model, Pyramid(img), start, pinned=pinned)
    for shape in res.history + [res.points]:
        np.testing.assert_array_equal(shape[pinned], start[pinned])
    assert np.isfinite(res.points).all()


def test_projection_reaches_targets_and_never_raises_the_cost(model):
    from napari_gsm.geometry import pose_from_shape, to_base_mesh
    from napari_gsm.methods.clm import _cost, _project
    from napari_gsm.shape import from_vec, to_vec

    (_, truth), = make_set(1, seed=79)
    sm, s0vec, prec = model.shape.sm, to_vec(model.shape.mean), model.precision
    theta = pose_from_shape(truth, model.shape.s0, sm)
    rng = np.random.default_rng(2)
    mu = to_base_mesh(truth, theta, sm) + rng.normal(0, 2.0, truth.shape)
    p = np.concatenate([to_vec(truth), theta])
    free = np.arange(len(p))
    # Without a prior the landmarks land exactly on the targets.
    p1 = _project(p, theta, mu, 1e-9, s0vec, sm, prec, free, reach=50.0)
    np.testing.assert_allclose(to_base_mesh(from_vec(p1[:-4]), theta, sm), mu, atol=1e-3)
    # With one, the cost goes down and the result is a stationary point.
    for weight in (0.5, 5.0, 50.0):
        p2 = _project(p, theta, mu, weight, s0vec, sm, prec, free, reach=50.0, inner=20)
        f0 = _cost(p, theta, mu, weight, s0vec, sm, prec)[0]
        f2, g2, _ = _cost(p2, theta, mu, weight, s0vec, sm, prec, derivatives=True)
        assert f2 < f0
        assert np.abs(g2).max() < 1e-3 * np.abs(_cost(p, theta, mu, weight, s0vec, sm, prec,
                                                          derivatives=True)[1]).max()
