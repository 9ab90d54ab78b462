"""GSM 2D fitting (paper section 3, Algorithm 1): Newton steps on ``p = (s, theta)``.

``p`` is ``(x_1..x_v, y_1..y_v, a, b, tx, ty)`` with ``s`` in the image frame. The cost is

    f(p) = - sum_i D_i(s_i) + lam * R(s, theta),
    R    = (S(s, theta) - s0)^T Sigma^-1 (S(s, theta) - s0)

The data gradient and Hessian come from five dot products per landmark (see
:mod:`napari_gsm.detectors`); they are measured in the reference frame, where a shift
``delta`` of ``s_i`` in the image moves the patch by ``A delta``, so in the image frame the
gradient is ``A^T g`` and the Hessian ``A^T H A``. As the paper does, the data term's
dependence on ``theta`` through the patch's rotation and scale is neglected.

Safety, where the paper takes a plain Newton step: each landmark's 2x2 data Hessian block is
made positive definite by replacing its eigenvalues ``l`` with ``max(|l|, floor)``
(``floor = curvature_floor / sigma^2``, the curvature of a unit Gaussian peak scaled), the
full Hessian gets Levenberg damping if it is still not positive definite, and a step that
would move a landmark more than ``max_step`` reference pixels is shortened.

The fitter takes each step in the landmarks' reference-frame move ``du = A ds``
(:func:`assemble_local`, mapped back by :func:`image_step`): the same Newton step, cheaper
to build, and its damping then weighs landmark moves in reference pixels whatever the
image's scale. :func:`assemble` is the image-frame reference the tests differentiate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dpotrf, dpotrs

from ..features import FrameCache
from ..geometry import pose_from_shape
from ..result import FitResult
from ..shape import from_vec, to_vec

__all__ = ["GSMParams", "regulariser", "data_terms", "assemble", "assemble_local", "image_step",
           "base_mesh", "cholesky", "cho_solve", "newton_step", "limit_step",
           "start_schedule", "prior_scale", "frame_tolerance", "level_data", "finest_score",
           "fit_gsm"]


@dataclass(frozen=True)
class GSMParams:
    """Fitting hyper-parameters of GSM (see module docstring).

    ``lam`` is the shape prior weight; ``None`` lets training choose it
    (:func:`napari_gsm.model.choose_lam`). ``refit_scale`` multiplies that weight at the
    finest target width of a fit with pinned landmarks (:func:`prior_scale`); ``None`` lets
    training choose it (:func:`napari_gsm.refit.choose_refit_scale`). ``frame_tol`` and
    ``coarse_frame_tol`` are how far the pose may move (relative change of ``A``) before the
    frame is re-warped, at the finest target width and at the wider ones
    (:func:`frame_tolerance`).
    """

    lam: float | None = None
    refit_scale: float | None = None
    max_iter: int = 30
    tol: float = 0.15
    coarse_tol: float = 0.5
    curvature_floor: float = 0.5
    max_step: float = 10.0
    frame_tol: float = 0.02
    coarse_frame_tol: float = 0.2


def _right_sim(M, a, b):
    """``M @ [[aI, -bI], [bI, aI]]`` for a ``(n, 2v)`` matrix, in O(n v)."""
    v = M.shape[1] // 2
    M1, M2 = M[:, :v], M[:, v:]
    return np.hstack([a * M1 + b * M2, -b * M1 + a * M2])


def _left_sim_t(M, a, b):
    """``[[aI, -bI], [bI, aI]]^T @ M`` for a ``(2v, n)`` matrix."""
    v = M.shape[0] // 2
    M1, M2 = M[:v], M[v:]
    return np.vstack([a * M1 + b * M2, -b * M1 + a * M2])


def regulariser(p, s0vec, sm, prec):
    """``R``, its gradient ``(2v+4,)`` and Hessian ``(2v+4, 2v+4)`` (paper eqs. 15, 22-38).

    Parameters
    ----------
    p : (2v+4,) array
    s0vec : (2v,) array
        Mean shape ``(x..., y...)`` in the reference frame.
    sm : (2,) array
        Centre of mass of the mean shape.
    prec : (2v, 2v) array
        ``Sigma_s^-1``.
    """
    n2 = len(s0vec)
    v = n2 // 2
    a, b = p[n2], p[n2 + 1]
    s_bm, Jt = base_mesh(p, sm, v)  # Jt: the columns of J = d s_BM / d theta
    r = s_bm - s0vec
    Pr = prec @ r
    R = r @ Pr
    q = 2 * Pr
    grad = np.empty(n2 + 4)
    grad[:n2] = _left_sim_t(q[:, None], a, b)[:, 0]  # J_s^T q (the factor eq. 24 drops)
    grad[n2:] = Jt.T @ q
    H = np.empty((n2 + 4, n2 + 4))
    PJs = _right_sim(prec, a, b)  # Sigma^-1 J_s
    H[:n2, :n2] = 2 * _left_sim_t(PJs, a, b)
    PJt = prec @ Jt
    H[:n2, n2:] = 2 * _left_sim_t(PJt, a, b)
    H[n2:, :n2] = H[:n2, n2:].T
    H[n2:, n2:] = 2 * Jt.T @ PJt
    # Second-order terms of s_BM (eqs. 36-37): only the (s, a) and (s, b) blocks.
    qx, qy = q[:v], q[v:]
    H[:v, n2] += qx
    H[v:n2, n2] += qy
    H[:v, n2 + 1] += qy
    H[v:n2, n2 + 1] -= qx
    H[n2, :v] += qx
    H[n2, v:n2] += qy
    H[n2 + 1, :v] += qy
    H[n2 + 1, v:n2] -= qx
    return R, grad, H


def data_terms(resp, theta, *, floor=0.0):
    """Image-frame data gradient and 2x2 Hessian blocks from reference-frame responses.

    Parameters
    ----------
    resp : (v, 6) array
        ``<I, h>, <I, h_x>, <I, h_y>, <I, h_xx>, <I, h_yy>, <I, h_xy>`` per landmark.
    theta : sequence
        A pose; only its ``a, b`` (the matrix ``A``) are used.
    floor : float
        Eigenvalue floor for each reference-frame block (0 keeps the raw Hessian).

    Returns
    -------
    value : float
        ``-sum_i <I_i, h_i>`` (the data part of the cost).
    grad : (v, 2) array
        ``A^T g`` per landmark.
    hess : (v, 3) array
        ``A^T H A`` per landmark, as its ``xx, yy, xy`` entries (the blocks are symmetric).
    """
    hxx, hyy, hxy = resp[:, 3], resp[:, 4], resp[:, 5]
    if floor > 0:
        # Eigenvalues l of each symmetric 2x2 block replaced by max(|l|, floor), in closed
        # form: the clamped block is c0 I + c1 H, the polynomial matching both eigenvalues.
        m = (hxx + hyy) / 2
        d = np.hypot((hxx - hyy) / 2, hxy)
        k1, k2 = np.maximum(np.abs(m + d), floor), np.maximum(np.abs(m - d), floor)
        split = d > 1e-12 * (np.abs(m) + floor)
        c1 = np.where(split, (k1 - k2) / np.where(split, 2 * d, 1.0), 0.0)
        c0 = np.where(split, k1 - c1 * (m + d), np.maximum(np.abs(m), floor))
        hxx, hyy, hxy = c0 + c1 * hxx, c0 + c1 * hyy, c1 * hxy
    # A = [[a, -b], [b, a]]: A^T g and A^T H A entry by entry (this runs every iteration).
    a, b = theta[0], theta[1]
    aa, bb, ab = a * a, b * b, a * b
    gx, gy = resp[:, 1], resp[:, 2]
    grad = np.empty((len(resp), 2))
    grad[:, 0] = a * gx + b * gy
    grad[:, 1] = a * gy - b * gx
    hess = np.empty((len(resp), 3))
    hess[:, 0] = aa * hxx + bb * hyy + (2 * ab) * hxy
    hess[:, 1] = bb * hxx + aa * hyy - (2 * ab) * hxy
    hess[:, 2] = ab * (hyy - hxx) + (aa - bb) * hxy
    return -resp[:, 0].sum(), grad, hess


def _add_data_blocks(H, hess, v):
    """Add the per-landmark blocks of :func:`data_terms` (``(v, 3)``) into ``H``'s (s, s) part."""
    i = np.arange(v)
    H[i, i] += hess[:, 0]
    H[v + i, v + i] += hess[:, 1]
    H[i, v + i] += hess[:, 2]
    H[v + i, i] += hess[:, 2]


