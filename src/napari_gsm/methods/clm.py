"""Exhaustive-search CLM baseline: response maps + regularised mean-shift (paper section 2.3.3).

This is the comparison the paper makes against GSM: the *same* detectors, shape prior and
start, but the data term is searched exhaustively. Per iteration:

1. warp the image into the reference frame by the current pose and compute the feature map
   (exactly as GSM does);
2. for every landmark, the response map of its ``g`` filter (:func:`g_filters`)
   over an ``R x R`` grid of candidate centres (``R = search`` grid steps) around its
   current position. Each candidate patch is pre-processed exactly as in training and in GSM
   (zero mean per channel, Hann window, unit norm), so a map value is precisely the
   ``<I, h>`` GSM would see with the landmark at that candidate. The map is computed from one
   ``(L+R-1)``-sided feature region per landmark: the numerator ``<(F - m) w, h>`` is a
   correlation of the region with ``w h`` (an FFT that sums the channels, see below), and
   the per-candidate mean and norm come from separable correlations with ``1`` and ``w^2``
   (small batched matrix products);
3. one mean-shift step per landmark on the kernel density estimate over its map (isotropic
   Gaussian kernel of variance ``rho``, weights ``max(response, 0)``), started at the current
   position, gives a target ``mu_i`` in the reference frame (SCMS, Saragih et al. 2011);
4. a few Levenberg-Marquardt-damped Newton steps (Gauss-Newton for the data part, each
   required to lower the cost) on ``p = (s, theta)`` minimising

       sum_i ||S(s_i) - mu_i||^2 + lam rho R(s, theta),

   with the same regulariser ``R`` as GSM (:func:`~napari_gsm.methods.gsm.regulariser`) and
   the same damped Newton solve (:func:`~napari_gsm.methods.gsm.newton_step`). As in GSM,
   the data term is taken at the current pose (the targets are image points seen through the
   current warp), so it moves the landmarks and the prior fixes the pose. The prior's weight
   scales with the kernel variance ``rho``: that is what a Gaussian prior against a KDE of
   bandwidth ``rho`` gives after multiplying the negative log-likelihood by ``2 rho``
   (Saragih et al. 2011, eq. 24), so ``lam = 1`` is the unbiased choice.

The bandwidth ``rho`` follows an annealing schedule, given in grid steps squared (the paper
uses ``15, 10, 5, 2`` with grey-level features, stride 1): each bandwidth is iterated until
the largest landmark move is below ``model.gsm_params.tol`` or its share of ``max_iter`` is
used up. The schedule is in grid units because the candidates sit on the feature grid
(every 3 pixels for HoG): a kernel much narrower than the grid spacing makes mean-shift stick
to the nearest candidate. Default ``10, 5, 2, 1, 0.5``, chosen on 300 held-out training
faces (HoG, trained on 800 others; ``benchmarks/tune_faces.py clm``): mean NME 8.78 %
against 8.79 % for ``20, 10, 5, 2, 1``, 8.83 % for ``10, 5, 2, 1``, 9.03 % for
``15, 10, 5, 2``, 9.04 % for ``5, 2, 1, 0.5``, 9.31 % for ``4, 2, 1, 0.5, 0.25`` and
10.04 % for the paper's values taken in pixels (``1.67, 1.11, 0.56, 0.22`` grid steps).

Why an FFT and not ``cv2.matchTemplate``: measured (best of 30, one thread) on 68 landmarks
and ``R = 15``, the numerator by a batched ``scipy.fft`` correlation that sums the channels in
the frequency domain takes 2.9 ms for HoG (``L = 15``, ``D = 9``) and 0.5 ms for grey
(``L = 31``), against 4.1 ms and 1.3 ms for one multi-channel ``matchTemplate`` (TM_CCORR,
which also sums channels) per landmark. Both are kept (``backend``); the tests check that
they give the same maps, and that the maps equal GSM's ``<I, h>`` at every candidate.
"""

from __future__ import annotations

import time
from dataclasses import replace

import cv2
import numpy as np
import scipy.fft

from ..features import feature_map, hann_window, sample_patches
from ..geometry import pose_from_shape, to_base_mesh
from ..result import FitResult
from ..shape import from_vec, to_vec
from .gsm import newton_step, prior_scale, regulariser

__all__ = ["fit_clm", "g_filters", "response_maps", "mean_shift", "search_offsets", "DEFAULT_BANDWIDTHS"]

DEFAULT_BANDWIDTHS = (10.0, 5.0, 2.0, 1.0, 0.5)


def search_offsets(R, stride):
    """Candidate displacements of an ``R x R`` search grid, ``(R,)`` in pixels (each axis)."""
    return stride * (np.arange(R) - (R - 1) / 2.0)


