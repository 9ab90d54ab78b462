"""Annotation effort: how many landmarks would a person have to move?

Simulates the napari loop on an annotated folder: train GSM on the first ``--seed`` images,
then for every next image

1. fit (face detector start for faces, else the learned prior placement);
2. a landmark is "off" when farther than ``--threshold`` x the true shape's bounding-box
   diagonal from the truth; the person moves the ``--per-round`` worst off landmarks to the
   truth (which pins them) and re-fits, and repeats until no landmark is off;
3. accept the truth and update the model incrementally (``Model.update``), timed.

Prints, per data set, the share of landmarks (in %) that needed no move with that pin-and-refit
loop and, for comparison, when every off landmark of the first fit is moved by hand (no
re-fit); moves per image; and the median/max time per incremental update.

A second table asks what the per-landmark confidence saves: the same pin-and-refit loop by
a person who looks only at the *flagged* landmarks of each fit (``p_off`` at least 0.5, at
least 0.2, or the 20 % least confident), moves the off ones among them and re-fits (the
re-fit's confidence flags anew), against one who looks at every landmark: landmarks looked
at, moved, and off landmarks missed (off and never moved when the person stops)::

    .venv/bin/python benchmarks/effort.py                 # wings, ceph and faces
    .venv/bin/python benchmarks/effort.py --sets wings --threshold 0.02
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402
from napari_gsm import TrainParams, load_dataset, train  # noqa: E402
from napari_gsm.io import to_grey  # noqa: E402

SETS = {
    "wings": dict(folder=C.DATA / "wings/train", face=False, limit=None),
    "ceph": dict(folder=C.DATA / "ceph/train", face=False, limit=None),
    "faces": dict(folder=C.DATA / "faces-300w/train", face=True, limit=310),
}


#: Which landmarks of a fit a person looks at: name -> rule on the fit's confidence.
INSPECT = {
    "all": lambda c: True,
    "p_off >= 0.5": lambda c: c.p_off >= 0.5,
    "p_off >= 0.2": lambda c: c.p_off >= 0.2,
    "20 % least confident": lambda c: c.p_off >= np.quantile(c.p_off, 0.8),
}


def inspect(model, grey, truth, tol, first, rule, per_round):
    """Pin-and-refit by a person who looks only at the landmarks ``rule`` flags.

    Each round the person looks at the flagged landmarks not yet moved, moves the
    ``per_round`` worst off ones among them to the truth (pins) and re-fits; they stop when
    no flagged landmark is off. Returns ``(looked at, moved, missed)``: distinct landmarks
    looked at, landmarks moved, off landmarks left unmoved at the end.
    """
    v = len(truth)
    pinned, seen = np.zeros(v, bool), np.zeros(v, bool)
    points, conf = first.points.copy(), first.confidence
    while True:
        flagged = rule(conf) & ~pinned
        seen |= flagged
        err = np.where(flagged, np.linalg.norm(points - truth, axis=1), 0.0)
        off = np.flatnonzero(err > tol)
        if not len(off):
            break
        worst = off[np.argsort(-err[off])[:per_round]]
        pinned[worst] = True
        points[worst] = truth[worst]
        if pinned.all():
            break
        res = model.fit(grey, "points", points=points, pinned=pinned, history=False)
        points, conf = res.points, res.confidence
    missed = ~pinned & (np.linalg.norm(points - truth, axis=1) > tol)
    return int(seen.sum()), int(pinned.sum()), int(missed.sum())


def simulate(folder, *, face, seed_n, threshold, limit, per_round):
    items = load_dataset(folder).annotated
    if limit:
        items = items[:limit]
    seed = [(to_grey(it.load_image()), it.points) for it in items[:seed_n]]
    t0 = time.perf_counter()
    model = train(seed, "gsm", params=TrainParams(face_detector=face))
    train_s = time.perf_counter() - t0
    v = model.n_landmarks
    moves, first_look, update_ms, fit_ms = [], [], [], []
    looks = {name: [] for name in INSPECT}
    for it in items[seed_n:]:
        grey, truth = to_grey(it.load_image()), it.points
        lo, hi = truth.min(0), truth.max(0)
        tol = threshold * np.hypot(*(hi - lo))
        res = model.fit(grey, "auto", history=False, off_fraction=threshold)
        fit_ms.append(res.fit_ms)
        err = np.linalg.norm(res.points - truth, axis=1)
        first_look.append(int((err > tol).sum()))
        for name, rule in INSPECT.items():
            if name == "all" or res.confidence is not None:
                looks[name].append(inspect(model, grey, truth, tol, res, rule, per_round))
        moves.append(looks["all"][-1][1])
        t = time.perf_counter()
        model.update(grey, truth)
        update_ms.append((time.perf_counter() - t) * 1e3)
    n = len(moves)
    return dict(images=n, landmarks=v, no_move=1 - sum(moves) / (n * v),
                no_move_first=1 - sum(first_look) / (n * v), moves=np.mean(moves),
                update_med=np.median(update_ms), update_max=np.max(update_ms),
                fit_med=np.median(fit_ms), seed_train_s=train_s,
                looks={k: np.asarray(x, float) for k, x in looks.items() if x},
                off_first=np.mean(first_look))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", choices=sorted(SETS), default=["wings", "ceph", "faces"])
    ap.add_argument("--seed", type=int, default=10, help="images annotated by hand first")
    ap.add_argument("--per-round", type=int, default=2,
                    help="landmarks the person moves before each re-fit")
    ap.add_argument("--threshold", type=float, default=0.02,
                    help="move a landmark farther than this x bounding-box diagonal "
                         "(a fraction: 0.02 is 2 %%)")
    args = ap.parse_args(argv)
    rows = []
    for name in args.sets:
        cfg = SETS[name]
        if not cfg["folder"].is_dir():
            print(f"{name}: {cfg['folder']} not found, skipped", file=sys.stderr)
            continue
        r = simulate(cfg["folder"], face=cfg["face"], seed_n=args.seed,
                     threshold=args.threshold, limit=cfg["limit"], per_round=args.per_round)
        rows.append((name, r))
        print(f"{name}: done ({r['images']} images)", file=sys.stderr, flush=True)
    print(f"\nAnnotation effort, GSM HoG, seeded with {args.seed} images, a landmark is moved "
          f"when farther than {C.pct(args.threshold, None)} % of the bounding-box diagonal; "
          f"pin-and-refit moves the {args.per_round} worst, re-fits, repeats; no move: share "
          "of the landmarks\n")
    print("\n".join(C.md_head(["set", "images after seed", "landmarks",
                                "no move, pin-and-refit (%)", "no move, hand-fix all (%)",
                                "moves / image", "update ms (median / max)",
                                "fit ms (median)"], "l" * 8)))
    for name, r in rows:
        print(C.md_row([name, r["images"], r["landmarks"], C.pct(r["no_move"], 1),
                        C.pct(r["no_move_first"], 1), f"{r['moves']:.2f}",
                        f"{r['update_med']:.0f} / {r['update_max']:.0f}",
                        f"{r['fit_med']:.1f}"]))
    print("\nInspecting only the flagged landmarks (confidence of each fit and re-fit); "
          "per image: looked at, moved, off and missed; off after the first fit\n")
    print("\n".join(C.md_head(["set", "person looks at", "looked at / image (% of landmarks)",
                                "moved / image", "missed off / image",
                                "missed (% of off in the first fit)",
                                "off in the first fit / image"], "l" * 7)))
    for name, r in rows:
        for rule, x in r["looks"].items():
            seen, moved, missed = x.mean(0)
            share = 100 * x[:, 2].sum() / max(r["off_first"] * len(x), 1e-9)
            print(C.md_row([name, rule, f"{seen:.2f} ({100 * seen / r['landmarks']:.0f})",
                            f"{moved:.2f}", f"{missed:.2f}", f"{share:.1f}",
                            f"{r['off_first']:.2f}"]))


if __name__ == "__main__":
    main()