def assemble(p, resp, s0vec, sm, prec, lam, floor=0.0, theta_data=None):
    """Cost, gradient ``(2v+4,)`` and Hessian of ``f = -sum D_i + lam R``.

    ``theta_data`` is the pose of the frame the responses were measured in (default: the
    pose in ``p``; see :class:`~napari_gsm.features.FrameCache`).
    """
    n2 = len(s0vec)
    v = n2 // 2
    D, gd, Hd = data_terms(resp, p[n2:] if theta_data is None else theta_data, floor=floor)
    R, gr, Hr = regulariser(p, s0vec, sm, prec)
    grad = lam * gr
    grad[:v] += gd[:, 0]
    grad[v:n2] += gd[:, 1]
    H = lam * Hr
    _add_data_blocks(H, Hd, v)
    return D + lam * R, grad, H


def base_mesh(p, sm, v):
    """``S(s, theta)`` as a ``(2v,)`` vector and its Jacobian in ``theta``, ``(2v, 4)``.

    ``p`` starts with ``(s, theta)`` (eqs. 2 and 26-27).
    """
    a, b, tx, ty = p[2 * v:2 * v + 4]
    dx = p[:v] - sm[0]
    dy = p[v:2 * v] - sm[1]
    s_bm = np.empty(2 * v)
    s_bm[:v] = a * dx - b * dy + (tx + sm[0])
    s_bm[v:] = b * dx + a * dy + (ty + sm[1])
    Jt = np.zeros((2 * v, 4))
    Jt[:v, 0], Jt[v:, 0] = dx, dy
    Jt[:v, 1], Jt[v:, 1] = -dy, dx
    Jt[:v, 2] = 1
    Jt[v:, 3] = 1
    return s_bm, Jt


