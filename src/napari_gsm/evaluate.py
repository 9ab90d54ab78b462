"""Landmark accuracy: normalised mean error, CED curves, AUC and failure rate.

The conventions are those of the 300-W challenge: the error of one image is the mean
point-to-point distance divided by a normaliser (the outer eye-corner distance for the
68-point face markup, otherwise the diagonal of the true shape's bounding box); the
cumulative error distribution (CED) is the fraction of images whose error is at most a
threshold; AUC is the area under the CED up to a cut-off (0.08) divided by that cut-off;
the failure rate is the fraction of images whose error exceeds the cut-off.

An image whose error is NaN (nothing to compare, e.g. every landmark missing) counts as a
failure in the CED, AUC and failure rate, and is left out of the mean and median.

How good a confidence is (:mod:`napari_gsm.confidence`): :func:`off_landmarks` (which
landmarks are truly off), :func:`auroc` (does the probability rank the off ones first),
:func:`calibration_error` (do the probabilities match the frequencies), :func:`catch_rate`
(the share of the off landmarks among the least confident ones) and
:func:`confidence_summary`, which reports them all with the Spearman correlation of the
predicted and true NME.
"""

from __future__ import annotations

import numpy as np

__all__ = ["point_errors", "normaliser", "parse_norm", "nme", "ced", "auc", "failure_rate",
           "summarise", "EYE_CORNERS", "off_landmarks", "auroc", "calibration_error",
           "catch_rate", "confidence_summary", "FLAG_SHARE"]

#: 0-based indices of the outer eye corners in the 68-point iBUG markup.
EYE_CORNERS = (36, 45)


def _points(a, name):
    a = np.asarray(a, dtype=float)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must have shape (v, 2), got {a.shape}")
    return a


def point_errors(pred, truth):
    """Euclidean distance between predicted and true landmarks.

    Parameters
    ----------
    pred, truth : (v, 2) array_like
        ``(x, y)`` landmarks; NaN rows are missing.

    Returns
    -------
    errors : (v,) ndarray
        Distance per landmark in pixels; NaN where either landmark is missing.
    """
    pred, truth = _points(pred, "pred"), _points(truth, "truth")
    if pred.shape != truth.shape:
        raise ValueError(f"pred {pred.shape} and truth {truth.shape} differ in shape")
    return np.sqrt(((pred - truth) ** 2).sum(axis=1))


def parse_norm(text):
    """A normaliser mode from its command-line spelling.

    ``'auto'``, ``'eyes'``, ``'diagonal'`` are returned unchanged; ``'pair:I,J'`` becomes
    ``('pair', I, J)`` (0-based landmark indices).
    """
    text = str(text).strip()
    if text in ("auto", "eyes", "diagonal"):
        return text
    if text.startswith("pair:"):
        parts = text[5:].split(",")
        try:
            i, j = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"expected 'pair:I,J' with two integers, got {text!r}") from None
        return ("pair", i, j)
    raise ValueError(f"unknown normaliser {text!r}; use auto, eyes, diagonal or pair:I,J")


def normaliser(truth, mode="auto"):
    """The length an image's errors are divided by.

    Parameters
    ----------
    truth : (v, 2) array_like
        True landmarks (NaN rows missing).
    mode : {'auto', 'eyes', 'diagonal'} or ('pair', i, j)
        'eyes': distance between the outer eye corners (0-based landmarks 36 and 45),
        only for 68 landmarks. ``('pair', i, j)``: distance between landmarks ``i`` and
        ``j`` (0-based). 'diagonal': diagonal of the bounding box of the present
        landmarks. 'auto': 'eyes' for 68 landmarks, else 'diagonal'.

    Returns
    -------
    float
        The normaliser in pixels (NaN if the landmarks it needs are missing).
    """
    truth = _points(truth, "truth")
    v = truth.shape[0]
    if mode == "auto":
        mode = "eyes" if v == 68 else "diagonal"
    if mode == "eyes":
        if v != 68:
            raise ValueError(f"the 'eyes' normaliser needs the 68-point markup, got {v} points")
        mode = ("pair", *EYE_CORNERS)
    if mode == "diagonal":
        ok = np.isfinite(truth).all(axis=1)
        if not ok.any():
            return float("nan")
        extent = truth[ok].max(axis=0) - truth[ok].min(axis=0)
        return float(np.hypot(*extent))
    if isinstance(mode, tuple) and len(mode) == 3 and mode[0] == "pair":
        i, j = int(mode[1]), int(mode[2])
        if not (-v <= i < v and -v <= j < v) or i % v == j % v:
            raise ValueError(f"pair normaliser needs two different landmarks in 0..{v - 1}, "
                             f"got ({i}, {j})")
        return float(np.hypot(*(truth[i] - truth[j])))
    raise ValueError(f"unknown normaliser {mode!r}")


def nme(pred, truth, norm="auto"):
    """Normalised mean error of one image: mean landmark error / :func:`normaliser`.

    Parameters
    ----------
    pred, truth : (v, 2) array_like
    norm : str or tuple, optional
        See :func:`normaliser`; a float is used as the normaliser directly.

    Returns
    -------
    float
        NaN if no landmark is present in both, or the normaliser is missing or zero.
    """
    err = point_errors(pred, truth)
    d = float(norm) if isinstance(norm, (int, float)) else normaliser(truth, norm)
    ok = np.isfinite(err)
    if not ok.any() or not np.isfinite(d) or d <= 0:
        return float("nan")
    return float(err[ok].mean() / d)


def _errors(errors):
    e = np.asarray(errors, dtype=float).ravel()
    # A missing error can never be "below a threshold": comparisons with NaN are False,
    # so it counts as a failure without special cases.
    return e


