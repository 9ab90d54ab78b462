"""What ``fit`` and ``evaluate`` say about the fits' confidence.

``fit --json`` gives each image's record a ``confidence`` (``p_off``, ``error_px``, ``nme``,
``failed``; :meth:`napari_gsm.confidence.Confidence.to_json`), None when the model has no
calibration (the document's ``confidence_note`` says why). ``evaluate`` knows the truth, so
it also says how good that confidence was on the images it fitted.
"""

from __future__ import annotations

import argparse

import numpy as np

from ._output import percent, warn


def off_threshold_arg(text):
    """argparse type for --off-threshold: a percentage above 0, returned as a fraction."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 100:
        raise argparse.ArgumentTypeError(f"expected a percentage between 0 and 100, got "
                                         f"{text!r}")
    return value / 100.0


def add_off_threshold(parser):
    parser.add_argument("--off-threshold", type=off_threshold_arg, default=None, metavar="PCT",
                        help="a landmark counts as off when farther than PCT %% of the shape's "
                        "bounding-box diagonal from where it belongs (default 2): what each "
                        "landmark's p_off is the probability of")


def note(model, model_path, quiet):
    """The model's confidence note (None if calibrated), warned on stderr unless ``quiet``."""
    text = model.confidence_note
    if text is not None and not quiet:
        warn(f"{model_path}: {text}")
    return text


class Assessment:
    """Gathers, per evaluated image, the confidence and the truth; then sums them up."""

    def __init__(self, norm, fraction):
        self.norm, self.fraction = norm, fraction
        self.p_off, self.off, self.predicted, self.true = [], [], [], []

    def add(self, result, truth, true_nme):
        """Record one fitted image; returns its per-image JSON fields."""
        from ..evaluate import normaliser, off_landmarks

        c = result.confidence
        off = off_landmarks(result.points, truth, self.fraction if c is None
                            else c.off_fraction)
        out = {"n_off": int(off.sum())}
        if c is None:
            return out
        ok = np.isfinite(truth).all(1)
        predicted = float(c.error_px.mean() / normaliser(result.points, self.norm))
        self.p_off.append(c.p_off[ok])
        self.off.append(off[ok])
        self.predicted.append(predicted)
        self.true.append(true_nme)
        out["predicted_nme_pct"] = percent(predicted)
        return out

    def summary(self):
        """The JSON summary: predicted mean NME and how well the confidence matched."""
        from ..evaluate import FLAG_SHARE, confidence_summary

        if not self.p_off:
            return None
        s = confidence_summary(self.p_off, self.off, self.predicted, self.true)
        return {"off_threshold_pct": percent(self.fraction),
                "predicted_mean_nme_pct": percent(np.mean(self.predicted)),
                "off_share_pct": percent(s["off_share"]),
                "mean_p_off_pct": percent(s["mean_p_off"]),
                "auroc": s["auroc"], "calibration_error": s["calibration_error"],
                "flag_share_pct": percent(FLAG_SHARE),
                "catch_rate_pct": percent(s["catch_rate"]),
                "nme_spearman": s["nme_spearman"], "n_landmarks": s["n_landmarks"]}


def print_summary(s):
    """evaluate's text lines about the confidence (``s`` from :meth:`Assessment.summary`)."""
    if s is None:
        return

    def num(x, fmt):
        return "n/a" if x is None or not np.isfinite(x) else format(x, fmt)

    print(f"  predicted NME   {s['predicted_mean_nme_pct']:.3f} % (mean; Spearman with the "
          f"true NME {num(s['nme_spearman'], '.2f')})")
    print(f"  off landmarks   {s['off_share_pct']:.1f} % farther than "
          f"{s['off_threshold_pct']:g} % of the shape's diagonal; mean p_off "
          f"{s['mean_p_off_pct']:.1f} %")
    print(f"  p_off           AUROC {num(s['auroc'], '.3f')}, calibration error "
          f"{num(s['calibration_error'], '.3f')}; the {s['flag_share_pct']:g} % least "
          f"confident landmarks hold {num(s['catch_rate_pct'], '.1f')} % of the off ones")
