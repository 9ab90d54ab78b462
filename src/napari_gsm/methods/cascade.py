"""GSM-CR: cascade regression on GSM features (paper section 5, Algorithms 3-4).

Every level ``k`` reads the ``6v`` GSM responses (eq. 50) at the current shape and adds a
learned linear update::

    x_{k+1} = x_k + R_k^T [f(x_k), 1]

``f`` is ``[<I,h>..., <I,h_x>..., <I,h_y>..., <I,h_xx>..., <I,h_yy>..., <I,h_xy>...]``
(six blocks of ``v``), measured in the pose-normalised frame: the pose ``theta`` of the
current shape is found by Procrustes against ``s0``, the image is warped into the reference
frame, and ``x`` is the shape there. The update is learned and applied in that frame too
(``2v`` numbers, mapped back to the image by ``S^-1``), so it does not depend on where the
object is or how large it is. A level keeps the previous level's warped frame and feature
map while the pose has moved by less than :data:`FRAME_TOL` (the later levels move it
little), as training shares frames between nearby poses.

Training (Algorithm 4) simulates ``M`` starts per image drawn like the real starts, runs the
cascade on them level by level and solves one ridge regression per level. Only the ``6v + 1``
features of every virtual sample are kept, never patches. The ridge weight of each level, and
whether its matrix is full or *local* (each landmark's update read from its own six
features only, :func:`_ridge_local`), are chosen on held-out training images: with a few
dozen images the local structure generalises better (wings, X-rays), with thousands the
full one is as good or better (faces). The expensive part -- a warp and a feature map per
virtual sample -- is shared between the perturbations of one image whose pose differs only
by translation, or by less than a quantisation step of rotation and scale (see
:func:`_image_features`), and the responses are computed without materialising patches
(:mod:`napari_gsm.responses`). When the detectors have several target widths the first
``coarse_levels`` levels read the widest (longer reach), the rest the finest. Training is
in :mod:`.cascade_train`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..features import FrameCache
from ..geometry import pose_from_shape
from ..result import FitResult
from ..shape import from_vec
from .gsm import fit_gsm

__all__ = ["CascadeState", "fit_cascade", "load_cascade", "FRAME_TOL"]

#: How far the pose may move (relative change of its ``A``) before a level re-warps the
#: image and recomputes its feature map (:class:`~napari_gsm.features.FrameCache`).
#: Training shares frames within rotation and scale steps (``share``), so the regression
#: never saw exact frames either. Held-out tuning faces (800 train / 300 held out, one
#: cascade, ``benchmarks/tune_faces.py cascade --fit-variants``): 0, 0.02, 0.05, 0.1 gave
#: mean NME 7.262, 7.265, 7.279, 7.315 % with 5, 3.54, 2.65, 2.05 warps per fit; the
#: paired change from 0 is +0.003 +- 0.002 points at 0.02 (no measurable loss), +0.016
#: +- 0.005 at 0.05.
FRAME_TOL = 0.02


@dataclass
class CascadeState:
    """A trained cascade.

    Attributes
    ----------
    R : (K, 6v + 1, 2v) float64 array
        Regression matrices; the last feature row is the bias. The update of level ``k`` is
        ``[f, 1] @ R[k]``, a reference-frame shape vector ``(x..., y...)``.
    info : dict
        Training record (JSON-able): ``levels``, ``perturbations`` (M), ``lam_rel`` and
        ``lam`` (ridge weight per level, relative to the row count and absolute, on
        standardised features), ``local`` (per level: the local structure was chosen),
        ``heldout_grid`` (held-out error of every weight tried, full then local),
        ``init`` (start kind simulated), ``heldout_error`` / ``train_error`` (mean point
        error in reference-frame pixels before the first level and after every level),
        ``coarse_levels``, ``spread``, ``noise``, ``share``, ``seed``, ``train_seconds``.
    fold_states : list of CascadeState or None
        Right after training with ``folds``: the cascade solved without each fold's images,
        for the confidence calibration's cross-validated fits (:mod:`napari_gsm.crossfit`,
        which drops them). Never saved.
    """

    R: np.ndarray
    info: dict
    fold_states: list = field(default=None, repr=False, compare=False)

    @property
    def levels(self):
        return self.R.shape[0]

    def to_arrays(self):
        return {"cascade_R": np.asarray(self.R, np.float64)}

    def params(self):
        return dict(self.info)


def load_cascade(arrays, params):
    """Rebuild a :class:`CascadeState` from :meth:`CascadeState.to_arrays` / ``params``."""
    R = np.asarray(arrays["cascade_R"], np.float64)
    info = dict(params or {})
    if R.ndim != 3 or (R.shape[1] - 1) != 3 * R.shape[2]:
        raise ValueError(f"cascade matrices have shape {R.shape}, expected (K, 6v+1, 2v)")
    return CascadeState(R=R, info=info)


# -- poses, vectorised over samples -----------------------------------------------------

def _poses(shapes, s0, sm):
    """Poses ``theta (n, 4)`` mapping each image-frame shape ``(n, v, 2)`` onto ``s0``.

    The same least-squares similarity as :func:`~napari_gsm.geometry.pose_from_shape`,
    for many shapes at once (shapes must be complete).
    """
    mu_s = shapes.mean(1)
    mu_d = s0.mean(0)
    s = shapes - mu_s[:, None]
    d = s0 - mu_d
    den = (s**2).sum((1, 2))
    a = (s * d).sum((1, 2)) / den
    b = (s[..., 0] * d[:, 1] - s[..., 1] * d[:, 0]).sum(1) / den
    # t = mu_d - A mu_s; pose translation = t - sm + A sm = mu_d - sm - A (mu_s - sm)
    cx, cy = mu_s[:, 0] - sm[0], mu_s[:, 1] - sm[1]
    tx = mu_d[0] - sm[0] - (a * cx - b * cy)
    ty = mu_d[1] - sm[1] - (b * cx + a * cy)
    return np.column_stack([a, b, tx, ty])


def _to_frame(shapes, thetas, sm):
    """``S(shape, theta)`` for ``(n, v, 2)`` shapes and ``(n, 4)`` poses."""
    a, b = thetas[:, 0, None], thetas[:, 1, None]
    dx, dy = shapes[..., 0] - sm[0], shapes[..., 1] - sm[1]
    return np.stack([a * dx - b * dy + thetas[:, 2, None] + sm[0],
                     b * dx + a * dy + thetas[:, 3, None] + sm[1]], -1)


def _from_frame(xs, thetas, sm):
    """Inverse of :func:`_to_frame`."""
    a, b = thetas[:, 0, None], thetas[:, 1, None]
    den = a * a + b * b
    ux = xs[..., 0] - thetas[:, 2, None] - sm[0]
    uy = xs[..., 1] - thetas[:, 3, None] - sm[1]
    return np.stack([(a * ux + b * uy) / den + sm[0], (-b * ux + a * uy) / den + sm[1]], -1)


def _warp(pyramid, theta, sm, frame_shape):
    return pyramid.warp(theta, sm, frame_shape)


def _sigma_index(model, level, coarse_levels):
    """Which detector width cascade ``level`` reads: the coarsest for the first levels."""
    filters = model.detectors.filters
    if filters.ndim != 6 or level >= coarse_levels:
        return -1
    return 0


# -- fitting (Algorithm 3) --------------------------------------------------------------

def fit_cascade(model, pyramid, start, *, pinned=None, history=True, warm_start=False,
                frame_tol=FRAME_TOL):
    """Fit GSM-CR from a start shape.

    Parameters
    ----------
    model : napari_gsm.model.Model
        With a trained :class:`CascadeState` in ``model.state``.
    pyramid : napari_gsm.features.Pyramid
    start : (v, 2) array
        Starting shape in image coordinates.
    pinned : (v,) bool array, optional
        Landmarks held exactly at their ``start`` position. The cascade cannot hold a
        landmark (every level moves all of them, learned from unconstrained starts spread
        like the prior's or the face detector's, not from a fit a person has corrected), so
        a fit with pins is GSM's Newton fit (:func:`~napari_gsm.methods.gsm.fit_gsm`) on
        the same detectors and shape prior, which holds them.
    history : bool
        Keep the shape after every level.
    warm_start : bool
        The start is already close (the previous video frame's fit): skip the first
        ``coarse_levels`` levels, which read the widest target and were trained for the
        start's capture range, as GSM skips its coarse widths.
    frame_tol : float
        How far the pose may move (relative change of ``A``) before a level warps the
        image again (:data:`FRAME_TOL`); 0 warps it at every level (Algorithm 3 as written).

    Returns
    -------
    FitResult
        ``n_iter`` is the number of levels run; ``extra['update_px']`` the mean landmark
        move of every level, in reference-frame pixels; ``extra['score']`` the mean
        ``<I, h>`` the last level read (at the finest width); ``extra['n_warps']`` how many
        times the image was warped. With pins, :func:`fit_gsm`'s result.
    """
    state = model.state
    if not isinstance(state, CascadeState):
        raise ValueError("this model has no trained cascade (train it with method='gsm-cr')")
    if pinned is not None and np.any(pinned):
        return fit_gsm(model, pyramid, start, pinned=pinned, history=history)
    t0 = time.perf_counter()
    shape_model, spec = model.shape, model.features
    s0, sm, frame_shape = shape_model.s0, shape_model.sm, shape_model.frame_shape
    coarse = int(state.info.get("coarse_levels", 0))
    readers = [model.detectors.reader(_sigma_index(model, k, coarse), model.features)
               for k in range(state.levels)]
    v = shape_model.n_landmarks
    s = np.asarray(start, float).copy()
    hist = [s.copy()] if history else []
    moves = []
    f = np.empty(6 * v + 1)
    f[-1] = 1.0
    first = min(coarse, state.levels - 1) if warm_start else 0
    frames = FrameCache(pyramid, sm, frame_shape, spec, tol=frame_tol)
    for k, R in enumerate(state.R[first:], first):
        theta = pose_from_shape(s, s0, sm)
        # Features from the kept frame, the update in the current pose's frame: as in
        # training, where a shared frame's features train the exact frame's update.
        f[:-1] = frames.features(s, theta, readers[k])
        x = _to_frame(s[None], theta[None], sm)
        dx = f @ R
        moves.append(float(np.hypot(dx[:v], dx[v:]).mean()))
        s = _from_frame(x + from_vec(dx)[None], theta[None], sm)[0]
        if history:
            hist.append(s.copy())
    return FitResult(points=s, n_iter=len(moves), converged=True,
                     fit_ms=(time.perf_counter() - t0) * 1e3, history=hist,
                     pose=pose_from_shape(s, s0, sm), method="gsm-cr",
                     extra={"update_px": moves, "score": float(f[:v].mean()),
                            "n_warps": frames.n_warps})
