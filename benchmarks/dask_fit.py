"""Batch fitting in this process vs on Dask workers, timed as a user runs the command.

    .venv/bin/python benchmarks/dask_fit.py [--quick] [--repeat 2] [--baseline REV]

Fits the 224 LFPW test faces with GSM HoG and GSM-CR (trained on the 2,012 training faces
with the face detector, from the benchmark cache, see ``run.py``) by running
``napari-gsm fit MODEL test-lfpw -o OUT --json`` in a subprocess: in process, with
``--workers 1`` and with ``--workers 2``. Per row: wall time of the command (cluster
start-up included), images/s, speed-up over in-process, the steady rate once the first
image is back, the client's peak RSS (the command's own process; a local cluster's
scheduler runs in it, its workers do not) and the client's CPU seconds per image (the
part that does not shrink with more workers). ``--baseline REV`` adds the same three rows
for the code at git revision REV, run from an export of its ``src`` (its workers too). The
machine's load average is printed with every run: other jobs on the cores make every
number slower and the speed-ups smaller.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import run as R  # noqa: E402
from napari_gsm.distributed._dask import chunk_size  # noqa: E402
from napari_gsm.model import TrainParams  # noqa: E402

TEST = C.DATA / "faces-300w/test-lfpw"
TRAIN = C.DATA / "faces-300w/train"
MODES = {"in-process": [], "--workers 1": ["--workers", "1"], "--workers 2": ["--workers", "2"]}


def log(*a):
    print(*a, flush=True)


def models(quick):
    """``{label: model path}``: GSM HoG and GSM-CR on the training faces (cached)."""
    items = sorted(C.load_dataset(TRAIN).annotated, key=lambda it: it.image_path.name)
    if quick:
        items = C.subset(items, 300, seed=0)
    log(f"loading {len(items)} training faces (for the model cache key, and training) ...")
    samples = C.load_samples(items)
    base, base_path = R.base_model("faces", samples, TrainParams(face_detector=True), True)
    _, cr_path = R.method_model("faces", "gsm-cr", base, base_path, samples, True)
    return {"GSM HoG": base_path, "GSM-CR HoG": cr_path}, len(items)


def test_images(quick, folder):
    """The test faces as given to the command: the folder, or (quick) links to 60 of them."""
    if not quick:
        return TEST
    items = C.subset(sorted(C.load_dataset(TEST).annotated,
                            key=lambda it: it.image_path.name), 60, seed=0)
    folder.mkdir()
    for it in items:
        (folder / it.image_path.name).symlink_to(it.image_path)
    return folder


def run_fit(cmd, out, env):
    """Run one fit command writing to ``out``; wall seconds, the client's peak RSS (MB),
    its CPU seconds per image after the first one was written (start-up excluded), the
    peak RSS of the whole process tree (MB), and the command's JSON."""
    run = C.run_measured(cmd, env, mark=lambda: out.is_dir() and any(out.glob("*.pts")))
    doc = json.loads(run["stdout"])
    n = doc["totals"]["n_images"]
    cpu = ((run["cpu"] - run["cpu_at_mark"]) / (n - 1) if run["cpu_at_mark"] is not None
           else float("nan"))
    return run["wall"], run["rss_mb"], cpu, run["tree_mb"], doc


