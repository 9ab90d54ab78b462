"""Is a fit plausible? The checks a person should see before trusting one.

A fit is flagged when its calibrated confidence says it failed (most landmarks likely off;
:mod:`napari_gsm.confidence`, models that have a calibration), when it did not converge,
when landmarks ended outside the image, when the shape is far from every training shape,
when the image at the fitted landmarks matches the detectors much worse than the training
images do, or when the face detector found several faces (the one chosen may be the wrong
one).

The image match is the mean detector response ``<I, h>`` at the landmarks at the finest
target width: the correlation the filters were trained to make 1 at the true position and 0
away from it. Its typical value depends on the landmark set and the features, so it is
compared with the same score on training images at their true landmarks, measured when the
model was trained (:func:`score_reference`, ``Model.summary['score_ref']``).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.stats import chi2

from .confidence import assess
from .features import FrameCache, Pyramid
from .geometry import apply_similarity, pose_from_shape, similarity_fit
from .io import to_grey
from .shape import to_vec

__all__ = ["response_score", "score_reference", "shape_distance", "shape_distance_limit",
           "fit_warnings", "MIN_SCORE_RATIO", "SHAPE_TAIL"]

#: A fit whose image match is below this share of the training images' is flagged.
MIN_SCORE_RATIO = 0.6
#: A shape further from the mean than all but this share of the model's own shapes is flagged.
SHAPE_TAIL = 0.001
#: Training images used for the score reference (enough for a stable median).
_REFERENCE_IMAGES = 100


def response_score(model, grey, points):
    """Mean detector response at ``points`` ``(v, 2)`` of a grey image, finest width."""
    pyramid = grey if isinstance(grey, Pyramid) else Pyramid(to_grey(grey))
    shape = model.shape
    frames = FrameCache(pyramid, shape.sm, shape.frame_shape, model.features)
    theta = pose_from_shape(points, shape.s0, shape.sm)
    finest = len(model.detectors.sigmas) - 1
    resp = frames.responses(points, theta, model.detectors.reader(finest, model.features))
    return float(np.mean(resp[:, 0]))


def score_reference(model, samples, rng=None, runner=None):
    """Median :func:`response_score` of training samples at their true landmarks.

    ``samples`` (:class:`~napari_gsm.training.Sample`) have an image and ``points``; at
    most 100 (a random subset) are measured, where ``runner`` runs it (default: here).
    """
    from .training import InProcess, gather_rows, pick, response_scores

    runner = runner or InProcess()
    rng = np.random.default_rng(0) if rng is None else rng
    idx = np.arange(len(samples))
    if len(idx) > _REFERENCE_IMAGES:
        idx = np.sort(rng.choice(idx, _REFERENCE_IMAGES, replace=False))
    handle = runner.put(model)
    parts = runner.parts(pick(samples, idx))
    return float(np.median(gather_rows(
        runner, runner.map(response_scores, [(p, handle) for p in parts]))))


def shape_distance(model, points):
    """Squared Mahalanobis distance of a shape to the model's mean shape.

    The similarity (position, size, rotation) is removed first. A shape drawn from the
    model's Gaussian has a chi-square distance with ``2v - 4`` degrees of freedom.
    """
    mean = model.shape.mean
    A, t = similarity_fit(points, mean)
    d = to_vec(apply_similarity(points, A, t)) - to_vec(mean)
    return float(d @ model.precision @ d)


@functools.lru_cache(maxsize=16)  # chi2.ppf costs 0.2 ms, more than the rest of a check
def shape_distance_limit(v):
    """The distance beyond which a shape of ``v`` landmarks is flagged: the 99.9th
    percentile of the chi-square distribution with ``2v - 4`` degrees of freedom."""
    return float(chi2.ppf(1.0 - SHAPE_TAIL, max(2 * v - 4, 1)))


def fit_warnings(model, result, image):
    """What looks wrong with a fit, as short sentences for a person (empty: nothing).

    Parameters
    ----------
    model : Model
    result : FitResult
        Its ``confidence`` is used when present, else computed when the model has a
        calibration.
    image : array
        The image that was fitted (any type :func:`~napari_gsm.io.to_grey` takes).

    Returns
    -------
    list of str
    """
    warnings = []
    points = np.asarray(result.points, float)
    grey = to_grey(image)
    conf = result.confidence
    if conf is None:
        conf = assess(model, Pyramid(grey), points)
    if conf is not None and conf.failed:
        n_off = int(round(conf.p_off.sum()))
        warnings.append(f"it looks failed: about {n_off} of {len(points)} landmarks are "
                        f"likely off by more than {100 * conf.off_fraction:g} % of the "
                        "shape's bounding-box diagonal")
    if not result.converged:
        warnings.append(f"it did not converge in {result.n_iter} iterations")
    h, w = grey.shape
    outside = ((points[:, 0] < -0.5) | (points[:, 0] > w - 0.5) | (points[:, 1] < -0.5)
               | (points[:, 1] > h - 0.5))
    if outside.any():
        warnings.append(f"{int(outside.sum())} landmark(s) are outside the image")
    if shape_distance(model, points) > shape_distance_limit(len(points)):
        warnings.append("the shape is unlike the training shapes")
    ref = model.summary.get("score_ref")
    if ref:
        ratio = response_score(model, grey, points) / ref
        if ratio < MIN_SCORE_RATIO:
            warnings.append(f"the image matches the model poorly there ({100 * ratio:.0f} % "
                            "of the training images' match)")
    n_faces = result.extra.get("n_faces", 0)
    if n_faces > 1:
        warnings.append(f"the face detector found {n_faces} faces; it may have used the "
                        "wrong one")
    return warnings
