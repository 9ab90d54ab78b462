"""Tracking a video vs fitting every frame from the face detector, in one command.

    .venv/bin/python benchmarks/tracking.py [--quick] [--frames 30] [--markdown FILE]
    .venv/bin/python benchmarks/tracking.py --choose      # how "degraded" was chosen

Sequences are made from the LFPW test faces: each face's image is moved by a smooth random
similarity (rotation, scale and translation whose velocities are a smooth random walk) and
its brightness changes, frame by frame; the true landmarks move with the same transform.
The frames are ``uint8`` colour, as a video decoder gives them. A GSM HoG model trained on
the 2,012 training faces with the face detector (cached like ``run.py``'s) fits them:

- *per frame*: ``Model.fit(frame)`` on every frame, started from the face detector;
- *tracked*: ``napari_gsm.track(model, frames)``.

``--choose`` runs the same sequences made from 200 held-out *training* faces, with a model
trained on the other 1,812, and prints how well each candidate signal of a degraded tracked
fit tells the frames worth re-fitting, and what each re-fit rule gives: the measurements
behind :func:`napari_gsm.track.degraded` (the test faces play no part in it).
See ``benchmarks/README.md`` for the columns.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from napari_gsm import track  # noqa: E402
from napari_gsm.evaluate import nme  # noqa: E402
from napari_gsm.model import TrainParams  # noqa: E402
from run import base_model  # noqa: E402

TRAIN = C.DATA / "faces-300w/train"
TEST = C.DATA / "faces-300w/test-lfpw"
FAIL = 0.08


def log(*a):
    print(*a, flush=True)


# -- sequences -------------------------------------------------------------------------
def _smooth_walk(rng, n, step, keep=0.8, pull=0.05):
    """A smooth random walk of ``n`` values starting at 0: its velocity is an AR(1) process
    (``keep``) with innovations of std ``step``, and a weak ``pull`` back towards 0 keeps the
    object in view."""
    x = np.zeros(n)
    vel = 0.0
    for t in range(1, n):
        vel = keep * vel + rng.normal(0, step)
        x[t] = (1 - pull) * x[t - 1] + vel
    return x


def make_sequence(image, points, n_frames, rng):
    """Frames ``(T, H, W, C)`` uint8 and true landmarks ``(T, v, 2)`` of one moving face.

    The motion is a similarity about the face's centre: translation, rotation and log
    scale each a :func:`_smooth_walk` (velocity innovations 1 % of the face's width,
    0.5 degree and 0.5 %), and the brightness a gain and an offset drifting linearly to
    a random end value (gain 0.6-1.4, offset -25..25 grey levels). Frame 0 is the image
    itself.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    h, w = image.shape[:2]
    c = np.nanmean(points, 0)
    width = np.ptp(points[:, 0])
    tx = _smooth_walk(rng, n_frames, 0.01 * width)
    ty = _smooth_walk(rng, n_frames, 0.01 * width)
    ang = _smooth_walk(rng, n_frames, np.deg2rad(0.5))
    logk = _smooth_walk(rng, n_frames, 0.005)
    ramp = np.linspace(0, 1, n_frames)
    gain = 1 + ramp * rng.uniform(-0.4, 0.4)
    offset = ramp * rng.uniform(-25, 25)
    frames = np.empty((n_frames, h, w, image.shape[2]), np.uint8)
    truth = np.empty((n_frames,) + points.shape)
    for t in range(n_frames):
        k = np.exp(logk[t])
        R = k * np.array([[np.cos(ang[t]), -np.sin(ang[t])], [np.sin(ang[t]), np.cos(ang[t])]])
        M = np.hstack([R, (c + [tx[t], ty[t]] - R @ c)[:, None]])
        warped = cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT101)
        frames[t] = np.clip(warped.reshape(h, w, -1) * gain[t] + offset[t], 0, 255)
        truth[t] = points @ M[:, :2].T + M[:, 2]
    return (frames[..., 0] if frames.shape[3] == 1 else frames), truth


def load_faces(items):
    """``(name, colour image, points)`` per dataset item."""
    return [(it.image_path.name, np.asarray(it.load_image()), np.asarray(it.points, float))
            for it in items]


def face_model(samples, suite, use_cache=True):
    """GSM HoG with the face detector, trained on ``samples`` (cached like run.py's)."""
    return base_model(suite, samples, TrainParams(face_detector=True), use_cache)[0]


# -- the two ways to fit a sequence ----------------------------------------------------
class Row:
    """Per-frame errors and times of one way of fitting the sequences."""

    def __init__(self, name):
        self.name = name
        self.errors, self.ms, self.cpu_ms = [], [], []
        self.first_ms = []  # every sequence's first frame
        self.fit_ms = []  # per frame: the fits of first frames alone (no detection)
        self.detections = self.restarts = self.frames = 0
        self.wall_s = 0.0

    def cells(self):
        e, ms = np.asarray(self.errors), np.asarray(self.ms)
        return [self.name, C.pct(e.mean()), C.pct(np.median(e)),
                C.pct((e > FAIL).mean(), 1), f"{np.median(ms):.2f}", f"{ms.mean():.2f}",
                f"{np.mean(self.cpu_ms):.2f}", f"{self.frames / self.wall_s:.0f}",
                f"{self.detections} ({self.detections / self.frames:.2f})",
                f"{self.restarts}"]