def _band(L, R, weights):
    """``(R, L+R-1)`` banded matrix ``T[d, d + u] = weights[u]`` (a 1-D valid correlation)."""
    T = np.zeros((R, L + R - 1), np.float32)
    for d in range(R):
        T[d, d:d + L] = weights
    return T


class _MapMaker:
    """Response maps of one model's ``g`` filters, with what can be precomputed per fit.

    Parameters
    ----------
    filters : (v, L, L, D) array
        The ``g`` filters.
    R : int
        Search grid side.
    window : bool
        Whether patches are Hann-windowed (``FeatureSpec.window``).
    """

    def __init__(self, filters, R, window=True):
        v, L, _, D = filters.shape
        self.L, self.R, self.D = L, R, D
        w1 = np.sqrt(np.diag(hann_window(L))) if window else np.ones(L, np.float32)
        w1 = w1.astype(np.float32)  # hann_window(L) = outer(w1, w1)
        w = np.outer(w1, w1)
        self.wh = np.ascontiguousarray(filters * w[None, :, :, None], np.float32)
        self.sum_wh = self.wh.sum(axis=(1, 2))  # (v, D)
        self.sum_w2 = float((w * w).sum())
        self.T1 = _band(L, R, np.ones(L, np.float32) / L)  # mean = T1 F T1^T
        self.Tw2 = _band(L, R, w1 * w1)  # corr with w^2 = Tw2 F Tw2^T
        self._wh_fft = None

    def _numerator_cv2(self, region):
        return np.stack([cv2.matchTemplate(region[i], self.wh[i], cv2.TM_CCORR)
                         for i in range(len(region))])

    def _numerator_fft(self, region):
        v, N = region.shape[:2]
        if self._wh_fft is None:
            pad = np.zeros((v, N, N, self.D), np.float32)
            pad[:, :self.L, :self.L] = self.wh
            self._wh_fft = np.conj(scipy.fft.rfft2(pad, axes=(1, 2)))
        X = scipy.fft.rfft2(region, axes=(1, 2))
        # Circular correlation of size N = L+R-1 equals the valid one on the first R x R.
        out = scipy.fft.irfft2(np.einsum("vyxd,vyxd->vyx", X, self._wh_fft), s=(N, N),
                              axes=(1, 2))
        return out[:, :self.R, :self.R]

    def __call__(self, region, backend="fft"):
        region = np.ascontiguousarray(region, np.float32)
        num = self._numerator_cv2(region) if backend == "cv2" else self._numerator_fft(region)
        # Channel-first for batched (R, N) @ (N, N) @ (N, R) products.
        Fc = np.moveaxis(region, 3, 1)  # (v, D, N, N)
        m = self.T1 @ Fc @ self.T1.T  # (v, D, R, R) per-candidate channel means
        cw = self.Tw2 @ Fc @ self.Tw2.T  # corr(F_c, w^2)
        sq = self.Tw2 @ (region * region).sum(-1) @ self.Tw2.T  # sum_c corr(F_c^2, w^2)
        num = num - np.einsum("vdrs,vd->vrs", m, self.sum_wh)
        norm2 = sq - (2 * m * cw - self.sum_w2 * m * m).sum(1)
        return num / (np.sqrt(np.maximum(norm2, 0)) + 1e-6)


def response_maps(fmap, centres, filters, spec, R, *, backend="fft"):
    """``<I, h>`` of the pre-processed patch at every candidate centre, ``(v, R, R)``.

    Parameters
    ----------
    fmap : (H, W, D) array
        Feature map of the reference frame.
    centres : (v, 2) array
        Current landmark positions in the frame (the map's middle), pixels.
    filters : (v, L, L, D) array
        One filter per landmark (the ``g`` filters).
    spec : FeatureSpec
    R : int
        Search grid side; candidate ``[r, c]`` sits at ``centres + (o[c], o[r])`` with
        ``o = search_offsets(R, spec.stride)``.
    backend : {'cv2', 'fft'}

    Returns
    -------
    (v, R, R) array; rows are y, columns x.
    """
    return _MapMaker(filters, R, spec.window)(_region(fmap, centres, spec, R), backend)


def _region(fmap, centres, spec, R):
    big = replace(spec, patch=spec.patch + R - 1, window=False)
    return sample_patches(fmap, centres, big)