def assemble_local(p, resp, s0vec, sm, prec, lam, floor=0.0, theta_data=None, out=None,
                   base=None):
    """:func:`assemble` in the step variables ``(du, dtheta)``, ``du = J_s ds``.

    ``J_s = A (x) I_v`` (``A`` of the pose in ``p``) maps an image-frame move of the
    landmarks into the reference frame. A Newton step does not depend on the variables it
    is taken in, and in these the prior's ``(s, s)`` block is the constant
    ``2 lam Sigma^-1`` (in ``s`` it is ``2 lam J_s^T Sigma^-1 J_s``, rebuilt at every
    iteration) and the data blocks are the detectors' reference-frame blocks. Map the step
    back with :func:`image_step`. Returns ``(cost, grad, H)`` as :func:`assemble` does, with
    ``grad = J^-T grad_s`` and ``H = J^-T H_s J^-1`` (``J = J_s`` on ``s``, ``I`` on
    ``theta``); the tests check this against :func:`assemble`. ``out``: an array whose top
    left ``(2v+4, 2v+4)`` block receives ``H`` (GSM 2D+3D's larger system), else a new one;
    ``base``: :func:`base_mesh` of ``p``, when the caller has it.
    """
    n2 = len(s0vec)
    v = n2 // 2
    a, b = p[n2], p[n2 + 1]
    rho = a * a + b * b
    s_bm, Jt = base_mesh(p, sm, v) if base is None else base
    r = s_bm - s0vec
    q = 2 * (prec @ r)  # the prior's gradient in the reference frame
    qx, qy = q[:v], q[v:]
    # Data blocks were measured in the kept frame (pose A_f): in du they are seen through
    # B = A_f A^-1, a similarity (complex division of a_f + i b_f by a + i b).
    af, bf = (a, b) if theta_data is None else theta_data[:2]
    D, gd, Hd = data_terms(resp, ((af * a + bf * b) / rho, (bf * a - af * b) / rho),
                           floor=floor)
    grad = np.empty(n2 + 4)
    grad[:n2] = lam * q
    grad[:v] += gd[:, 0]
    grad[v:n2] += gd[:, 1]
    grad[n2:] = lam * (Jt.T @ q)
    H = np.empty((n2 + 4, n2 + 4)) if out is None else out[:n2 + 4, :n2 + 4]
    np.multiply(prec, 2 * lam, out=H[:n2, :n2])
    _add_data_blocks(H, Hd, v)
    Hst = (2 * lam) * (prec @ Jt)
    H[n2:, n2:] = Jt.T @ Hst
    # The second-order terms of s_BM in (s, a) and (s, b) (eqs. 36-37), times J^-T = J / rho.
    c = lam / rho
    Hst[:v, 0] += c * (a * qx - b * qy)
    Hst[v:, 0] += c * (b * qx + a * qy)
    Hst[:v, 1] += c * (a * qy + b * qx)
    Hst[v:, 1] += c * (b * qy - a * qx)
    H[:n2, n2:] = Hst
    H[n2:, :n2] = Hst.T
    return D + lam * (r @ q) / 2, grad, H