def baseline_tree(rev):
    """``src`` of git revision ``rev`` exported to a temporary folder (for PYTHONPATH)."""
    dest = Path(tempfile.mkdtemp(prefix="napari-gsm-baseline-"))
    archive = subprocess.run(["git", "-C", str(C.HERE.parent), "archive", rev, "src"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="development run: models on 300 training faces, 60 test faces")
    p.add_argument("--repeat", type=int, default=2,
                   help="runs per row, interleaved; the table shows the fastest (default 2)")
    p.add_argument("--baseline", metavar="REV",
                   help="also time the commands of git revision REV")
    p.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    args = p.parse_args(argv)

    paths, n_train = models(args.quick)
    exe = [sys.executable, "-m", "napari_gsm.cli"]
    env = dict(os.environ)
    modes = dict(MODES)
    if args.baseline:
        old_src = baseline_tree(args.baseline)
        for mode, extra in MODES.items():
            modes[f"{mode} ({args.baseline})"] = (extra, old_src)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        images = test_images(args.quick, Path(tmp) / "test")
        n_images = len(C.load_dataset(TEST).annotated) if not args.quick else 60
        for rep in range(args.repeat):
            for label, model in paths.items():
                for mode, extra in modes.items():
                    out = Path(tmp) / f"out-{rep}-{label}-{mode}".replace(" ", "_")
                    run_env = env
                    if isinstance(extra, tuple):  # the baseline revision's code
                        extra, old_src = extra
                        run_env = dict(env, PYTHONPATH=str(old_src))
                    load = os.getloadavg()[0]
                    wall, rss, cpu, tree, doc = run_fit(
                        exe + ["fit", str(model), str(images), "-o", str(out), "--json"]
                        + extra, out, run_env)
                    t = doc["totals"]
                    assert t["n_images"] == n_images, t
                    log(f"  [{rep + 1}/{args.repeat}] {label:<11} {mode:<22} {wall:6.1f} s, "
                        f"client {rss:.0f} MB, load {load:.1f}")
                    rows.setdefault((label, mode), []).append(dict(
                        wall=wall, rss=rss, tree=tree, cpu=cpu, load=load, doc=doc))
    text = table(rows, paths, n_images, n_train, args)
    log("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


def _per_image_ms(doc, key):
    return float(np.median([r.get(key, 0.0) for r in doc["images"]]))


def table(rows, paths, n_images, n_train, args):
    head = ["model", "run", "wall s", "images/s", "speed-up", "steady images/s",
            "client peak RSS MB", "client CPU ms/image", "load avg"]
    lines = [f"### Batch fitting: {n_images} LFPW test faces, models trained on {n_train} "
             "faces" + (" — QUICK RUN (not a result)" if args.quick else ""), "",
             *C.md_head(head, "ll" + "r" * 7)]
    costs = {}
    for label in paths:
        base = min(r["wall"] for r in rows[(label, "in-process")])
        for (lab, mode), runs in rows.items():
            if lab != label:
                continue
            best = min(runs, key=lambda r: r["wall"])
            t = best["doc"]["totals"]
            first = t.get("seconds_to_first_image")
            # the images that came back with the first: a task's chunk (this code's)
            k = (chunk_size(n_images, int(mode.split()[1])) if mode.startswith("--workers")
                 and mode in MODES else 1)
            steady = ((n_images - k) / (t["wall_seconds"] - first)
                      if first is not None and t["wall_seconds"] > first else float("nan"))
            lines.append(C.md_row([
                label, mode, f"{best['wall']:.1f}", f"{n_images / best['wall']:.1f}",
                f"{base / best['wall']:.2f}x", f"{steady:.1f}", f"{best['rss']:.0f}",
                f"{1e3 * best['cpu']:.1f}",
                f"{min(r['load'] for r in runs):.1f}-{max(r['load'] for r in runs):.1f}"]))
            if mode in MODES:
                costs[(label, mode)] = dict(best, steady=steady, first=first)
    lines += ["", "Wall: the whole command as a user runs it (start-up, cluster start-up, "
              "model on the workers, fitting, writing). Steady: images/s between the first "
              "and the last image back (not counting those that came with the first, a "
              "task's chunk of images). Client CPU: the command's own process per image once the "
              "first .pts is written (start-up excluded; with `--workers` this process also "
              "runs the local cluster's scheduler)."]
    for label in paths:
        one, two, here = (costs.get((label, m)) for m in ("--workers 1", "--workers 2",
                                                            "in-process"))
        if not (one and two and here):
            continue
        doc = here["doc"]
        fit_ms, read_ms = _per_image_ms(doc, "fit_ms"), _per_image_ms(doc, "read_ms")
        detect_ms = _per_image_ms(doc, "detect_ms")
        worker_s = 1.0 / one["steady"]           # one worker, one image, steady state
        client_s = two["cpu"]                    # the client's share, all in one process
        start_s = one["first"]
        lines += ["", f"**{label}**: per image (median) read {read_ms:.1f} ms, face "
                  f"detector {detect_ms:.1f} ms, fit {fit_ms:.1f} ms; one worker's steady "
                  f"rate {one['steady']:.1f} images/s ({1e3 * worker_s:.0f} ms per image); "
                  f"Dask's overhead with 1 worker: "
                  f"{C.pct(one['wall'] / here['wall'] - 1, 0, sign=True)} % of the wall time "
                  f"({one['first']:.1f} s to the first image), "
                  f"{C.pct(here['steady'] / one['steady'] - 1, 0, sign=True)} % steady; "
                  f"2 workers: {here['wall'] / two['wall']:.2f}x wall, "
                  f"{two['steady'] / here['steady']:.2f}x steady; client CPU "
                  f"{1e3 * client_s:.1f} ms per image."]
        est = ", ".join(f"N = {n}: {(start_s + 1e6 * max(worker_s / n, client_s)) / 3600:.1f} h"
                        for n in (1, 8, 32, 128))
        lines.append(f"1,000,000 images, T(N) = start-up + 10^6 x max({1e3 * worker_s:.0f} ms "
                     f"/ N, {1e3 * client_s:.1f} ms): {est} (the client's share caps the "
                     f"rate at {1 / client_s:.0f} images/s).")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