def mean_shift(maps, offsets, rho, *, start=None, n_steps=1):
    """Mean-shift on the kernel density estimate over response maps.

    Parameters
    ----------
    maps : (v, R, R) array
        Response maps (weights are ``max(map, 0)``).
    offsets : (R,) array
        Candidate displacement along each axis (:func:`search_offsets`).
    rho : float
        Kernel variance (pixels squared).
    start : (v, 2) array, optional
        Where the mean-shift starts, as a displacement ``(x, y)``; default 0 (the middle).
    n_steps : int

    Returns
    -------
    (v, 2) array
        Displacement ``(x, y)`` of the mean-shift target from the map's middle. A landmark
        whose weights all vanish under the kernel keeps its start.
    """
    W = np.maximum(maps, 0)
    v = len(W)
    x = np.zeros((v, 2)) if start is None else np.array(start, float)
    o = np.asarray(offsets, float)
    for _ in range(n_steps):
        # The kernel is separable: exp(-(ox - x)^2 / 2 rho) exp(-(oy - y)^2 / 2 rho).
        kx = np.exp(-(o[None, :] - x[:, :1]) ** 2 / (2 * rho))  # (v, R) over columns
        ky = np.exp(-(o[None, :] - x[:, 1:]) ** 2 / (2 * rho))  # (v, R) over rows
        Wk = W * ky[:, :, None] * kx[:, None, :]
        tot = Wk.sum(axis=(1, 2))
        ok = tot > 1e-12
        mx = np.einsum("vrc,c->v", Wk, o)
        my = np.einsum("vrc,r->v", Wk, o)
        x = np.where(ok[:, None], np.column_stack([mx, my]) / np.where(ok, tot, 1)[:, None], x)
    return x


def g_filters(det):
    """The ``g`` filters the response maps use, ``(v, L, L, D)``.

    With several target widths (a coarse-to-fine GSM schedule) the finest is used: the
    exhaustive search needs no capture range from the filter, the annealed kernel
    bandwidth provides it, and the narrowest target gives the sharpest peak.
    """
    f = det.filters
    return f[-1, :, 0] if f.ndim == 6 else f[:, 0]


def _cost(p, theta, mu, weight, s0vec, sm, prec, derivatives=False):
    """``sum_i ||S(s_i, theta) - mu_i||^2 + weight R(s, theta_p)`` with ``theta`` held fixed.

    The data residual uses the pose the targets were measured with (``theta``), so it
    depends on the landmarks only, ``d r_i / d s_i = A``; the prior uses the pose in ``p``.
    """
    v = len(mu)
    a, b = theta[0], theta[1]
    r = to_base_mesh(from_vec(p[:2 * v]), theta, sm) - mu
    Rv, gr, Hr = regulariser(p, s0vec, sm, prec)
    f = float((r * r).sum() + weight * Rv)
    if not derivatives:
        return f, None, None
    g = 2 * (r @ np.array([[a, -b], [b, a]]))  # 2 A^T r_i, rows
    grad = weight * gr
    grad[:v] += g[:, 0]
    grad[v:2 * v] += g[:, 1]
    H = weight * Hr
    i = np.arange(2 * v)
    H[i, i] += 2 * (a * a + b * b)  # A^T A = |A|^2 I
    return f, grad, H


def _project(p, theta, mu, weight, s0vec, sm, prec, free, reach, inner=5):
    """Minimise :func:`_cost` over ``p`` (Levenberg-Marquardt Newton, a few steps).

    This is the regularised projection of the mean-shift targets (SCMS's shape-constrained
    update). The prior is not quadratic in ``(s, theta)`` jointly, so a bare Newton step can
    overshoot the pose and oscillate; every step here must lower the cost, which is cheap
    to check because the targets are fixed (no image access).
    """
    v = len(mu)
    f, grad, H = _cost(p, theta, mu, weight, s0vec, sm, prec, True)
    diag = np.arange(len(p))
    scale = np.abs(np.diag(H)).mean()
    damp = 0.0
    for _ in range(inner):
        for _try in range(10):
            Hd = H.copy()
            Hd[diag, diag] += damp
            step = newton_step(grad, Hd, free)
            move = np.hypot(theta[0], theta[1]) * np.hypot(step[:v], step[v:2 * v]).max()
            if move > reach:  # no target lies further than the search region reaches
                step *= reach / move
            f_new = _cost(p + step, theta, mu, weight, s0vec, sm, prec)[0]
            if f_new <= f:
                break
            damp = max(10 * damp, 1e-4 * scale)
        else:
            return p
        p = p + step
        if f - f_new <= 1e-6 * max(f, 1e-12):
            return p
        f, grad, H = _cost(p, theta, mu, weight, s0vec, sm, prec, True)
        damp *= 0.1
    return p


