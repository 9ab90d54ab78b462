"""How trustworthy is the per-landmark confidence? One command, one table per suite.

    .venv/bin/python benchmarks/confidence.py [--suite faces|wings|ceph|all]
                                              [--methods gsm gsm-cr clm gsm3d] [--quick]

Trains (or reads from ``benchmarks/cache``, shared with ``run.py``) each method on a suite's
training images -- its confidence calibrated on cross-validated fits of those images only --
fits the test images from the suite's start (Viola-Jones box for faces, else the prior
placement) and compares the confidence with the truth. A landmark is truly "off" when
farther than 2 % of the *true* shape's bounding-box diagonal from its truth; the fit's
``p_off`` used the *fitted* shape's diagonal, as a fit must. Columns: see
``benchmarks/README.md`` ("Confidence").
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import run as R  # noqa: E402
from napari_gsm.evaluate import (FLAG_SHARE, auroc, calibration_error,  # noqa: E402
                                 confidence_summary, nme, normaliser, off_landmarks)
from napari_gsm.confidence import assess  # noqa: E402
from napari_gsm.features import Pyramid  # noqa: E402
from napari_gsm.model import TrainParams  # noqa: E402

LABELS = {"gsm": "GSM", "gsm-cr": "GSM-CR", "clm": "CLM (SCMS)", "gsm3d": "GSM 2D+3D"}
FACE_ONLY = {"clm", "gsm3d"}  # affordable on faces, and the issue asks for them there
OFF = 0.02
#: Other thresholds (fractions of the diagonal) the same fits are assessed at.
OTHER_OFF = (0.005, 0.01, 0.04)


def suite_data(name, quick):
    train_items, test_items = R.suite_items(name, quick)
    return R.SUITES[name], C.load_samples(train_items), C.load_samples(test_items)


def starts_for(cfg, model, test):
    """``Model.fit`` start arguments per test image: run.py's (one face box per face)."""
    out = []
    cache = C.BoxCache(C.CACHE / "vj_boxes.json") if cfg["face"] else None
    for s in test:
        box = None
        if cache is not None:
            box = model.starts.choose_face(cache.get(s), s.grey.shape)
            if box is None:
                box = R._box_from_start(model, model.start(s.grey, "prior")[0])
        out.append(dict(init="box", box=box, box_kind="detector") if box is not None
                   else dict(init="prior"))
    if cache is not None:
        cache.save()
    return out


def measure(model, test, starts, norm):
    """Per test image: the fit's confidence and the truth."""
    rec = {"p_off": [], "off": [], "pred_nme": [], "true_nme": [], "failed": [],
           "conf_ms": [], "fit_ms": [], "other": {t: ([], []) for t in OTHER_OFF}}
    model.fit(test[0].grey, history=False, **starts[0])  # warm-up
    for s, kw in zip(test, starts):
        res = model.fit(s.grey, history=False, **kw)
        c = res.confidence
        ok = np.isfinite(s.points).all(1)
        rec["p_off"].append(c.p_off[ok])
        rec["off"].append(off_landmarks(res.points, s.points, OFF)[ok])
        # the predicted NME under the suite's normaliser (eyes for faces), of the fitted shape
        rec["pred_nme"].append(c.error_px.mean() / normaliser(res.points, norm))
        rec["true_nme"].append(nme(res.points, s.points, norm))
        rec["failed"].append(c.failed)
        rec["conf_ms"].append(res.extra["confidence_ms"])
        rec["fit_ms"].append(res.fit_ms)
        for t, (p, off) in rec["other"].items():
            p.append(assess(model, Pyramid(s.grey), res.points, off_fraction=t).p_off[ok])
            off.append(off_landmarks(res.points, s.points, t)[ok])
    return rec