HEADER = ["", "mean NME (%)", "median NME (%)", f"failures @{C.pct(FAIL, None)} % (%)",
          "median ms/frame", "mean ms/frame", "mean CPU ms/frame", "frames/s",
          "detector calls (per frame)", "restarts"]


def table(rows):
    lines = C.md_head(HEADER) + [C.md_row(r.cells()) for r in rows]
    return "\n".join(lines)


def per_frame(model, frames, truth, row):
    """Every frame fitted from the face detector, timed as a user calls it."""
    for t, (frame, true) in enumerate(zip(frames, truth)):
        c0, t0 = time.process_time(), time.perf_counter()
        res = model.fit(frame, history=False)
        ms = (time.perf_counter() - t0) * 1e3
        row.cpu_ms.append((time.process_time() - c0) * 1e3)
        row.ms.append(ms)
        row.wall_s += ms / 1e3
        row.errors.append(nme(res.points, true))
        row.detections += "n_faces" in res.extra
        if t == 0:
            row.fit_ms.append(res.fit_ms)
        row.frames += 1


def tracked(model, frames, truth, row):
    """The sequence tracked; returns the TrackResult."""
    c0, t0 = time.process_time(), time.perf_counter()
    res = track(model, frames)
    row.wall_s += time.perf_counter() - t0
    cpu = (time.process_time() - c0) * 1e3
    row.cpu_ms += [cpu / len(frames)] * len(frames)  # CPU time is measured per sequence
    row.ms += res.frame_ms
    row.first_ms.append(res.frame_ms[0])
    row.errors += [nme(p, q) for p, q in zip(res.points, truth)]
    row.detections += res.n_detections
    row.restarts += len(res.restarted)
    row.frames += len(frames)
    return res


# -- choosing what "degraded" means (held-out training faces) --------------------------
def _auc(score, bad):
    """Probability that a bad frame scores lower than a good one (1: a perfect signal)."""
    from scipy.stats import mannwhitneyu
    if bad.all() or not bad.any():
        return float("nan")
    u = mannwhitneyu(score[bad], score[~bad]).statistic
    return 1 - u / (bad.sum() * (~bad).sum())


def choose(args):
    """Held-out training faces: signals of a failed tracked fit, and each re-fit rule."""
    import importlib

    from napari_gsm.quality import shape_distance, shape_distance_limit
    # the module: the package's ``track`` attribute is the function
    T = importlib.import_module("napari_gsm.track")

    items = sorted(C.load_dataset(TRAIN).annotated, key=lambda it: it.image_path.name)
    held = set(np.random.default_rng(7).permutation(len(items))[:200].tolist())
    model = face_model(C.load_samples([it for i, it in enumerate(items) if i not in held]),
                       "faces-trackheld", not args.no_cache)
    faces = load_faces([items[i] for i in sorted(held)])[:args.sequences]
    ref = model.summary["score_ref"]
    # Re-fit below these score ratios (0: only when not converged, unlike the training
    # shapes or outside; inf: every frame).
    rules = [0.0, 0.5, 0.6, 0.7, 0.8, 0.9, np.inf]
    rows = {"per frame": Row("per frame (detector)")}
    rows.update({r: Row(f"tracked, re-fit below score ratio {r:g}") for r in rules})
    rows[np.inf].name = "tracked, every frame also re-fitted (better kept)"
    signals = {"score ratio": [], "-shape distance": [], "-iterations": [], "bad": []}
    log(f"{len(faces)} sequences of {args.frames} frames from held-out training faces "
        f"(model: the other {len(items) - len(held)}); load: {os.getloadavg()[0]:.1f}")
    default = T.TRACK_SCORE_RATIO
    try:
        for i, (_, image, points) in enumerate(faces):
            frames, truth = make_sequence(image, points, args.frames,
                                          np.random.default_rng(10_000 + i))
            per_frame(model, frames, truth, rows["per frame"])
            for r in rules:
                T.TRACK_SCORE_RATIO = r
                res = tracked(model, frames, truth, rows[r])
                if r == 0.0:  # the tracked fits themselves (hardly any re-fit)
                    for f, q in zip(res.fits[1:], truth[1:]):
                        signals["score ratio"].append(f.extra["score"] / ref)
                        signals["-shape distance"].append(-shape_distance(model, f.points))
                        signals["-iterations"].append(-f.n_iter)
                        signals["bad"].append(nme(f.points, q) > FAIL)
            if (i + 1) % 20 == 0:
                log(f"  {i + 1}/{len(faces)} sequences")
    finally:
        T.TRACK_SCORE_RATIO = default
    bad = np.asarray(signals.pop("bad"))
    ratio = np.asarray(signals["score ratio"])
    dist = -np.asarray(signals["-shape distance"])
    lines = [f"### Choosing what \"degraded\" means — held-out training faces"
             f"{' (QUICK RUN)' if args.quick else ''}", "",
             f"{len(faces)} sequences x {args.frames} frames from {len(held)} training faces "
             f"held out of a GSM HoG model trained on the other {len(items) - len(held)}. "
             f"Load average at the end: {os.getloadavg()[0]:.1f}.", "",
             table(rows.values()), "",
             f"Tracked fits (score ratio 0), {bad.sum()} of {len(bad)} "
             f"failed (NME > {C.pct(FAIL, None)} %). How well each signal tells them (ROC "
             "AUC: the probability that a failed fit scores lower than a good one): "
             + ", ".join(f"{k} {_auc(np.asarray(v, float), bad):.3f}"
                         for k, v in signals.items()) + ".",
             f"Shape distance: largest {dist.max():.1f}, the 99.9 % chi-square limit "
             f"{shape_distance_limit(model.n_landmarks):.1f}; 99th percentile of good fits "
             f"{np.percentile(dist[~bad], 99):.1f}, of failed fits "
             f"{np.percentile(dist[bad], 99) if bad.any() else float('nan'):.1f}.",
             "Score ratio below r: share of tracked fits flagged, and of those the share "
             "failed: " + ", ".join(
                 f"{r:g}: {C.pct((ratio < r).mean(), 1)} % / "
                 f"{C.pct(bad[ratio < r].mean() if (ratio < r).any() else None, 0)} %"
                 for r in (0.5, 0.6, 0.7, 0.8, 0.9)) + "."]
    return "\n".join(lines)