def fit_clm(model, pyramid, start, *, pinned=None, history=True, search=15,
            bandwidths=DEFAULT_BANDWIDTHS, max_iter=30, lam=1.0, backend="fft",
            warm_start=False):
    """Fit with exhaustive local search (response maps) and regularised mean-shift.

    Parameters
    ----------
    model : napari_gsm.model.Model
    pyramid : napari_gsm.features.Pyramid
    start : (v, 2) array
        Starting shape in image coordinates.
    pinned : (v,) bool array, optional
        Landmarks held exactly at their ``start`` position; ``lam`` is then scaled at the
        narrowest bandwidth as GSM's prior weight is at its finest target width
        (:func:`~napari_gsm.methods.gsm.prior_scale`).
    history : bool
        Keep the shape after every iteration.
    search : int
        Side ``R`` of the search grid, in grid steps (``model.features.stride`` pixels).
    bandwidths : sequence of float
        Annealing schedule of the kernel variance, in grid steps squared
        (``rho = bandwidth * stride**2`` reference-frame pixels squared).
    max_iter : int
        Total iteration budget, shared evenly by the bandwidths.
    lam : float
        Prior weight relative to the bandwidth: the cost is
        ``sum ||S(s_i) - mu_i||^2 + lam rho R``.
    backend : {'cv2', 'fft'}
        How response maps are correlated (same result).
    warm_start : bool
        The start is already close (the previous video frame's fit): only the narrowest
        bandwidth is run, with the whole iteration budget (the wide kernels are there for
        capture range, as GSM's coarse target widths).

    Returns
    -------
    FitResult
        ``extra`` holds ``'bandwidth_iters'``: iterations spent per bandwidth.
    """
    t0 = time.perf_counter()
    shape_model, det, spec = model.shape, model.detectors, model.features
    tol = model.gsm_params.tol
    s0vec = to_vec(shape_model.mean)
    sm = shape_model.sm
    prec = model.precision
    v = shape_model.n_landmarks
    R = int(search)
    if R < 2:
        raise ValueError("search must be at least 2 grid steps")
    maker = _MapMaker(g_filters(det), R, spec.window)
    offsets = search_offsets(R, spec.stride)
    reach = float(np.abs(offsets).max())
    pad = int(np.ceil(reach))
    frame_shape = (shape_model.frame_shape[0] + 2 * pad, shape_model.frame_shape[1] + 2 * pad)
    pinned = np.zeros(v, bool) if pinned is None else np.asarray(pinned, bool)
    free = np.concatenate([~pinned, ~pinned, np.ones(4, bool)]).nonzero()[0]
    start = np.asarray(start, float)
    p = np.concatenate([to_vec(start), pose_from_shape(start, shape_model.s0, sm)])
    bandwidths = [float(b) * spec.stride ** 2 for b in bandwidths]
    if warm_start:
        bandwidths = bandwidths[-1:]
    per_level = max(1, int(max_iter) // len(bandwidths))
    hist, costs, level_iters = [start.copy()], [], [0] * len(bandwidths)
    level, converged, n_iter = 0, False, 0
    while n_iter < max_iter:
        n_iter += 1
        rho = bandwidths[level]
        theta = p[2 * v:]
        shape = from_vec(p[:2 * v])
        # The reference frame only has room for GSM's patches; the search reaches ``reach``
        # pixels further, so warp into a frame that is larger by that much on every side.
        fmap = feature_map(pyramid.warp(theta + [0, 0, pad, pad], sm, frame_shape), spec)
        centres = to_base_mesh(shape, theta, sm)
        maps = maker(_region(fmap, centres + pad, spec, R), backend)
        mu = centres + mean_shift(maps, offsets, rho)
        weight = lam * rho * prior_scale(model.gsm_params, pinned, level, len(bandwidths))
        costs.append(_cost(p, theta, mu, weight, s0vec, sm, prec)[0])
        p_new = _project(p, theta, mu, weight, s0vec, sm, prec, free, reach)
        step = p_new - p
        move = np.hypot(theta[0], theta[1]) * np.hypot(step[:v], step[v:2 * v]).max()
        p = p_new
        level_iters[level] += 1
        if history:
            hist.append(from_vec(p[:2 * v]))
        if move <= tol or level_iters[level] >= per_level:
            if level == len(bandwidths) - 1:
                converged = move <= tol
                break
            level += 1
    points = from_vec(p[:2 * v])
    points[pinned] = start[pinned]
    return FitResult(points=points, n_iter=n_iter, converged=converged,
                     fit_ms=(time.perf_counter() - t0) * 1e3, history=hist if history else [],
                     costs=costs, pose=p[2 * v:].copy(), method="clm",
                     extra={"bandwidth_iters": level_iters})