def ced(errors, max_error=0.08, n=161):
    """Cumulative error distribution.

    Parameters
    ----------
    errors : (N,) array_like
        One error per image (e.g. :func:`nme`).
    max_error : float, optional
    n : int, optional
        Number of thresholds, evenly spaced on ``[0, max_error]``.

    Returns
    -------
    thresholds : (n,) ndarray
    fraction : (n,) ndarray
        Fraction of images with error ``<=`` each threshold (NaN errors never are).
    """
    e = _errors(errors)
    t = np.linspace(0.0, max_error, int(n))
    if e.size == 0:
        return t, np.zeros_like(t)
    return t, (e[None, :] <= t[:, None]).mean(axis=1)


def auc(errors, max_error=0.08):
    """Area under the CED on ``[0, max_error]`` divided by ``max_error`` (in ``[0, 1]``).

    The CED is a step function, and each image contributes ``max(0, max_error - e)`` to
    the integral (it is counted from its error up to the cut-off), so the area is exact,
    not a sum over a threshold grid.

    Parameters
    ----------
    errors : (N,) array_like
    max_error : float, optional

    Returns
    -------
    float
        0 for no images.
    """
    e = _errors(errors)
    if e.size == 0:
        return 0.0
    with np.errstate(invalid="ignore"):
        area = np.where(np.isfinite(e), np.clip(max_error - e, 0.0, max_error), 0.0)
    return float(area.mean() / max_error)


def failure_rate(errors, threshold=0.08):
    """Fraction of images with error above `threshold` (NaN errors count as failures)."""
    e = _errors(errors)
    if e.size == 0:
        return 0.0
    return float(1.0 - (e <= threshold).mean())


def summarise(errors, max_error=0.08):
    """Mean, median, AUC and failure rate of per-image errors.

    Returns
    -------
    dict
        ``mean`` and ``median`` over the finite errors (NaN if none), ``auc`` and
        ``failure_rate`` at `max_error`, ``n`` (number of images, NaN errors included).
    """
    e = _errors(errors)
    fin = e[np.isfinite(e)]
    return {
        "mean": float(fin.mean()) if fin.size else float("nan"),
        "median": float(np.median(fin)) if fin.size else float("nan"),
        "auc": auc(e, max_error),
        "failure_rate": failure_rate(e, max_error),
        "n": int(e.size),
    }


# -- confidence ------------------------------------------------------------------------

#: Share of the landmarks flagged as the least confident by :func:`catch_rate`.
FLAG_SHARE = 0.2


def off_landmarks(pred, truth, fraction=0.02):
    """Which landmarks are farther than ``fraction`` of the true shape's bounding-box
    diagonal from the truth, ``(v,)`` bool (False where either is missing)."""
    err = point_errors(pred, truth)
    with np.errstate(invalid="ignore"):
        return err > fraction * normaliser(truth, "diagonal")


def auroc(scores, labels):
    """Area under the ROC curve of ``scores`` for binary ``labels`` (ties count half).

    The probability that a random positive scores above a random negative (the
    Mann-Whitney statistic); NaN when either class is empty.
    """
    from scipy.stats import rankdata

    s = np.asarray(scores, float).ravel()
    y = np.asarray(labels, bool).ravel()
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def calibration_error(probs, labels, bins=10):
    """Expected calibration error: ``sum_b (n_b / n) |mean p_b - mean y_b|`` over ``bins``
    equal-width bins of the probability."""
    p = np.asarray(probs, float).ravel()
    y = np.asarray(labels, float).ravel()
    if p.size == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.sum() * abs(p[sel].mean() - y[sel].mean())
    return float(total / p.size)


def catch_rate(scores, labels, share=FLAG_SHARE):
    """Share of the positive ``labels`` among the ``share`` highest ``scores``.

    "Flag the 20 % least confident landmarks: which share of the truly off ones is
    caught"; NaN when there is no positive.
    """
    s = np.asarray(scores, float).ravel()
    y = np.asarray(labels, bool).ravel()
    if not y.any():
        return float("nan")
    k = int(round(share * s.size))
    flagged = np.argsort(-s, kind="stable")[:k]
    return float(y[flagged].sum() / y.sum())


def confidence_summary(p_off, off, predicted_nme, true_nme):
    """How well per-landmark probabilities and per-image predicted NMEs match the truth.

    Parameters
    ----------
    p_off, off : sequences of (v,) arrays
        Per image: each landmark's probability of being off, and whether it is.
    predicted_nme, true_nme : (N,) array_like

    Returns
    -------
    dict
        ``auroc``, ``calibration_error``, ``catch_rate`` (at :data:`FLAG_SHARE`),
        ``off_share`` (the share of off landmarks), ``mean_p_off``, ``n_landmarks``,
        ``nme_spearman`` (Spearman correlation of predicted and true NME; NaN for fewer
        than 3 images).
    """
    from scipy.stats import spearmanr

    p = np.concatenate([np.ravel(a) for a in p_off]).astype(float)
    y = np.concatenate([np.ravel(a) for a in off]).astype(bool)
    a, b = np.asarray(predicted_nme, float), np.asarray(true_nme, float)
    ok = np.isfinite(a) & np.isfinite(b)
    rho = float(spearmanr(a[ok], b[ok])[0]) if ok.sum() >= 3 else float("nan")
    return {"auroc": auroc(p, y), "calibration_error": calibration_error(p, y),
            "catch_rate": catch_rate(p, y), "off_share": float(y.mean()) if y.size else
            float("nan"), "mean_p_off": float(p.mean()) if p.size else float("nan"),
            "n_landmarks": int(y.size), "nme_spearman": rho}