# -- the benchmark ---------------------------------------------------------------------
def benchmark(args):
    train_items = sorted(C.load_dataset(TRAIN).annotated, key=lambda it: it.image_path.name)
    test_items = sorted(C.load_dataset(TEST).annotated, key=lambda it: it.image_path.name)
    if args.quick:
        train_items = C.subset(train_items, 300, seed=0)
    test_items = C.subset(test_items, args.sequences, seed=0)
    log(f"loading {len(train_items)} training and {len(test_items)} test faces ...")
    model = face_model(C.load_samples(train_items), "faces", not args.no_cache)
    faces = load_faces(test_items)
    rows = [Row("per frame (detector every frame)"), Row("tracked (napari_gsm.track)")]
    frames, _ = make_sequence(faces[0][1], faces[0][2], 3, np.random.default_rng(0))
    track(model, frames)  # warm-up (imports, first allocations), not timed
    load = [os.getloadavg()[0]]
    for i, (_, image, points) in enumerate(faces):
        frames, truth = make_sequence(image, points, args.frames, np.random.default_rng(i))
        per_frame(model, frames, truth, rows[0])
        tracked(model, frames, truth, rows[1])
        if (i + 1) % 20 == 0 or i + 1 == len(faces):
            load.append(os.getloadavg()[0])
            log(f"  {i + 1}/{len(faces)} sequences (load average {load[-1]:.1f})")
    per, trk = rows
    lines = [f"### Tracking vs per-frame fitting{' — QUICK RUN' if args.quick else ''}", "",
             f"{len(faces)} sequences x {args.frames} frames made from the LFPW test faces "
             f"(smooth random similarity motion and a brightness drift), uint8 colour; GSM "
             f"HoG with the face detector trained on {len(train_items)} training faces; "
             f"normaliser: outer eye corners. napari-gsm {C.package_version()}, "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, one thread, load average "
             f"{min(load):.1f}-{max(load):.1f} (2 cores).", "", table(rows), "",
             f"- detector calls: {per.detections / max(trk.detections, 1):.1f}x fewer "
             "when tracked; frames/s: frames over the wall time of the calls "
             "(`Model.fit` per frame, `track` per sequence).",
             f"- tracked: a sequence's first frame (face detector and a full fit) "
             f"{np.mean(trk.first_ms):.1f} ms on average, the frames after it "
             f"{_later_mean(trk, args.frames):.2f} ms on average.",
             f"- load check: the per-frame fits of the first frames (the LFPW test images "
             f"unmoved, from the detector), fitting alone (`FitResult.fit_ms`), took "
             f"{np.median(per.fit_ms):.2f} ms (median): the fits whose median `run.py` "
             "reports for GSM HoG (benchmarks/README.md, measured on a quiet machine)."]
    return "\n".join(lines)


def _later_mean(row, n_frames):
    """Mean time of the frames after each sequence's first."""
    ms = np.asarray(row.ms).reshape(-1, n_frames)
    return float(ms[:, 1:].mean())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="development run: 300 training faces, 40 sequences of 20 frames")
    p.add_argument("--choose", action="store_true",
                   help="measure the signals and re-fit rules on held-out training faces")
    p.add_argument("--frames", type=int, help="frames per sequence (default 30, quick 20)")
    p.add_argument("--sequences", type=int,
                   help="sequences (default: all faces; quick: 40)")
    p.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    p.add_argument("--no-cache", action="store_true", help="retrain even if cached")
    args = p.parse_args(argv)
    args.frames = args.frames or (20 if args.quick else 30)
    args.sequences = args.sequences or (40 if args.quick else None)
    text = choose(args) if args.choose else benchmark(args)
    log("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
        log(f"\nwrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
