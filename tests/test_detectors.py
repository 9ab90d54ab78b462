"""Derivative correlation filters: targets, the derivative property, incremental training."""

import numpy as np
import pytest

from napari_gsm.detectors import Detectors, derivative_targets
from napari_gsm.features import FeatureSpec, feature_map, preprocess_patches, sample_patches
from synthetic import render


def test_targets_are_the_derivatives_of_the_gaussian():
    # On a fine grid, the derivative targets must equal finite differences of -g with
    # respect to the displacement u (the landmark offset), in pixel units (stride 2).
    L, stride, sigma, h = 41, 2.0, 6.0, 1e-4
    t = derivative_targets(L, stride, sigma)
    k = np.fft.fftfreq(L, 1.0 / L) * stride
    uy, ux = np.meshgrid(k, k, indexing="ij")

    def cost(dx, dy):
        return -np.exp(-((ux + dx) ** 2 + (uy + dy) ** 2) / (2 * sigma**2))

    np.testing.assert_allclose(t[0], -cost(0, 0))
    np.testing.assert_allclose(t[1], (cost(h, 0) - cost(-h, 0)) / (2 * h), atol=1e-7)
    np.testing.assert_allclose(t[2], (cost(0, h) - cost(0, -h)) / (2 * h), atol=1e-7)
    H = 1e-3
    np.testing.assert_allclose(t[3], (cost(H, 0) - 2 * cost(0, 0) + cost(-H, 0)) / H**2,
                               atol=1e-5)
    np.testing.assert_allclose(t[4], (cost(0, H) - 2 * cost(0, 0) + cost(0, -H)) / H**2,
                               atol=1e-5)
    mixed = (cost(H, H) - cost(H, -H) - cost(-H, H) + cost(-H, -H)) / (4 * H**2)
    np.testing.assert_allclose(t[5], mixed, atol=1e-5)


@pytest.mark.parametrize("L,stride,sigma", [(15, 3.0, 9.0), (31, 1.0, 8.0)])
def test_cut_off_targets_are_the_derivatives_of_the_sampled_gaussian(L, stride, sigma):
    # A wide target (HoG's and grey's coarse widths) does not fit in the patch: the filter
    # trained on g answers the trigonometric interpolant of g sampled on the circular grid,
    # so the derivative targets must be that interpolant's derivatives (one cost, with its
    # gradient and Hessian), checked by finite differences of the interpolant summed
    # explicitly. The analytic derivatives sampled are off by up to 36 % (HoG) here.
    t = derivative_targets(L, stride, sigma)
    k = np.fft.fftfreq(L, 1.0 / L) * stride
    uy, ux = np.meshgrid(k, k, indexing="ij")
    G = np.fft.fft2(t[0])[..., None, None]
    w = 2 * np.pi * np.fft.fftfreq(L, stride)
    wy, wx = np.meshgrid(w, w, indexing="ij")
    wy, wx = wy[..., None, None], wx[..., None, None]

    def cost(dx, dy):  # -g's interpolant at every grid point shifted by (dx, dy)
        return -(G * np.exp(1j * (wx * (ux + dx) + wy * (uy + dy)))).sum((0, 1)).real / L**2

    np.testing.assert_allclose(t[0], -cost(0, 0), atol=1e-12)
    scale = np.abs(t[1:]).max()
    h = 1e-3 * stride
    np.testing.assert_allclose(t[1], (cost(h, 0) - cost(-h, 0)) / (2 * h), atol=1e-5 * scale)
    np.testing.assert_allclose(t[2], (cost(0, h) - cost(0, -h)) / (2 * h), atol=1e-5 * scale)
    H = 1e-2 * stride
    c0 = cost(0, 0)
    np.testing.assert_allclose(t[3], (cost(H, 0) - 2 * c0 + cost(-H, 0)) / H**2,
                               atol=1e-3 * scale)
    np.testing.assert_allclose(t[4], (cost(0, H) - 2 * c0 + cost(0, -H)) / H**2,
                               atol=1e-3 * scale)
    mixed = (cost(H, H) - cost(H, -H) - cost(-H, H) + cost(-H, -H)) / (4 * H**2)
    np.testing.assert_allclose(t[5], mixed, atol=1e-3 * scale)


def _train(spec, sigma, n=40, seed=0):
    rng = np.random.default_rng(seed)
    det = Detectors.empty(1, spec.patch, spec.channels, sigmas=[sigma], stride=spec.stride)
    for k in range(n):
        c = np.array([64.0, 64.0]) + rng.uniform(-8, 8, 2)
        img = render(c[None], seed=seed * 100 + k)
        det.accumulate(preprocess_patches(sample_patches(feature_map(img, spec), c[None], spec),
                                          spec))
    return det.solve()


