"""Pinning one landmark at its truth: do the other landmarks get better or worse?

For every test image, fit from the suite's usual start (prior placement for wings and ceph,
the Viola-Jones box for faces); then for each landmark ``k`` in turn put ``k`` at its true
position, pin it and fit again. Two ways, the widget's two buttons:

- **re-fit**: from the fitted points with ``k`` moved to its truth ("Re-fit with pins":
  ``model.fit(image, "points", points=..., pinned=onehot(k))``);
- **fit**: from the usual start with ``k`` put at its truth ("Fit" with a pinned point).

Both are compared with the first fit: the mean error of the *other* landmarks (``k``
excluded) before and after, in % of the suite's normaliser (bounding-box diagonal of the
true shape for wings and ceph, outer eye corners for faces), the mean change, and the
share of (image, k) pairs whose others got worse or better by more than 0.01 %::

    .venv/bin/python benchmarks/pins.py                      # wings, ceph and faces
    .venv/bin/python benchmarks/pins.py --sets wings --methods gsm
    .venv/bin/python benchmarks/pins.py --sets wings --n-train 10 --diagnose

Splits and models are those of ``benchmarks/run.py`` (seeded 75/25 wings and ceph splits;
faces: its ``--quick`` subsets, 300 training faces and 60 LFPW test faces), cached models
included; ``--n-train N`` trains on a seeded N of the training images instead (fewer than 12:
the untuned default prior weights, as for a person's first annotations).

``--diagnose`` prints, for GSM re-fits only, rows that tell the causes apart: the re-fit
with nothing pinned; ``k`` pinned where the fit put it (full prior weight, and the model's
re-fit scale); ``k`` pinned at its truth with the re-fit prior scale set to each of
2 ... 1/16; and at its truth, full weight, with the pose held at the first fit's.
``--images N`` uses the first N test images only; ``--start prior`` starts the first fits
of faces from the prior placement instead of the face detector's box.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest import mock  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import run as R  # noqa: E402
from napari_gsm.evaluate import normaliser  # noqa: E402
from napari_gsm.methods import gsm as G  # noqa: E402
from napari_gsm.model import TrainParams  # noqa: E402

SETS = {"wings": ["gsm", "gsm-cr", "clm"], "ceph": ["gsm", "gsm-cr", "clm"],
        "faces": ["gsm", "gsm-cr", "gsm3d"]}
WORSE = 1e-4  # a change of the others' mean error counts when beyond 0.01 % of the normaliser


def split(name, n_train=None):
    """Training and test samples of a suite, as ``benchmarks/run.py`` draws them."""
    cfg = R.SUITES[name]
    if cfg["test"] is None:
        train_items, test_items = C.split_items(cfg["train"], 0.25, seed=0)
    else:  # faces: run.py's --quick subsets
        n_faces, n_test = cfg["quick"]
        train_items = C.subset(sorted(C.load_dataset(cfg["train"]).annotated,
                                      key=lambda it: it.image_path.name), n_faces, seed=0)
        test_items = C.subset(sorted(C.load_dataset(cfg["test"]).annotated,
                                     key=lambda it: it.image_path.name), n_test, seed=0)
    train_items = C.subset(train_items, n_train, seed=0)
    return C.load_samples(train_items), C.load_samples(test_items)


def usual_starts(name, model, test, prior=False):
    """The start a fit without a box or points uses (or the prior placement), per image."""
    if prior or not R.SUITES[name]["face"]:
        return [model.starts.from_prior(model.shape.s0, s.grey.shape) for s in test]
    cache = C.BoxCache(C.CACHE / f"vj_boxes_{name}.json")
    out = []
    for s in test:
        box = model.starts.choose_face(cache.get(s), s.grey.shape)
        out.append(model.starts.from_prior(model.shape.s0, s.grey.shape) if box is None
                   else model.starts.from_face_box(model.shape.s0, box))
    cache.save()
    return out


def others_error(points, truth, k, norm):
    """Mean error of every landmark but ``k``, divided by ``norm``."""
    err = np.linalg.norm(points - truth, axis=1)
    return (err.sum() - err[k]) / (len(err) - 1) / norm


@contextmanager
def pose_held(pose):
    """GSM fits whose pose stays at ``pose`` (a diagnostic: the core has no such option)."""
    newton_step = G.newton_step

    def shape_only(grad, H, free):
        return newton_step(grad, H, free[free < len(grad) - 4])

    with mock.patch.object(G, "newton_step", shape_only), \
            mock.patch.object(G, "pose_from_shape", lambda *a: pose.copy()):
        yield


def diagnose(model, test, starts, norm_mode):
    """Per diagnostic row, ``(before, after)`` arrays over all (image, k) pairs."""
    v = model.n_landmarks
    scales = (2.0, 1.0, 0.5, 0.25, 0.125, 0.0625)
    full = replace(model.gsm_params, refit_scale=1.0)  # the prior weight before the scale
    rows = {}

    def add(row, before, after):
        rows.setdefault(row, ([], []))
        rows[row][0].append(before)
        rows[row][1].append(after)

    for s, start in zip(test, starts):
        norm = normaliser(s.points, norm_mode)
        first = model.fit(s.grey, "points", points=start, history=False)
        again = model.fit(s.grey, "points", points=first.points, history=False).points
        for k in range(v):
            pinned = np.arange(v) == k
            before = others_error(first.points, s.points, k, norm)
            add("re-fit, nothing pinned", before, others_error(again, s.points, k, norm))
            r = model.fit(s.grey, "points", points=first.points, pinned=pinned, history=False,
                          params=full)
            add("k pinned where the fit put it, scale 1", before,
                others_error(r.points, s.points, k, norm))
            r = model.fit(s.grey, "points", points=first.points, pinned=pinned, history=False)
            add("k pinned where the fit put it, the model's scale", before,
                others_error(r.points, s.points, k, norm))
            pts = first.points.copy()
            pts[k] = s.points[k]
            for scale in scales:
                params = replace(model.gsm_params, refit_scale=scale)
                r = model.fit(s.grey, "points", points=pts, pinned=pinned, params=params,
                              history=False)
                add(f"k at truth, re-fit prior scale {scale:g}", before,
                    others_error(r.points, s.points, k, norm))
            with pose_held(first.pose):
                r = model.fit(s.grey, "points", points=pts, pinned=pinned, history=False,
                              params=full)
            add("k at truth, scale 1, pose held at the fit's", before,
                others_error(r.points, s.points, k, norm))
    return {k: (np.array(a), np.array(b)) for k, (a, b) in rows.items()}


def measure(model, test, starts, norm_mode):
    """Per variant, ``(before, after)`` arrays over all (image, k) pairs."""
    v = model.n_landmarks
    out = {"re-fit": ([], []), "fit": ([], [])}
    for s, start in zip(test, starts):
        norm = normaliser(s.points, norm_mode)
        first = model.fit(s.grey, "points", points=start, history=False).points
        for k in range(v):
            pinned = np.arange(v) == k
            before = others_error(first, s.points, k, norm)
            for variant, base in (("re-fit", first), ("fit", start)):
                pts = base.copy()
                pts[k] = s.points[k]
                after = model.fit(s.grey, "points", points=pts, pinned=pinned,
                                  history=False).points
                if not np.array_equal(after[k], s.points[k]):
                    raise AssertionError(f"{s.name}: pinned landmark {k} moved")
                out[variant][0].append(before)
                out[variant][1].append(others_error(after, s.points, k, norm))
    return {k: (np.array(a), np.array(b)) for k, (a, b) in out.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", choices=sorted(SETS), default=list(SETS))
    ap.add_argument("--methods", nargs="+", default=["gsm", "gsm-cr", "clm", "gsm3d"])
    ap.add_argument("--n-train", type=int, default=None,
                    help="train on a seeded subset of this many training images")
    ap.add_argument("--images", type=int, default=None,
                    help="use only the first this many test images")
    ap.add_argument("--diagnose", action="store_true",
                    help="GSM re-fit rows that tell the causes apart, instead of the table")
    ap.add_argument("--start", choices=["usual", "prior"], default="usual",
                    help="first fits from the usual start or the prior placement (faces)")
    ap.add_argument("--no-cache", action="store_true", help="retrain cached models")
    args = ap.parse_args(argv)
    lines = []
    for name in args.sets:
        train_s, test_s = split(name, args.n_train)
        test_s = test_s[:args.images]
        cfg = R.SUITES[name]
        base, path = R.base_model(name, train_s, TrainParams(face_detector=cfg["face"]),
                                  not args.no_cache)
        scale = getattr(base.gsm_params, "refit_scale", None)  # None: code before the scale
        label = f"{name} ({len(train_s)} training images; lam {base.gsm_params.lam:g}" + \
            ("" if scale is None else f", refit_scale {scale:g}") + ")"
        starts = usual_starts(name, base, test_s, args.start == "prior")
        methods = ["gsm"] if args.diagnose else [m for m in SETS[name] if m in args.methods]
        for meth in methods:
            model, _ = R.method_model(name, meth, base, path, train_s, not args.no_cache)
            t0 = time.perf_counter()
            if args.diagnose:
                res = diagnose(model, test_s, starts, cfg["norm"])
            else:
                res = measure(model, test_s, starts, cfg["norm"])
            print(f"{name} {meth}: {len(test_s)} images x {model.n_landmarks} landmarks in "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            for row, (before, after) in res.items():
                d = after - before
                lines.append(f"| {label} | {meth} | {row} | {len(d)} | "
                             f"{C.pct(before.mean(), 3)} | {C.pct(after.mean(), 3)} | "
                             f"{C.pct(d.mean(), 3, sign=True)} | "
                             f"{C.pct((d > WORSE).mean(), 1)} | "
                             f"{C.pct((d < -WORSE).mean(), 1)} |")
    print("\nOne landmark pinned at its truth; mean error of the others (% of the "
          "normaliser) before (first fit) and after; worse / better: share of the (image, k) "
          f"pairs whose others' error changed by more than {C.pct(WORSE, None)} %\n")
    print(f"| set | method | {'row' if args.diagnose else 'variant'} | (image, k) pairs | "
          "others before (%) | others after (%) | mean change (%) | worse (% of pairs) | "
          "better (% of pairs) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