def image_step(step, p, v):
    """A step in :func:`assemble_local`'s variables, with ``ds = J_s^-1 du`` (in place)."""
    a, b = p[2 * v], p[2 * v + 1]
    rho = a * a + b * b
    ux, uy = step[:v].copy(), step[v:2 * v]
    step[:v] = (a * ux + b * uy) / rho
    step[v:2 * v] = (a * uy - b * ux) / rho
    return step


def cholesky(H, overwrite=False):
    """Upper Cholesky factor of a symmetric ``H``, or ``None`` if it is not positive definite.

    LAPACK's ``potrf`` called directly: at these sizes (``2v + 4`` around 140) scipy's
    ``cho_factor`` spends a third again of the factorisation on checks, at every iteration.
    ``overwrite``: factor a C-ordered ``H`` in place (saves a copy; ``H`` is lost). Solve
    with :func:`cho_solve`.
    """
    if overwrite and H.flags.c_contiguous:  # H.T is the same matrix, in Fortran order
        c, info = dpotrf(H.T, lower=0, clean=0, overwrite_a=1)
    else:
        c, info = dpotrf(H, lower=0, clean=0)
    if info < 0:  # pragma: no cover - a wrong argument, not a wrong matrix
        raise ValueError(f"potrf: illegal argument {-info}")
    return c if info == 0 else None


def cho_solve(c, b):
    """``H^-1 b`` from ``c = cholesky(H)``."""
    return dpotrs(c, b, lower=0)[0]


def newton_step(grad, H, free):
    """``-H^-1 grad`` on the free parameters (others stay 0), damped until ``H`` is PD."""
    all_free = len(free) == len(grad)
    g = grad if all_free else grad[free]
    Hf = H if all_free else H[np.ix_(free, free)]
    mu = scale = 0.0
    for _ in range(30):
        c = cholesky(Hf if mu == 0 else Hf + mu * np.eye(len(g)))
        if c is not None:
            break
        scale = scale or np.abs(np.diag(Hf)).mean() + 1e-12
        mu = max(2 * mu, 1e-6 * scale)
    else:  # pragma: no cover - only for NaN input
        raise FloatingPointError("Hessian could not be made positive definite")
    if all_free:
        return -cho_solve(c, g)
    step = np.zeros_like(grad)
    step[free] = -cho_solve(c, g)
    return step


