"""How far GSM-CR's simulated prior starts should spread: cross-validation on training images.

GSM-CR learns each level from virtual starts drawn like the real ones; for prior starts
their spread is ``spread`` x the prior placement's measured spread
(:data:`napari_gsm.methods.cascade_train.SPREAD`). This script is the measurement behind its
default: 5-fold cross-validation on the *training* part of the wings and X-ray suites (the
benchmark's test images are never read), GSM fitted from the same prior starts for
reference, several cascade seeds per spread because a few dozen images make one seed noisy::

    .venv/bin/python benchmarks/spread_cv.py                  # wings and ceph, ~2 minutes
    .venv/bin/python benchmarks/spread_cv.py --sets wings --spreads 1.5 2 --seeds 2

Prints per set and spread, in % of the bounding-box diagonal: the mean NME over the
held-out folds for each seed, their average, the median and worst image; and on how many
images GSM-CR beats GSM (first seed).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402
from napari_gsm.evaluate import nme  # noqa: E402
from napari_gsm.methods.cascade_train import train_cascade  # noqa: E402
from napari_gsm.model import TrainParams, train  # noqa: E402

SETS = {"wings": C.DATA / "wings/train", "ceph": C.DATA / "ceph/train"}


def _errors(model, samples):
    out = []
    for s in samples:
        start = model.starts.from_prior(model.shape.s0, s.grey.shape)
        r = model.fit(s.grey, init="points", points=start, history=False)
        out.append(nme(r.points, s.points, "diagonal"))
    return out


def cross_validate(folder, spreads, seeds, folds=5):
    """Held-out NME ``{'gsm': (n,), spread: (n_seeds, n)}`` over ``folds`` folds."""
    train_items, _ = C.split_items(folder)  # the benchmark's split; its test part unused
    samples = C.load_samples(train_items)
    n = len(samples)
    parts = np.array_split(np.random.default_rng(1).permutation(n), folds)
    errs = {"gsm": []}
    errs.update({sp: [[] for _ in seeds] for sp in spreads})
    for part in parts:
        held = [samples[i] for i in part]
        fit_on = [samples[i] for i in range(n) if i not in set(part.tolist())]
        base = train([(s.grey, s.points) for s in fit_on], "gsm", params=TrainParams())
        errs["gsm"] += _errors(base, held)
        for sp in spreads:
            for j, seed in enumerate(seeds):
                m = copy.copy(base)
                m.method = "gsm-cr"
                m.state = train_cascade(m, fit_on, init="prior", spread=sp, seed=seed)
                errs[sp][j] += _errors(m, held)
    return {k: np.asarray(v) for k, v in errs.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--spreads", nargs="+", type=float, default=[1.0, 1.5, 2.0, 2.5])
    ap.add_argument("--seeds", type=int, default=4, help="cascade seeds per spread")
    args = ap.parse_args(argv)
    seeds = list(range(args.seeds))
    print("| set | spread | mean NME (%) per seed | average (%) | median (%) | worst (%) | "
          "better than GSM |")
    print("|---|---|---|---|---|---|---|")
    for name in args.sets:
        e = cross_validate(SETS[name], args.spreads, seeds)
        g = e["gsm"]
        print(f"| {name} | GSM | {C.pct(g.mean(), 3)} | {C.pct(g.mean(), 3)} | "
              f"{C.pct(np.median(g), 3)} | {C.pct(g.max(), 3)} | - |")
        for sp in args.spreads:
            a = e[sp]
            per_seed = " / ".join(C.pct(x, 3) for x in a.mean(1))
            print(f"| {name} | {sp:g} | {per_seed} | {C.pct(a.mean(), 3)} | "
                  f"{C.pct(np.median(a), 3)} | {C.pct(a.max(), 3)} | "
                  f"{int((a[0] < g).sum())}/{len(g)} |", flush=True)


if __name__ == "__main__":
    main()
