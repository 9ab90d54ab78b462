"""Cross-validation of the re-fit prior scale for models trained on too few images to choose it.

Training chooses ``GSMParams.refit_scale`` on held-out images (:mod:`napari_gsm.refit`) once
there are 12 or more; below that it is ``REFIT_SCALE_DEFAULT``. This script measures that
default on *training* images only: for each set, several seeded draws of ``--n`` training
images train a GSM model (as a person's first few annotations would), and other training
images of the same split are fitted from the usual start; then each landmark (faces: 12 drawn
at random) is put at its truth, pinned, and the shape re-fitted with every scale of
``REFIT_SCALES``. Prints the mean error of the other landmarks after the re-fit relative to
the first fit (below 1: the pin helped them), per set and scale, and the scale whose worst
set is best::

    .venv/bin/python benchmarks/refit_cv.py
    .venv/bin/python benchmarks/refit_cv.py --sets wings ceph --draws 2
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from napari_gsm.features import Pyramid  # noqa: E402
from napari_gsm.geometry import shape_size  # noqa: E402
from napari_gsm.methods.gsm import fit_gsm  # noqa: E402
from napari_gsm.model import TrainParams, train  # noqa: E402
from napari_gsm.refit import REFIT_SCALES  # noqa: E402

SETS = {"wings": (C.DATA / "wings/train", False), "ceph": (C.DATA / "ceph/train", False),
        "faces": (C.DATA / "faces-300w/train", True)}
PINS_FACES = 12


def training_split(name):
    """The training part of the set's benchmark split (faces: the whole training folder)."""
    folder, face = SETS[name]
    if face:
        return sorted(C.load_dataset(folder).annotated, key=lambda it: it.image_path.name)
    return C.split_items(folder, 0.25, seed=0)[0]


def relative_errors(name, n_train, n_val, draw):
    """``(len(REFIT_SCALES),)`` mean others' error after / before, over one draw's cases."""
    items = training_split(name)
    rng = np.random.default_rng(draw)
    order = rng.permutation(len(items))
    train_s = C.load_samples([items[i] for i in order[:n_train]])
    val_s = C.load_samples([items[i] for i in order[n_train:n_train + n_val]])
    model = train([(s.grey, s.points) for s in train_s], "gsm",
                  params=TrainParams(face_detector=SETS[name][1]))
    before, after = [], [[] for _ in REFIT_SCALES]
    v = model.n_landmarks
    for s in val_s:
        pyramid = Pyramid(s.grey)
        first = fit_gsm(model, pyramid, model.start(s.grey)[0], history=False).points
        size = shape_size(s.points)
        ks = range(v) if v < 30 else rng.choice(v, PINS_FACES, replace=False)
        for k in ks:
            others = np.arange(v) != k
            pts = first.copy()
            pts[k] = s.points[k]
            before.append(np.linalg.norm(first[others] - s.points[others], axis=1).mean() / size)
            for j, scale in enumerate(REFIT_SCALES):
                params = replace(model.gsm_params, refit_scale=scale)
                r = fit_gsm(model, pyramid, pts, pinned=~others, params=params, history=False)
                after[j].append(np.linalg.norm(r.points[others] - s.points[others],
                                               axis=1).mean() / size)
    return np.mean(after, axis=1) / np.mean(before)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", choices=sorted(SETS), default=list(SETS))
    ap.add_argument("--n", type=int, default=10, help="training images per draw")
    ap.add_argument("--val", type=int, default=20, help="validation images per draw")
    ap.add_argument("--draws", type=int, default=3)
    args = ap.parse_args(argv)
    table = {}
    for name in args.sets:
        rel = [relative_errors(name, args.n, args.val, d) for d in range(args.draws)]
        table[name] = np.mean(rel, axis=0)
        print(f"{name}: done", file=sys.stderr, flush=True)
    print(f"\nOthers' mean error after a pinned re-fit / before (first fit), GSM HoG trained on "
          f"{args.n} training images, {args.val} other training images, {args.draws} draws\n")
    print("| refit_scale | " + " | ".join(table) + " | worst |")
    print("|---:|" + "---:|" * (len(table) + 1))
    worst = np.max(list(table.values()), axis=0)
    for j, scale in enumerate(REFIT_SCALES):
        print(f"| {scale:g} | " + " | ".join(f"{t[j]:.3f}" for t in table.values())
              + f" | {worst[j]:.3f} |")
    print(f"\nbest worst case: refit_scale = {REFIT_SCALES[int(np.argmin(worst))]:g}")


if __name__ == "__main__":
    main()
