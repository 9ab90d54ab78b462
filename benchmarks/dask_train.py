"""Training in this process vs on Dask workers, timed as a user runs the command.

    .venv/bin/python benchmarks/dask_train.py [--quick] [--methods gsm gsm-cr]
        [--modes in-process w1 w2] [--copies 4] [--markdown FILE]

Trains GSM HoG and GSM-CR HoG with the face detector (as the ``faces`` suite does) on the
2,012 training faces by running ``napari-gsm train faces-300w/train -o MODEL --json
--face-detector [--method gsm-cr] [--workers N]`` in a subprocess: in process, with
``--workers 1`` and with ``--workers 2``. Per row: wall time of the command (cluster
start-up included), images/s, speed-up over in-process, the client's peak RSS (the
command's own process; a local cluster's scheduler runs in it, its workers do not) and the
peak RSS of the command with its workers. Then, with ``--copies K``, the same command with
``--workers 2`` on the training folder listed K times (K x 2,012 images): the client's peak
memory must not grow with the number of images. Each distributed model is compared with
the in-process one (largest relative difference of the detectors' spectra and of the
cascade's matrices). The machine's load average is printed with every run: other jobs on
the cores make every number slower and the speed-ups smaller.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

TRAIN = C.DATA / "faces-300w/train"
MODES = {"in-process": [], "w1": ["--workers", "1"], "w2": ["--workers", "2"]}
LABELS = {"in-process": "in-process", "w1": "`--workers 1`", "w2": "`--workers 2`"}
METHODS = {"gsm": "GSM HoG", "gsm-cr": "GSM-CR HoG"}


def log(*a):
    print(*a, flush=True)


def training_folder(quick, tmp):
    """The training faces as given to the command: the folder, or (quick) a folder of links
    to a seeded 300 of them and their landmarks."""
    if not quick:
        return TRAIN
    folder = Path(tmp) / "train"
    folder.mkdir()
    items = C.subset(sorted(C.load_dataset(TRAIN).annotated,
                            key=lambda it: it.image_path.name), 300, seed=0)
    for it in items:
        (folder / it.image_path.name).symlink_to(it.image_path)
        (folder / it.pts_path.name).symlink_to(it.pts_path)
    return folder


def run_train(exe, folders, method, extra, out):
    """One training command; the measurements and its JSON summary."""
    cmd = exe + ["train", *map(str, folders), "-o", str(out), "--json", "--face-detector",
                 "--method", method] + extra
    load = os.getloadavg()[0]
    run = C.run_measured(cmd, dict(os.environ))
    return dict(run, load=load, doc=json.loads(run["stdout"]))


def difference(a, b):
    """Largest relative difference of the detectors' spectra and the cascade's matrices."""
    with np.load(a) as x, np.load(b) as y:
        out = {}
        for key in ("det_S", "state_cascade_R"):
            if key in x.files:
                out[key] = float(np.abs(x[key] - y[key]).max() / np.abs(x[key]).max())
        return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="development run: 300 training faces")
    p.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=sorted(METHODS))
    p.add_argument("--modes", nargs="+", choices=sorted(MODES), default=list(MODES))
    p.add_argument("--copies", type=int, default=4,
                   help="the memory rows list the training folder this many times with "
                   "--workers 2 (0: no memory rows; default 4)")
    p.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    args = p.parse_args(argv)

    exe = [sys.executable, "-m", "napari_gsm.cli"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = training_folder(args.quick, tmp)
        n = len(C.load_dataset(folder).annotated)
        for method in args.methods:
            models = {}
            for mode in args.modes:
                out = Path(tmp) / f"{method}-{mode}.npz"
                r = run_train(exe, [folder], method, MODES[mode], out)
                models[mode] = out
                r.update(method=method, mode=mode, n=n)
                if mode != "in-process" and "in-process" in models:
                    r["diff"] = difference(models["in-process"], out)
                rows.append(r)
                log(f"  {METHODS[method]:<11} {mode:<10} {n} images {r['wall']:7.1f} s, "
                    f"client {r['rss_mb']:.0f} MB, with workers {r['tree_mb']:.0f} MB, "
                    f"load {r['load']:.1f} {r.get('diff', '')}")
            for k in ([1, args.copies] if args.copies > 1 else []):
                if k == 1 and "w2" in args.modes:
                    continue  # measured above
                out = Path(tmp) / f"{method}-x{k}.npz"
                r = run_train(exe, [folder] * k, method, MODES["w2"], out)
                r.update(method=method, mode="w2", n=n * k, copies=k)
                rows.append(r)
                log(f"  {METHODS[method]:<11} w2 x{k:<7} {n * k} images {r['wall']:7.1f} s, "
                    f"client {r['rss_mb']:.0f} MB, with workers {r['tree_mb']:.0f} MB, "
                    f"load {r['load']:.1f}")
    text = table(rows, args.quick)
    log("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


def table(rows, quick):
    head = ["model", "run", "images", "wall s", "images/s", "speed-up", "client peak RSS MB",
            "with workers MB", "load avg", "vs in-process (max rel. diff)"]
    lines = ["### Training on Dask: faces-300w/train" + (" — QUICK RUN (300 faces, not a "
                                                         "result)" if quick else ""), "",
             *C.md_head(head, "ll" + "r" * 7 + "l")]
    base = {r["method"]: r["wall"] for r in rows if r["mode"] == "in-process"}
    for r in rows:
        speed = f"{base[r['method']] / r['wall']:.2f}x" if r["method"] in base else "-"
        diff = ", ".join(f"{k} {v:.1e}" for k, v in r.get("diff", {}).items()) or "-"
        lines.append(C.md_row([METHODS[r["method"]], LABELS[r["mode"]], f"{r['n']:,}",
                               f"{r['wall']:.1f}", f"{r['n'] / r['wall']:.1f}", speed,
                               f"{r['rss_mb']:.0f}", f"{r['tree_mb']:.0f}",
                               f"{r['load']:.1f}", diff]))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
