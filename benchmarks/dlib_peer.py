"""dlib's shape predictor (Kazemi & Sullivan 2014 ERT cascade) as a peer row, benchmark only.

dlib comes from the ``dlib-bin`` wheel (``benchmarks/requirements.txt``); it is installed
into the running interpreter's environment when missing, and the row is skipped with a note
if that fails. The predictor is trained on the same training faces, each from its
Viola-Jones box (the detection containing the face; ``run.py`` decides what a face the
detector missed gets, see ``DLIB_ROWS`` there), and tested on the same faces from the same
boxes as every other row.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: dlib 20's defaults (``shape_predictor_training_options``), threads pinned to 2.
FULL_OPTIONS = dict(cascade_depth=10, tree_depth=4, num_trees_per_cascade_level=500,
                    oversampling_amount=20, num_threads=2, nu=0.1, feature_pool_size=400)
#: The tiny training used by ``--quick`` to prove the code path.
QUICK_OPTIONS = dict(FULL_OPTIONS, oversampling_amount=2)


def ensure_dlib():
    """Import dlib, installing ``dlib-bin`` with pip if needed. Returns ``(dlib, note)``."""
    try:
        import dlib
        return dlib, ""
    except ImportError:
        pass
    req = Path(__file__).with_name("requirements.txt")
    spec = next((line.strip() for line in req.read_text().splitlines()
                 if line.strip().startswith("dlib")), "dlib-bin")
    print(f"dlib missing: installing {spec} with pip ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", spec], check=True,
                       timeout=900)
        import dlib
        return dlib, f"installed {spec}"
    except Exception as exc:  # noqa: BLE001 - any failure means: skip the row
        return None, f"dlib unavailable ({type(exc).__name__}: {exc})"


def _u8(grey):
    return np.ascontiguousarray(np.clip(np.asarray(grey) * 255.0 + 0.5, 0, 255).astype(np.uint8))


def _rect(dlib, box):
    x0, y0, x1, y1 = (int(round(float(b))) for b in box)
    return dlib.rectangle(x0, y0, x1, y1)


def train_predictor(dlib, samples, boxes, options, path):
    """Train and save a shape predictor; returns ``(seconds, size_mb)``.

    Parameters
    ----------
    samples : list of Sample
    boxes : list of (4,) arrays
        The face box of each sample ``(x0, y0, x1, y1)``.
    options : dict
        ``shape_predictor_training_options`` fields.
    path : Path
        Where the trained predictor is written (dlib's own format).
    """
    opts = dlib.shape_predictor_training_options()
    for k, val in options.items():
        setattr(opts, k, val)
    opts.be_verbose = False
    images, objects = [], []
    for s, box in zip(samples, boxes):
        parts = [dlib.point(int(round(x)), int(round(y))) for x, y in s.points]
        images.append(_u8(s.grey))
        objects.append([dlib.full_object_detection(_rect(dlib, box), parts)])
    t0 = time.perf_counter()
    predictor = dlib.train_shape_predictor(images, objects, opts)
    seconds = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    predictor.save(str(path))
    return seconds, path.stat().st_size / 1e6


def load_predictor(dlib, path):
    return dlib.shape_predictor(str(path))


def fit(dlib, predictor, grey_u8, box):
    """Landmarks ``(v, 2)`` and the time of the prediction alone (ms)."""
    rect = _rect(dlib, box)
    t0 = time.perf_counter()
    shape = predictor(grey_u8, rect)
    ms = (time.perf_counter() - t0) * 1e3
    pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], float)
    return pts, ms


to_u8 = _u8
