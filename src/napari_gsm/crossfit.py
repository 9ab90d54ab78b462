"""Cross-validated fits of the training images, on which the confidence is calibrated.

A calibration fit must be made by a model that never saw its image, from the start a fit
uses when given nothing (the face detector for a face model, else the prior placement),
or the errors it learns from are those of memorised images. Retraining per fold would
multiply the training time, but the detectors' statistics (``S``, ``b``, ``n`` of
:class:`~napari_gsm.detectors.Detectors`) and the shape model's (sums of aligned shape
vectors) are sums over images: the model without a fold is the full model minus the
fold's contribution. The fold's patches are accumulated into empty statistics exactly as
training accumulated them (jittered copies too: each image draws from its own generator,
:func:`~napari_gsm.training.image_rng`) and subtracted, and the filters re-solved: the same
detectors a training on the other images gives. The shape model takes the fold's shapes
out (:meth:`~napari_gsm.shape.ShapeModel.remove`), the prior placement is learned again
from the other images' landmarks and sizes. Each fold is one job (:func:`fold_fits`), run
here or on a Dask worker, which reads the fold's images.

GSM-CR's cascade is downdated too: its training is told the folds
(:func:`calibration_folds`) and solves each level's regression once more without each
fold's rows (``CascadeState.fold_states``; the ridge regression is solved from sums over
the simulated samples, so this costs one more pass over the folds' rows, not a
retraining). Only the later levels' training samples of the other images were moved by
the full matrices, a second-order difference. With the full matrices instead, the
calibration fits were better than a test image's fit (they had been regressed on those
images) and the probabilities too low: 300 training faces, LFPW test, mean ``p_off`` 26 %
against 32 % of landmarks off. GSM 2D+3D's 3D shape model is kept as trained on every
image (a prior on the shape, learned from annotations only, not from the image).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np

from .calibration import MAX_IMAGES, MIN_IMAGES, Calibration
from .confidence import bbox_diagonal, landmark_features
from .detectors import Detectors
from .features import Pyramid
from .init import StartModel, placement_sums
from .training import InProcess, accumulate, image_rng, indexed, pick

__all__ = ["fold_out", "fold_fits", "cross_fits", "calibration_folds", "FOLDS"]

#: Folds of the calibration images (leave-one-out below this many images).
FOLDS = 10


def fold_out(model, fold, starts=None):
    """A copy of ``model`` trained without the samples ``fold`` (by downdating).

    Parameters
    ----------
    model : napari_gsm.model.Model
        With its detectors' statistics.
    fold : list of Sample
        Training samples to take out (their images are read here).
    starts : StartModel, optional
        The start model learned without the fold (:func:`fold_starts`; None: keep the
        model's).

    Returns
    -------
    napari_gsm.model.Model
        Sharing nothing mutable with ``model``; its calibration is None.
    """
    det = model.detectors
    v, L, Lr, D, _ = det.S.shape
    acc = copy.copy(model)
    acc.detectors = Detectors.empty(v, L, D, sigmas=det.sigmas, stride=det.stride, reg=det.reg)
    for smp in indexed(fold):
        accumulate(acc, Pyramid(smp.image()), smp.points,
                   image_rng(model.train_params.seed, smp.index))
    out = copy.copy(model)
    out.detectors = replace(det, S=det.S - acc.detectors.S, b=det.b - acc.detectors.b,
                            n=det.n - acc.detectors.n, filters=None).solve()
    out.shape = copy.deepcopy(model.shape)
    out.shape.remove([smp.points for smp in fold])
    out._precision = None
    out.calibration = None
    out.summary = dict(model.summary)
    if starts is not None:
        out.starts = starts
    return out


def fold_starts(model, fold):
    """The model's start model with the prior placement learned without the samples
    ``fold`` (with their landmarks and sizes): its sums
    (:attr:`~napari_gsm.init.StartModel.sums`) minus theirs. None when the fold is every
    training image. The detector-box placement is kept: it is a median over the boxes (one
    image moves it little) and needs the training boxes, which the model does not keep."""
    sums = model.starts.sums - placement_sums(model.shape.s0, [s.points for s in fold],
                                              [s.size for s in fold])
    if sums[0, 0] < 1:
        return None
    prior = StartModel.from_sums(sums)
    return replace(model.starts, prior=prior.prior, prior_std=prior.prior_std,
                   box_std=prior.box_std, sums=None)


def fold_fits(fold, model, state=None, tick=None):
    """The calibration rows of one fold: each of its samples fitted by :func:`fold_out` of
    ``model`` without the fold (with the method's ``state`` without it, if given, and the
    prior placement without it, :func:`fold_starts`, when the model's start model has its
    training sums), from the start a fit uses when given nothing.

    Returns
    -------
    X : list of (v, n_features) arrays
    errors, diagonals : lists of (v,) arrays and floats
        The fits' errors and bounding-box diagonals, in the calibration's units.
    """
    fold = [s.loaded() for s in indexed(fold)]
    starts = (fold_starts(model, fold) if model.starts is not None
              and model.starts.sums is not None else None)
    sub = fold_out(model, fold, starts)
    if state is not None:
        sub.state = state
    X, errors, diagonals = [], [], []
    for smp in fold:
        res = sub.fit(smp.grey, "auto", history=False, confidence=False)
        feats, scale = landmark_features(sub, Pyramid(smp.grey), res.points)
        X.append(feats)
        errors.append(np.linalg.norm(res.points - smp.points, axis=1) * scale)
        diagonals.append(bbox_diagonal(res.points) * scale)
        if tick is not None:
            tick()
    return X, errors, diagonals


def calibration_folds(n, *, folds=FOLDS, max_images=MAX_IMAGES, seed=0):
    """Which of ``n`` training samples are fitted for the calibration, in which folds.

    At most ``max_images`` (a seeded random choice), in ``folds`` folds (one image each
    when there are fewer); none below :data:`~napari_gsm.calibration.MIN_IMAGES`.

    Returns
    -------
    list of int arrays
    """
    if n < MIN_IMAGES:
        return []
    chosen = np.sort(np.random.default_rng(seed).permutation(n)[:max_images])
    k = min(folds, len(chosen))
    return [chosen[i::k] for i in range(k)]


def cross_fits(model, samples, *, folds=None, progress=None, runner=None):
    """Calibrate ``model``'s confidence on cross-validated fits of its training samples.

    Each fold of :func:`calibration_folds` is fitted by :func:`fold_out` of the model
    without it (and the method's state without it, where its training left one in
    ``state.fold_states``), from the start ``Model.fit`` uses when given nothing: one
    :func:`fold_fits` job per fold, where ``runner`` runs it (default: here).

    Parameters
    ----------
    model : napari_gsm.model.Model
        Trained on ``samples``, with its method's state.
    samples : list of Sample
    folds : list of int arrays, optional
        :func:`calibration_folds` (default) or the folds the state was trained with.
    progress : callable ``(done, total, what)``, optional
    runner : optional
        :class:`~napari_gsm.training.InProcess` (default) or
        :class:`~napari_gsm.distributed.OnCluster`.

    Returns
    -------
    Calibration
        Fitted when there are at least :data:`~napari_gsm.calibration.MIN_IMAGES` images.
    """
    runner = runner or InProcess(progress)
    samples = indexed(samples)
    v = model.n_landmarks
    cal = Calibration.empty(v, source=f"{model.method} fits by models without the image")
    n = len(samples)
    if n < MIN_IMAGES:
        cal.info["note"] = f"trained on {n} image(s); calibration needs {MIN_IMAGES}"
        return cal
    parts = calibration_folds(n) if folds is None else folds
    fold_states = getattr(model.state, "fold_states", None)
    if fold_states is not None:
        model.state.fold_states = None  # training only: never kept, nor sent
    if model.starts is not None and model.starts.face_source == "viola-jones":
        model.face_detector  # made once, shared by the fold models (in this process)
    handle = runner.put(model, sums=True)
    jobs = [(pick(samples, part), handle, None if fold_states is None else fold_states[f])
            for f, part in enumerate(parts)]
    X, errors, diagonals = [], [], []
    for x, e, d in runner.results(runner.map(fold_fits, jobs, "confidence calibration",
                                             sum(len(p) for p in parts))):
        X += x
        errors += e
        diagonals += d
    cal.X = np.asarray(X, np.float32)
    cal.errors = np.asarray(errors, np.float32)
    cal.diagonals = np.asarray(diagonals, np.float32)
    cal.info["folds"] = len(parts)
    cal.info["state_without_fold"] = fold_states is not None
    cal.cross_validate()
    return cal.fit()