def row(label, model, rec):
    s = confidence_summary(rec["p_off"], rec["off"], rec["pred_nme"], rec["true_nme"])
    off = np.concatenate(rec["off"])
    p = np.concatenate(rec["p_off"])
    true_nme = np.asarray(rec["true_nme"])
    failed = np.asarray(rec["failed"])
    most_off = np.array([o.mean() >= 0.5 for o in rec["off"]])
    best = min(1.0, FLAG_SHARE / s["off_share"]) if s["off_share"] > 0 else float("nan")
    f = lambda x, fmt: "n/a" if x is None or not np.isfinite(x) else fmt.format(x)  # noqa: E731
    cal_s = model.summary.get("calibration_seconds")
    return [label, str(len(true_nme)), f"{off.sum()} ({100 * off.mean():.1f})",
            f(s["auroc"], "{:.3f}"), f(100 * s["catch_rate"], "{:.1f}") + f" ({f(100 * best, '{:.0f}')})",
            f(s["calibration_error"], "{:.3f}"), f"{100 * p.mean():.1f} / {100 * off.mean():.1f}",
            f(s["nme_spearman"], "{:.3f}"),
            f"{100 * np.mean(rec['pred_nme']):.2f} / {100 * np.nanmean(true_nme):.2f}",
            f"{failed.sum()} / {most_off.sum()} / {(failed & most_off).sum()}",
            f"{(true_nme > 0.08).sum()} ({(failed & (true_nme > 0.08)).sum()})",
            f(float(np.median(rec["conf_ms"])), "{:.2f}"),
            f(float(np.median(rec["fit_ms"])), "{:.1f}"),
            f(cal_s, "{:.1f}"), f(model.summary.get("train_seconds"), "{:.1f}")]


def cv_cell(model):
    """The calibration's own cross-validated AUROC / ECE on the training fits."""
    cv = model.calibration.info.get("cv") or {}
    f = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    return f"{f(cv.get('auroc'))} / {f(cv.get('calibration_error'))}"


def other_cells(rec):
    """AUROC and ECE at the other thresholds, ``(n off) AUROC / ECE`` per threshold."""
    out = []
    for t, (p, off) in rec["other"].items():
        p, off = np.concatenate(p), np.concatenate(off)
        out.append(f"{off.sum()}: {auroc(p, off):.3f} / {calibration_error(p, off):.3f}")
    return out


HEADER = ["method", "test images", "off landmarks (%)", "AUROC", "caught in the 20 % least "
          "confident, % (best possible)", "ECE", "mean p_off / off share (%)",
          "Spearman NME", "predicted / true mean NME (%)",
          "flagged failed / most off / both", "NME > 8 %: images (flagged failed)",
          "confidence ms (median)", "fit ms (median)",
          "calibration s", "training s"]


def run_suite(name, args):
    cfg, train_s, test_s = suite_data(name, args.quick)
    print(f"\n=== {name}: {len(train_s)} training, {len(test_s)} test images ===", flush=True)
    params = TrainParams(face_detector=cfg["face"])
    base, base_path = R.base_model(name, train_s, params, not args.no_cache)
    starts = starts_for(cfg, base, test_s)
    lines = C.md_head(HEADER)
    head2 = (["method"] + [f"off at {100 * t:g} %: n off: AUROC / ECE" for t in OTHER_OFF]
             + ["training fits, cross-validated, off at 2 %: AUROC / ECE"])
    lines2 = C.md_head(head2)
    for meth in args.methods:
        if meth in FACE_ONLY and not cfg["face"]:
            continue
        t0 = time.perf_counter()
        model, _ = R.method_model(name, meth, base, base_path, train_s, not args.no_cache)
        rec = measure(model, test_s, starts, cfg["norm"])
        print(f"  [{meth}] fitted {len(test_s)} images in {time.perf_counter() - t0:.0f} s",
              flush=True)
        lines.append(C.md_row(row(LABELS[meth], model, rec)))
        lines2.append(C.md_row([LABELS[meth]] + other_cells(rec) + [cv_cell(model)]))
    title = (f"### Confidence, suite `{name}`" + (" — QUICK RUN" if args.quick else "")
             + f"\n\nTrain {len(train_s)}, test {len(test_s)} images; start: "
             f"{'Viola-Jones box' if cfg['face'] else 'prior placement'}; off: farther than "
             f"{100 * OFF:g} % of the true shape's bounding-box diagonal; NME normaliser: "
             f"{'outer eye corners' if cfg['norm'] == 'auto' else 'bounding-box diagonal'}.\n")
    text = title + "\n" + "\n".join(lines) + "\n\nThe same fits, other thresholds:\n\n" \
        + "\n".join(lines2)
    print("\n" + text, flush=True)
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="all", choices=["faces", "wings", "ceph", "all"])
    ap.add_argument("--methods", nargs="+", default=["gsm", "gsm-cr", "gsm3d", "clm"],
                    choices=list(LABELS))
    ap.add_argument("--quick", action="store_true", help="the development subsets of run.py")
    ap.add_argument("--no-cache", action="store_true", help="retrain even if cached")
    args = ap.parse_args(argv)
    suites = ["faces", "wings", "ceph"] if args.suite == "all" else [args.suite]
    print(f"load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    parts = [run_suite(s, args) for s in suites]
    print("\n\n".join(parts))
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