@pytest.mark.parametrize("window,tol", [(False, 0.12), (True, 0.35)])
def test_derivative_filters_match_finite_differences_of_the_response(window, tol):
    spec = FeatureSpec(kind="grey", patch=25, window=window)
    det = _train(spec, sigma=3.0)
    truth = np.array([60.3, 66.6])
    fmap = feature_map(render(truth[None], seed=999), spec)

    def resp(p):
        return det.responses(preprocess_patches(sample_patches(fmap, np.array([p]), spec),
                                                spec))[0]

    h = 0.5  # cv2.remap works on a 1/32 pixel grid: steps well above that
    for off in [(1.3, -0.7), (-2.1, 1.1), (0.6, 2.2)]:
        p = truth + off
        r = resp(p)
        # <I, h_x> is the derivative of the cost -<I, h> with respect to the position.
        fd = np.array([-(resp(p + [h, 0])[0] - resp(p - [h, 0])[0]) / (2 * h),
                       -(resp(p + [0, h])[0] - resp(p - [0, h])[0]) / (2 * h)])
        assert np.linalg.norm(r[1:3] - fd) <= tol * np.linalg.norm(fd)
        # and the gradient points away from the truth (the cost grows away from it)
        assert np.dot(r[1:3], off) > 0
        hx = np.array([(resp(p + [h, 0])[1:3] - resp(p - [h, 0])[1:3]) / (2 * h),
                       (resp(p + [0, h])[1:3] - resp(p - [0, h])[1:3]) / (2 * h)])
        Hd = np.array([[r[3], r[5]], [r[5], r[4]]])
        assert np.linalg.norm(Hd - hx) <= 2 * tol * np.linalg.norm(hx) + 1e-3


@pytest.mark.parametrize("kind,sigma,patch", [("grey", 4.0, 25), ("hog", 9.0, 15)])
def test_newton_step_from_the_2x2_block_moves_towards_the_truth(kind, sigma, patch):
    spec = FeatureSpec(kind=kind, patch=patch)
    det = _train(spec, sigma=sigma)
    truth = np.array([62.0, 65.0])
    ratios = []
    for seed in (555, 556):
        fmap = feature_map(render(truth[None], seed=seed), spec)
        for ang in np.linspace(0, 2 * np.pi, 6, endpoint=False):
            off = 0.45 * sigma * np.array([np.cos(ang), np.sin(ang)])
            p = truth + off
            r = det.responses(preprocess_patches(sample_patches(fmap, p[None], spec), spec))[0]
            H = np.array([[r[3], r[5]], [r[5], r[4]]])
            assert np.linalg.eigvalsh(H).min() > 0  # near the peak the block is PD
            new = p - np.linalg.solve(H, r[1:3])
            ratios.append(np.linalg.norm(new - truth) / np.linalg.norm(off))
    assert max(ratios) < 1.0
    assert np.mean(ratios) < 0.6


def test_detector_peaks_at_the_landmark():
    spec = FeatureSpec(kind="grey", patch=25)
    det = _train(spec, sigma=3.0)
    truth = np.array([64.0, 64.0])
    fmap = feature_map(render(truth[None], seed=321), spec)
    offs = [(dx, dy) for dx in range(-4, 5, 2) for dy in range(-4, 5, 2)]
    vals = [det.responses(preprocess_patches(sample_patches(fmap, (truth + o)[None], spec),
                                             spec))[0, 0] for o in offs]
    assert offs[int(np.argmax(vals))] == (0, 0)


def test_incremental_statistics_equal_batch_training():
    spec = FeatureSpec(kind="hog", patch=11)
    rng = np.random.default_rng(5)
    patches = rng.normal(size=(6, 3, 11, 11, spec.channels)).astype(np.float32)
    batch = Detectors.empty(3, 11, spec.channels, sigmas=[4.0, 2.0], stride=3)
    batch.accumulate(patches)
    batch.solve()
    inc = Detectors.empty(3, 11, spec.channels, sigmas=[4.0, 2.0], stride=3)
    for p in patches:
        inc.accumulate(p)
        inc.solve()
    np.testing.assert_allclose(inc.S, batch.S, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(inc.filters, batch.filters, rtol=1e-5, atol=1e-6)
    assert batch.filters.shape == (2, 3, 6, 11, 11, spec.channels)
    again = Detectors.from_arrays(batch.to_arrays())
    np.testing.assert_array_equal(again.filters, batch.filters)