def limit_step(step, p, v, max_step):
    """Cap the longest move of ``step`` in the reference frame; return it and the RMS move.

    Moves are in reference-frame pixels (``|A|`` times image pixels). A trust region: the
    longest move is capped at ``max_step``, counting both every landmark's own move and the
    move a change of the pose's scale and rotation ``dA`` makes at the shape's edge
    (``|dA|`` times the largest landmark distance from the centroid), since the next frame
    is warped with that pose; an uncapped pose can swing back and forth, re-warping the
    frame at ever wronger scales. The root-mean-square landmark move decides convergence,
    since the largest single move stays noisy at the optimum (detector responses are not
    perfectly smooth in the landmark position).
    """
    scale = np.hypot(p[2 * v], p[2 * v + 1])
    moves = scale * np.hypot(step[:v], step[v:2 * v])
    x, y = p[:v], p[v:2 * v]
    reach = np.sqrt((x - x.mean()) ** 2 + (y - y.mean()) ** 2).max()
    longest = max(moves.max(), np.hypot(step[2 * v], step[2 * v + 1]) * reach)
    if longest > max_step:
        step = step * (max_step / longest)
        moves = moves * (max_step / longest)
    return step, float(np.sqrt((moves**2).mean()))


def start_schedule(model, pyramid, warm_start=False):
    """Where a coarse-to-fine fit starts: ``(frames, level, n_levels)``.

    ``frames`` is the image's :class:`~napari_gsm.features.FrameCache`; ``level`` the
    coarsest target width, or the finest for a ``warm_start`` (the start is close, e.g. the
    previous video frame's fit). A re-fit around pinned points runs the whole schedule: from
    a shape that is already close the wide widths converge in a few iterations, and a fit
    with pins from a rough start (the widget's Fit with pinned points) needs them.
    """
    n_levels = len(model.detectors.sigmas)
    frames = FrameCache(pyramid, model.shape.sm, model.shape.frame_shape, model.features)
    return frames, (n_levels - 1 if warm_start else 0), n_levels


#: ``refit_scale`` of a model trained on too few images to choose it (fewer than 12), and of
#: model files older than it; cross-validated on training images (``benchmarks/refit_cv.py``).
REFIT_SCALE_DEFAULT = 0.5


def prior_scale(params, pinned, level, n_levels):
    """Factor on the shape prior's weights at target width ``level`` (of ``n_levels``).

    ``refit_scale`` at the finest width of a fit with pinned landmarks, else 1. Pins reach
    the other landmarks only through the prior: with the pose free, a pinned landmark put
    where it belongs moves the pose that places the mean shape, and every other landmark
    follows in proportion to the prior's weight. ``lam`` is chosen for fits from rough
    starts, which need the prior's pull to converge; at the finest width, where the shape
    is already close, the detectors are the better guide, and that weight dragged
    well-placed landmarks along with a corrected one (wings, X-rays). So the finest width
    of a fit with pins uses its own share of the weight, chosen on held-out training
    images by simulating such re-fits (:func:`napari_gsm.refit.choose_refit_scale`). The
    wide widths keep ``lam``: they give capture range, which a fit with pins from a rough
    start still needs.
    """
    if level < n_levels - 1 or pinned is None or not np.any(pinned):
        return 1.0
    return REFIT_SCALE_DEFAULT if params.refit_scale is None else params.refit_scale


def frame_tolerance(level, n_levels, params):
    """How far the pose may move before the frame is re-warped, at target width ``level``.

    The wide targets are there for capture range, not precision, and tolerate a frame a
    little off in scale and rotation; the finest one gets a fresh frame. Measured on
    held-out training faces (800 train / 300 held out, GSM HoG): a coarse tolerance of 0.2
    instead of 0.02 cuts the warps per fit from 7.2 to 5.1 (11.2 -> 10.4 ms) at the same
    error (mean NME 0.1031 vs 0.1030, failures 20.3 vs 19.0 %); a finest tolerance of 0.05
    instead of 0.02 saves another 1 ms but raises the median NME (0.0453 vs 0.0445).
    """
    return params.frame_tol if level == n_levels - 1 else params.coarse_frame_tol


