"""How much to trust each fitted landmark: features read at the final shape, and the result.

Whatever method placed the landmarks (GSM, GSM 2D+3D, GSM-CR, CLM), the same evidence is
read at the final shape, in the reference frame (so it does not depend on the image's
scale):

- the detectors' answer at the finest target width: the response ``<I, h>``, the curvature
  of the response around the landmark (the eigenvalues of its 2x2 Hessian; a negative one
  means the landmark does not sit on a peak) and how far the detector's own quadratic
  model puts its peak (``|H^-1 g|``), and the same offset at the widest width;
- GSM's Newton system assembled at the final shape
  (:func:`~napari_gsm.methods.gsm.assemble_local`): its Laplace approximation of the
  posterior (the 2x2 blocks of ``H^-1``, the landmark's posterior spread) and the step it
  would still take;
- the shape prior: how far the landmark is from where the other landmarks' positions put
  it (the conditional Gaussian of one landmark given the others, from the precision
  matrix), and how unlike the training shapes the whole shape is;
- the image's mean response and median detector offset (a failed fit is off everywhere).

:class:`~napari_gsm.calibration.Calibration` turns them into a probability that each
landmark is off by more than a threshold and a predicted error in pixels; it is fitted on
cross-validated fits of the training images (:mod:`napari_gsm.crossfit`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dpotri

from .evaluate import normaliser
from .features import FrameCache
from .geometry import pose_from_shape, to_base_mesh
from .methods.gsm import assemble_local, cho_solve, cholesky
from .shape import to_vec

__all__ = ["FEATURES", "OFF_FRACTION", "FAILED_SHARE", "Confidence", "assess",
           "landmark_features", "bbox_diagonal"]

#: Default off threshold: this fraction of the fitted shape's bounding-box diagonal.
OFF_FRACTION = 0.02
#: A fit is flagged as failed when the predicted share of off landmarks is at least this:
#: most of the shape would have to be moved, so a new start (a box) is the quicker fix.
FAILED_SHARE = 0.5

#: Names of the columns of :func:`landmark_features`, in order.
FEATURES = ("response", "curv_min", "curv_max", "log_peak_offset", "log_coarse_offset",
            "log_posterior", "log_newton_step", "log_prior_dev", "image_response",
            "image_log_offset", "image_shape_dist")

#: Added to reference-frame distances before their logarithm (a tenth of a pixel: below
#: the detectors' resolution), so a landmark exactly on its peak stays finite.
_EPS = 0.1


@dataclass
class Confidence:
    """How much to trust one fit.

    Attributes
    ----------
    p_off : (v,) array
        Probability that each landmark is farther than :attr:`threshold` from where it
        belongs (0 for pinned landmarks: a person placed them).
    error_px : (v,) array
        Each landmark's predicted (expected) error, in image pixels.
    nme : float
        The image's predicted normalised mean error (fraction of the normaliser of
        :func:`napari_gsm.evaluate.normaliser` applied to the fitted points).
    failed : bool
        The fit as a whole looks failed: the predicted share of off landmarks is at least
        :data:`FAILED_SHARE`.
    threshold : float
        The off threshold in image pixels (the given fraction of the fitted shape's
        bounding-box diagonal).
    off_fraction : float
        That fraction.
    """

    p_off: np.ndarray
    error_px: np.ndarray
    nme: float
    failed: bool
    threshold: float
    off_fraction: float

    def to_json(self):
        """The ``confidence`` record of ``fit --json``: plain numbers, landmark order."""
        return {"p_off": [round(float(p), 4) for p in self.p_off],
                "error_px": [round(float(e), 3) for e in self.error_px],
                "nme": round(float(self.nme), 6), "failed": bool(self.failed),
                "threshold_px": round(float(self.threshold), 3),
                "off_fraction": float(self.off_fraction)}


def bbox_diagonal(points):
    """Diagonal of the bounding box of the finite rows of ``(v, 2)`` points."""
    return normaliser(points, "diagonal")


def assess(model, pyramid, points, *, off_fraction=None, pinned=None):
    """The calibrated :class:`Confidence` of a fit, or None if the model has no calibration.

    Parameters
    ----------
    model : napari_gsm.model.Model
    pyramid : napari_gsm.features.Pyramid
        The fitted image.
    points : (v, 2) array
        The fitted landmarks.
    off_fraction : float, optional
        Off threshold as a fraction of the fitted shape's bounding-box diagonal (default:
        the calibration's, :data:`OFF_FRACTION`).
    pinned : (v,) bool array, optional
        Landmarks a person placed: probability 0, error 0.
    """
    cal = model.calibration
    if cal is None or not cal.ready:
        return None
    off = cal.off_fraction if off_fraction is None else float(off_fraction)
    if not off > 0:
        raise ValueError(f"the off threshold must be above 0, not {off_fraction!r}")
    points = np.asarray(points, float)
    X, scale = landmark_features(model, pyramid, points, pinned)
    threshold = off * bbox_diagonal(points)
    p_off, error = cal.predict(X, threshold * scale)
    error = error / scale
    if pinned is not None:
        pinned = np.asarray(pinned, bool)
        p_off[pinned] = 0.0
        error[pinned] = 0.0
    return Confidence(p_off=p_off, error_px=error,
                      nme=float(error.mean() / normaliser(points, "auto")),
                      failed=bool(p_off.mean() >= FAILED_SHARE), threshold=float(threshold),
                      off_fraction=off)


def _log(x):
    return np.log(np.asarray(x, float) + _EPS)


def landmark_features(model, pyramid, points, pinned=None):
    """The evidence about every landmark at a final shape, ``(v, len(FEATURES))``.

    Parameters
    ----------
    model : napari_gsm.model.Model
    pyramid : napari_gsm.features.Pyramid
        The fitted image.
    points : (v, 2) array
        The final shape, image pixels.
    pinned : (v,) bool array, optional
        Landmarks held by a person; GSM's system is conditioned on them.

    Returns
    -------
    features : (v, len(FEATURES)) array
        Columns as :data:`FEATURES`; distances in reference-frame pixels.
    scale : float
        ``|A|`` of the shape's pose: reference-frame pixels per image pixel.
    """
    shape, det, spec = model.shape, model.detectors, model.features
    points = np.asarray(points, float)
    v = len(points)
    sm = shape.sm
    theta = pose_from_shape(points, shape.s0, sm)
    scale = float(np.hypot(theta[0], theta[1]))
    frames = FrameCache(pyramid, sm, shape.frame_shape, spec)
    fine = frames.responses(points, theta, det.reader(-1, spec))
    coarse = frames.responses(points, theta, det.reader(0, spec))
    sigma = det.sigmas[-1]
    floor = model.gsm_params.curvature_floor / sigma ** 2
    curv = _eigen2(fine[:, 3], fine[:, 4], fine[:, 5])
    peak = _peak_offset(fine, floor)
    coarse_peak = _peak_offset(coarse, model.gsm_params.curvature_floor / det.sigmas[0] ** 2)
    # GSM's system at the final shape, in the landmarks' reference-frame moves.
    p = np.concatenate([to_vec(points), theta])
    s0vec = to_vec(shape.mean)
    prec = model.precision
    _, grad, H = assemble_local(p, fine, s0vec, sm, prec, model.gsm_params.lam, floor, theta)
    post, step = _laplace(grad, H, v, pinned)
    r = to_vec(to_base_mesh(points, theta, sm)) - s0vec
    dev = _conditional_deviation(prec, r)
    dist = float(r @ prec @ r)
    dof = max(2 * v - 4, 1)
    out = np.empty((v, len(FEATURES)))
    out[:, 0] = fine[:, 0]
    out[:, 1] = curv[:, 1] * sigma ** 2
    out[:, 2] = curv[:, 0] * sigma ** 2
    out[:, 3] = _log(peak)
    out[:, 4] = _log(coarse_peak)
    out[:, 5] = _log(post)
    out[:, 6] = _log(step)
    out[:, 7] = np.log(dev + 0.1)
    out[:, 8] = fine[:, 0].mean()
    out[:, 9] = np.median(out[:, 3])
    out[:, 10] = (dist - dof) / np.sqrt(2 * dof)
    return out, scale


def _eigen2(hxx, hyy, hxy):
    """Eigenvalues ``(v, 2)``, largest first, of symmetric 2x2 blocks."""
    m = (hxx + hyy) / 2
    d = np.hypot((hxx - hyy) / 2, hxy)
    return np.column_stack([m + d, m - d])


def _peak_offset(resp, floor):
    """How far each detector's quadratic model puts its peak, ``|H^-1 g|`` (reference px).

    ``H`` is the response's 2x2 Hessian with its eigenvalues floored as GSM floors them
    (:func:`~napari_gsm.methods.gsm.data_terms`), so the offset stays finite where the
    landmark is not on a peak.
    """
    gx, gy, hxx, hyy, hxy = (resp[:, k] for k in range(1, 6))
    m = (hxx + hyy) / 2
    d = np.hypot((hxx - hyy) / 2, hxy)
    k1, k2 = np.maximum(np.abs(m + d), floor), np.maximum(np.abs(m - d), floor)
    # Eigenvectors of the block: angle phi with tan(2 phi) = 2 hxy / (hxx - hyy).
    phi = 0.5 * np.arctan2(2 * hxy, hxx - hyy)
    c, s = np.cos(phi), np.sin(phi)
    u1 = (c * gx + s * gy) / k1
    u2 = (-s * gx + c * gy) / k2
    return np.hypot(u1, u2)


def _laplace(grad, H, v, pinned):
    """Posterior spread ``sqrt(trace C_i)`` and Newton step length of every landmark.

    ``C`` is the inverse of GSM's Hessian on the free parameters (pinned landmarks held),
    damped as :func:`~napari_gsm.methods.gsm.newton_step` damps it if it is not positive
    definite; both in reference-frame pixels (the system's variables are the landmarks'
    reference-frame moves). Pinned landmarks get 0.
    """
    n = len(grad)
    if pinned is None or not np.any(pinned):
        free, Hf, g = np.arange(n), H, grad
    else:
        free_s = ~np.asarray(pinned, bool)
        free = np.concatenate([free_s, free_s, np.ones(n - 2 * v, bool)]).nonzero()[0]
        Hf, g = H[np.ix_(free, free)], grad[free]
    mu, c = 0.0, None
    for _ in range(30):
        c = cholesky(Hf if mu == 0 else Hf + mu * np.eye(len(free)))
        if c is not None:
            break
        mu = max(2 * mu, 1e-6 * (np.abs(np.diag(Hf)).mean() + 1e-12))
    else:  # pragma: no cover - NaN input only
        raise FloatingPointError("GSM's Hessian could not be made positive definite")
    step = np.zeros(n)
    step[free] = -cho_solve(c, g)
    # The inverse from the factor (its upper triangle is all a diagonal block needs).
    inv, info = dpotri(c, lower=0)
    if info:  # pragma: no cover - c is a valid factor
        raise FloatingPointError("GSM's Hessian could not be inverted")
    var = np.zeros(n)
    var[free] = np.diag(inv)
    i = np.arange(v)
    return np.sqrt(np.maximum(var[i] + var[v + i], 0.0)), np.hypot(step[:v], step[v:2 * v])


def _conditional_deviation(prec, r):
    """Mahalanobis distance of each landmark from its mean given the others, ``(v,)``.

    For a Gaussian with precision ``P`` and residual ``r`` (``(2v,)``, layout
    ``(x..., y...)``), landmark ``i`` given the others has mean ``r_i - P_ii^-1 (P r)_i``
    and covariance ``P_ii^-1``, so its deviation is ``m^T P_ii^-1 m`` with ``m = (P r)_i``.
    """
    v = len(r) // 2
    m = prec @ r
    i = np.arange(v)
    a, b, c = prec[i, i], prec[v + i, v + i], prec[i, v + i]
    mx, my = m[:v], m[v:]
    det = a * b - c * c
    # m^T [[a, c], [c, b]]^-1 m
    return np.sqrt(np.maximum((b * mx * mx - 2 * c * mx * my + a * my * my) / det, 0.0))

