"""Fitting a video: each frame starts from the previous frame's fit.

A Newton fitter is at its best on video: consecutive frames differ by a small motion, so the
previous frame's landmarks are a start closer than any detector's, and the fit needs only
the finest target width (``Model.fit(..., warm_start=True)``). When a frame's fit degrades
-- the face turned away, the image changed, the fit slid off -- the frame is fitted again
from the model's fresh start (the face detector for a face model, else the given box or the
learned prior placement) and the better of the two fits is kept, so a lost track recovers
as soon as the detector finds the object again.

What "degrades" means is measured, not guessed (``benchmarks/tracking.py --choose``, on
held-out training faces); see :func:`degraded`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .io import to_grey
from .model import check_image_size
from .quality import response_score, shape_distance, shape_distance_limit

__all__ = ["track", "TrackResult", "degraded", "score_ratio", "TRACK_SCORE_RATIO"]

#: A tracked frame whose image match is below this share of the training images' is
#: re-fitted from a fresh start (see :func:`degraded`).
TRACK_SCORE_RATIO = 0.6


@dataclass
class TrackResult:
    """The outcome of :func:`track`.

    Attributes
    ----------
    fits : list of FitResult
        The fit kept for every frame. ``init`` is ``'track'`` for a fit started from the
        previous frame's, else the fresh start used ('detect', 'box', 'prior', 'points').
    restarted : list of int
        Frames (0-based) whose tracked fit degraded and that were fitted again from a fresh
        start (the better fit was kept: see each fit's ``init``).
    reasons : dict of int to list of str
        For every restarted frame, why its tracked fit was judged degraded. A restarted
        frame whose kept fit still has ``init == 'track'`` (no fresh fit was better) is
        doubtful.
    n_detections : int
        How many times the face detector ran (0 for a model without one).
    frame_ms : list of float
        Wall time spent on every frame, everything included: reading and converting the
        frame, the fit, the checks and any fresh start with its face detection.
    """

    fits: list = field(default_factory=list)
    restarted: list = field(default_factory=list)
    reasons: dict = field(default_factory=dict)
    n_detections: int = 0
    frame_ms: list = field(default_factory=list)

    @property
    def points(self):
        """The landmarks of every frame, ``(T, v, 2)`` ``(x, y)`` 0-based."""
        return np.stack([f.points for f in self.fits])


def score_ratio(model, result, grey):
    """The fit's image match relative to the training images' (1: as good), or None.

    The mean detector response at the fitted landmarks (the fit's own ``extra['score']``
    when the method records it, else :func:`~napari_gsm.quality.response_score`) over
    ``model.summary['score_ref']``; None for a model trained without that reference.
    """
    ref = model.summary.get("score_ref")
    if not ref:
        return None
    score = result.extra.get("score")
    if score is None:
        score = response_score(model, grey, result.points)
    return score / ref


def degraded(model, result, grey):
    """Why a tracked fit cannot be trusted, as short sentences (empty: it can).

    A fit has degraded when it did not converge, when the image at the fitted landmarks
    matches the detectors below :data:`TRACK_SCORE_RATIO` of the training images' match,
    when the shape is further from the mean shape than all but 0.1 % of the model's own
    shapes, or when the shape's centre has left the image.

    Parameters
    ----------
    model : Model
    result : FitResult
    grey : (H, W) array
        The frame that was fitted, grey.

    Returns
    -------
    list of str
    """
    reasons = []
    if not result.converged:
        reasons.append(f"it did not converge in {result.n_iter} iterations")
    ratio = score_ratio(model, result, grey)
    if ratio is not None and ratio < TRACK_SCORE_RATIO:
        reasons.append(f"the image matches the model poorly ({100 * ratio:.0f} % of the "
                       "training images' match)")
    points = np.asarray(result.points, float)
    if shape_distance(model, points) > shape_distance_limit(len(points)):
        reasons.append("the shape is unlike the training shapes")
    h, w = grey.shape
    cx, cy = points.mean(0)
    if not (0 <= cx <= w - 1 and 0 <= cy <= h - 1):
        reasons.append("the shape has left the image")
    return reasons


def _frame_grey(frames, t):
    """Frame ``t`` as a grey image, or a ValueError that names the frame."""
    try:
        grey = to_grey(frames[t])
        check_image_size(grey)
    except ValueError as exc:
        raise ValueError(f"frame {t}: {exc}") from None
    return grey


def _check_stack(frames):
    n = len(frames)
    if n == 0:
        raise ValueError("there are no frames to track")
    shape = getattr(frames, "shape", None)
    if shape is None:
        return n
    # A frame narrower than MIN_IMAGE_SIDE cannot be fitted, so a last axis of 3 or 4 is
    # colour, not width.
    if len(shape) == 2 or (len(shape) == 3 and shape[2] in (3, 4) and min(shape[:2]) > 4):
        what = "colour image" if len(shape) == 3 else "image"
        raise ValueError(f"the frames look like one {what} ({shape[1]}x{shape[0]} pixels), "
                         "not a stack of images; fit one image with Model.fit, or pass a "
                         "list of images")
    if len(shape) not in (3, 4):
        raise ValueError(f"a stack of frames must have 3 (frames, height, width) or 4 "
                         f"(frames, height, width, colour) dimensions, not {len(shape)}")
    return n


def track(model, frames, *, init="auto", box=None, points=None, progress=None):
    """Fit every frame of a video, each starting from the previous frame's fit.

    The first frame starts as :meth:`Model.fit` would from ``init``, ``box`` and
    ``points``. Every later frame starts from the previous frame's fitted landmarks and is
    fitted as a warm start (finest target width only). When that fit has
    :func:`degraded`, the frame is fitted again from the model's fresh start -- ``box``
    when given, else the face detector for a face model (the learned prior placement when
    it finds no face), else the prior placement; an explicit ``init`` of 'detect' or
    'prior' is kept -- and the better of the two fits is kept: the one that passes the
    checks, else the one whose image matches the model better.

    Parameters
    ----------
    model : Model
    frames : (T, H, W) or (T, H, W, C) array, or sequence of images
        Grey or colour frames, any dtype :func:`~napari_gsm.io.to_grey` takes; read one
        at a time by ``frames[t]`` (a lazy stack, e.g. a Dask array, stays lazy).
    init, box, points
        The first frame's start, see :meth:`Model.start`; ``box`` ``(x0, y0, x1, y1)``
        also starts every re-fitted frame.
    progress : callable ``(done, total)``, optional
        Called after every frame; raising from it stops tracking (the exception
        propagates to the caller).

    Returns
    -------
    TrackResult

    Raises
    ------
    ValueError
        For an empty stack, a single colour image, or a frame that is not an image or is
        too small (the message names the frame).
    """
    n = _check_stack(frames)
    fresh = "box" if box is not None else ("auto" if init in ("auto", "points") else init)
    out = TrackResult()
    prev = None
    for t in range(n):
        t0 = time.perf_counter()
        grey = _frame_grey(frames, t)
        if prev is None:
            res = model.fit(grey, init, box=box, points=points, history=False)
            out.n_detections += "n_faces" in res.extra
        else:
            res = model.fit(grey, "points", points=prev, history=False, warm_start=True)
            res.init = "track"
            reasons = degraded(model, res, grey)
            if reasons:
                out.restarted.append(t)
                out.reasons[t] = reasons
                res = _refit(model, grey, fresh, box, res, out)
        prev = res.points
        out.fits.append(res)
        out.frame_ms.append((time.perf_counter() - t0) * 1e3)
        if progress is not None:
            progress(t + 1, n)
    return out


def _refit(model, grey, init, box, tracked, out):
    """The better of ``tracked`` and a fit of ``grey`` from the fresh start ``init``."""
    try:
        res = model.fit(grey, init, box=box, history=False)
    except LookupError:  # init='detect' and the detector found no face
        out.n_detections += 1
        return tracked
    out.n_detections += "n_faces" in res.extra
    if not degraded(model, res, grey):
        return res
    ratio_new = score_ratio(model, res, grey)
    ratio_old = score_ratio(model, tracked, grey)
    if ratio_new is None or ratio_old is None or ratio_new <= ratio_old:
        return tracked
    return res