def level_data(frames, det, spec, params, level, shape, theta):
    """Detector responses ``(v, 6)`` at ``shape`` for target width ``level``, and the
    eigenvalue floor of that width's data blocks.

    ``frames`` (a :class:`~napari_gsm.features.FrameCache`) is re-warped when the pose
    ``theta`` has moved past the width's :func:`frame_tolerance`.
    """
    frames.tol = frame_tolerance(level, len(det.sigmas), params)
    resp = frames.responses(shape, theta, det.reader(level, spec))
    return resp, params.curvature_floor / det.sigmas[level] ** 2


def finest_score(resp, level, n_levels, score):
    """The mean ``<I, h>`` of responses ``(v, 6)`` read at the finest width, else ``score``."""
    return float(resp[:, 0].mean()) if level == n_levels - 1 else score


def next_level(level, n_levels, move, params):
    """Coarse-to-fine schedule: ``(level, converged)`` after an iteration that moved ``move``.

    Each target width iterates until its tolerance (``coarse_tol``, then ``tol`` for the
    finest); the iteration limit counts all of them.
    """
    if level < n_levels - 1:
        return (level + 1 if move <= params.coarse_tol else level), False
    return level, move <= params.tol


def fit_gsm(model, pyramid, start, *, pinned=None, params=None, history=True,
            warm_start=False):
    """Fit GSM 2D from a start shape.

    Parameters
    ----------
    model : napari_gsm.model.Model
    pyramid : napari_gsm.features.Pyramid
    start : (v, 2) array
        Starting shape in image coordinates.
    pinned : (v,) bool array, optional
        Landmarks held exactly at their ``start`` position; the prior's weight at the
        finest target width is then scaled by :func:`prior_scale`.
    params : GSMParams, optional
    warm_start : bool
        The start is already close (the previous video frame's fit): fit at the finest
        target width only, without the coarse widths' capture range.

    Returns
    -------
    FitResult
        ``extra['score']``: the mean detector response ``<I, h>`` at the finest width in
        the last iteration (the image match :func:`~napari_gsm.quality.response_score`
        measures, at the shape before the last step), or None if the fit never reached it.
    """
    params = params or model.gsm_params
    shape_model, det, spec = model.shape, model.detectors, model.features
    t0 = time.perf_counter()
    s0vec = to_vec(shape_model.mean)
    sm = shape_model.sm
    prec = model.precision
    v = shape_model.n_landmarks
    pinned = np.zeros(v, bool) if pinned is None else np.asarray(pinned, bool)
    free = np.concatenate([~pinned, ~pinned, np.ones(4, bool)]).nonzero()[0]
    s = np.asarray(start, float)
    p = np.concatenate([to_vec(s), pose_from_shape(s, shape_model.s0, sm)])
    hist, costs = [s.copy()], []
    converged = False
    n_iter = 0
    frames, level, n_levels = start_schedule(model, pyramid, warm_start)
    score = None
    for n_iter in range(1, params.max_iter + 1):
        resp, floor = level_data(frames, det, spec, params, level, from_vec(p[: 2 * v]),
                                 p[2 * v:])
        score = finest_score(resp, level, n_levels, score)
        lam = params.lam * prior_scale(params, pinned, level, n_levels)
        f, grad, H = assemble_local(p, resp, s0vec, sm, prec, lam, floor, frames.theta)
        costs.append(f)
        step = image_step(newton_step(grad, H, free), p, v)
        step, move = limit_step(step, p, v, params.max_step)
        p = p + step
        if history:
            hist.append(from_vec(p[: 2 * v]))
        level, converged = next_level(level, n_levels, move, params)
        if converged:
            break
    points = from_vec(p[: 2 * v])
    points[pinned] = np.asarray(start, float)[pinned]
    return FitResult(points=points, n_iter=n_iter, converged=converged,
                     fit_ms=(time.perf_counter() - t0) * 1e3, history=hist if history else [],
                     costs=costs, pose=p[2 * v:].copy(), method="gsm",
                     extra={"n_warps": frames.n_warps, "score": score})
