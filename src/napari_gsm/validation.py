"""How good is a model trained on these images, and would more images help?

k-fold cross-validation on a project's own annotated images: every image is fitted by a
model trained without it (from the start a fit uses when given nothing: the face detector
for a face model, else the prior placement), giving each image's NME and each landmark's
error. A learning curve repeats this with fewer training images per fold, so its slope at the
right end says whether annotating more images will still lower the error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .evaluate import normaliser, point_errors

__all__ = ["CrossValidation", "cross_validate", "learning_verdict"]


@dataclass
class CrossValidation:
    """Cross-validated errors of a training set.

    Attributes
    ----------
    nme : (n,) array
        Each image's mean landmark error in percent of its normaliser.
    landmark_errors : (n, v) array
        Each landmark's error in percent of its image's normaliser.
    sizes : list of int
        Training-set sizes of the learning curve (the largest is the full fold).
    curve : list of float
        Mean NME (percent) at each size.
    curve_spread : list of float
        Standard error of that mean over the images.
    folds : int
    """

    nme: np.ndarray
    landmark_errors: np.ndarray
    sizes: list = field(default_factory=list)
    curve: list = field(default_factory=list)
    curve_spread: list = field(default_factory=list)
    folds: int = 0

    @property
    def mean_nme(self):
        return float(np.nanmean(self.nme))


def _folds(n, k, rng):
    order = rng.permutation(n)
    return [np.sort(order[i::k]) for i in range(k)]


def cross_validate(samples, train_model, *, folds=5, sizes=3, norm="auto", progress=None,
                   seed=0):
    """k-fold cross-validation with a learning curve.

    Parameters
    ----------
    samples : list of (image, (v, 2) points)
        The annotated images (at least 4).
    train_model : callable
        ``train_model(samples) -> Model``, trained as the person trains (method, options).
    folds : int
        ``k`` (at most the number of images).
    sizes : int
        Points of the learning curve: training sets of ``1/sizes, 2/sizes, ...`` of a fold's
        training images (the last is the whole fold).
    norm : str
        Error normaliser (see :func:`napari_gsm.evaluate.normaliser`).
    progress : callable ``(done, total, what)``, optional
        Raising from it stops the validation.

    Returns
    -------
    CrossValidation
    """
    n = len(samples)
    if n < 4:
        raise ValueError(f"cross-validation needs at least 4 annotated images, not {n}")
    k = int(min(folds, n))
    rng = np.random.default_rng(seed)
    parts = _folds(n, k, rng)
    v = len(samples[0][1])
    per_size = np.full((sizes, n, v), np.nan)
    fractions = [(j + 1) / sizes for j in range(sizes)]
    total, done = k * sizes, 0
    smallest = []
    for test in parts:
        train_idx = rng.permutation(np.setdiff1d(np.arange(n), test))
        for j, frac in enumerate(fractions):
            m = max(2, int(round(frac * len(train_idx))))
            if j == 0:
                smallest.append(m)
            if progress is not None:
                progress(done, total, f"cross-validation, {m} training images")
            model = train_model([samples[i] for i in train_idx[:m]])
            for i in test:
                image, truth = samples[i]
                fitted = model.fit(image).points
                scale = normaliser(truth, norm) / 100.0
                per_size[j, i] = point_errors(fitted, truth) / scale
            done += 1
    if progress is not None:
        progress(done, total, "cross-validation")
    full = per_size[-1]
    nme = np.nanmean(full, axis=1)
    n_train = [int(round(f * (n - n / k))) for f in fractions]
    curve, spread = [], []
    for j in range(sizes):
        img = np.nanmean(per_size[j], axis=1)
        curve.append(float(np.nanmean(img)))
        spread.append(float(np.nanstd(img) / np.sqrt(max(np.isfinite(img).sum(), 1))))
    return CrossValidation(nme=nme, landmark_errors=full, sizes=n_train, curve=curve,
                           curve_spread=spread, folds=k)


def learning_verdict(cv):
    """A sentence for the person: will annotating more images help?

    Reads the slope of the learning curve between its last two points against their
    standard errors: a drop larger than the noise means more images still help, and the
    slope per image gives a rough figure for doubling the set.
    """
    if len(cv.curve) < 2:
        return "not enough images for a learning curve"
    (n0, n1), (e0, e1) = cv.sizes[-2:], cv.curve[-2:]
    noise = float(np.hypot(*cv.curve_spread[-2:]))
    drop = e0 - e1
    if drop <= max(noise, 0.02 * e1):
        return (f"the error is flat from {n0} to {n1} training images ({e0:.2f} -> "
                f"{e1:.2f} %): more annotations of the same kind will help little")
    # error ~ a / sqrt(n): doubling the set divides it by about sqrt(2) at most
    per_doubling = drop / max(np.log2(n1 / max(n0, 1)), 1e-6)
    return (f"the error still falls ({e0:.2f} % with {n0} images, {e1:.2f} % with {n1}): "
            f"annotating about {n1} more could lower it by about {per_doubling:.2f} points")
