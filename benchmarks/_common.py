"""Shared pieces of the benchmark harness: data splits, caches, metrics rows, tables.

Everything cached lives in ``benchmarks/cache/`` (git-ignored): Viola-Jones boxes keyed by
image path (:func:`sample_key`), and trained models keyed by a hash of what determines them (suite, the
exact training files, training parameters, method, package version).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_gsm.io import load_dataset, to_grey
from napari_gsm.model import Sample

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared beside the repo


def package_version():
    try:
        from importlib.metadata import version
        return version("napari-gsm")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


def code_digest():
    """A short hash of the core package's source (``src/napari_gsm`` without ``ui/`` and
    ``distributed/``, which the benchmarks' in-process training does not run), for model
    cache keys: a model trained by other code is never read back."""
    h = hashlib.sha256()
    src = HERE.parent / "src" / "napari_gsm"
    skip = {"ui", "distributed"}
    for f in sorted(p for p in src.rglob("*.py") if not skip & set(p.relative_to(src).parts)):
        h.update(f.relative_to(src).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


# -- data ------------------------------------------------------------------------------
def sample_key(path):
    """An image's name for caches and cache keys: its path under :data:`DATA`, else absolute.

    Not the file name: ``faces-300w/train`` and ``test-lfpw`` share 200 file names of
    different images (both come from LFPW's numbering).
    """
    path = Path(path).resolve()
    try:
        return path.relative_to(DATA.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def load_samples(items):
    """``Sample`` (name = :func:`sample_key`, grey float32, points) for dataset items."""
    return [Sample(sample_key(it.image_path), to_grey(it.load_image()),
                   np.asarray(it.points, float)) for it in items]


def split_items(folder, test_fraction=0.25, seed=0):
    """A fixed, seeded train/test split of one annotated folder: ``(train, test)`` items."""
    items = sorted(load_dataset(folder).annotated, key=lambda it: it.image_path.name)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    n_test = max(1, int(round(test_fraction * len(items))))
    test = sorted(order[:n_test])
    train = sorted(order[n_test:])
    return [items[i] for i in train], [items[i] for i in test]


def tuning_items():
    """The training faces settings may be tuned on: ``faces-300w/train`` without the seeded
    10 % that the ``faces-heldout`` suite tests on."""
    return split_items(DATA / "faces-300w/train", 0.1, seed=0)[0]


def subset(items, n, seed=0):
    """``n`` items drawn without replacement (seeded), in file-name order; all if ``n`` is None."""
    if n is None or n >= len(items):
        return list(items)
    idx = np.sort(np.random.default_rng(seed).choice(len(items), n, replace=False))
    return [items[i] for i in idx]


def files_digest(samples):
    """A short hash of the training set (names and landmarks), for cache keys."""
    h = hashlib.sha256()
    for s in samples:
        h.update(s.name.encode())
        h.update(np.round(np.asarray(s.points, float), 3).tobytes())
    return h.hexdigest()[:16]


def key_of(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


# -- Viola-Jones boxes -----------------------------------------------------------------
class BoxCache:
    """Viola-Jones detections per image (``Sample.name``, a path), stored as JSON.

    Every detection is kept (largest first), so a test image uses the one
    :meth:`napari_gsm.init.StartModel.choose_face` picks, as
    :meth:`napari_gsm.model.Model.start` would, and a training image the box that contains
    its face. ``detector``: anything with ``detect(grey) -> (n, 4)`` (default: the core's
    :class:`~napari_gsm.init.FaceDetector`).
    """

    def __init__(self, path, detector=None):
        self.path = Path(path)
        self.boxes = json.loads(self.path.read_text()) if self.path.exists() else {}
        self._detector = detector
        self.computed = 0

    def get(self, sample):
        if sample.name not in self.boxes:
            if self._detector is None:
                from napari_gsm.init import FaceDetector
                self._detector = FaceDetector()
            self.boxes[sample.name] = np.asarray(self._detector.detect(sample.grey)).tolist()
            self.computed += 1
        return np.asarray(self.boxes[sample.name], float).reshape(-1, 4)

    def save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.boxes))
        tmp.replace(self.path)


def matching_box(boxes, points):
    """The detection containing the shape's centroid, else None."""
    c = np.nanmean(points, 0)
    for b in boxes:
        if b[0] <= c[0] <= b[2] and b[1] <= c[1] <= b[3]:
            return b
    return None


_FLUSH = None


def flush_caches():
    """Stream 64 MB (twice the L3 cache here) through the caches before a timed fit.

    Methods fit each image in turn; without this, a method run right after a similar one
    (GSM HoG after GSM grey) inherits a warm cache and one run after CLM a cold one, which
    moved the time ratios between rows by about 5 %. Now every fit starts cold, as it does
    in use (an image is decoded, napari draws, between two fits).
    """
    global _FLUSH
    if _FLUSH is None:
        _FLUSH = np.zeros(64 * 2**20 // 8)
    _FLUSH += 1.0


# -- percent ---------------------------------------------------------------------------
def pct(fraction, decimals=2, sign=False):
    """A fraction printed in percent, the one place the benchmarks convert.

    :mod:`napari_gsm.evaluate` computes normalised errors (NME), AUCs and failure rates as
    fractions (0.0516); the benchmarks compute in fractions too and print them, like any
    other share, as the percentages people read ("5.16"), as the CLI does. ``decimals``
    places (None: as few as needed, for a cut-off: 0.08 -> "8"); ``sign``: always a sign
    (changes). "n/a" when there is no number.
    """
    if fraction is None or not np.isfinite(fraction):
        return "n/a"
    spec = ("+" if sign else "") + ("g" if decimals is None else f".{decimals}f")
    return format(100.0 * float(fraction), spec)


# -- rows and tables -------------------------------------------------------------------
@dataclass
class Row:
    """One method's results on one suite."""

    method: str
    features: str
    errors: list = field(default_factory=list)
    fit_ms: list = field(default_factory=list)
    iters: list = field(default_factory=list)
    train_s: float | None = None
    size_mb: float | None = None
    note: str = ""

    def cells(self, cutoff=0.08):
        from napari_gsm.evaluate import summarise
        s = summarise(self.errors, cutoff)
        f = lambda x, fmt: "n/a" if x is None or not np.isfinite(x) else fmt.format(x)  # noqa: E731
        return [
            self.method,
            self.features,
            pct(s["mean"]),
            pct(s["median"]),
            pct(s["auc"], 1),
            pct(s["failure_rate"], 1),
            f(float(np.median(self.fit_ms)) if self.fit_ms else None, "{:.1f}"),
            f(float(np.mean(self.iters)) if self.iters else None, "{:.1f}"),
            f(self.train_s, "{:.1f}"),
            f(self.size_mb, "{:.2f}"),
        ]

    @property
    def median_ms(self):
        return float(np.median(self.fit_ms)) if self.fit_ms else float("nan")


def md_row(cells):
    """One row of a Markdown table."""
    return "| " + " | ".join(map(str, cells)) + " |"


def md_head(head, align=None):
    """The header and separator lines of a Markdown table; ``align`` has one letter per
    column, ``l`` or ``r`` (default: the first column left, the numbers after it right)."""
    align = align or "l" + "r" * (len(head) - 1)
    return [md_row(head), "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]


def header(cutoff=0.08):
    """The column names of :func:`markdown_table`."""
    at = f"@{pct(cutoff, None)} %"
    return ["method", "features", "mean NME (%)", "median NME (%)", f"AUC{at} (%)",
            f"failures {at} (%)", "median fit_ms", "mean iterations", "training s", "model MB"]


def markdown_table(rows, cutoff=0.08):
    head = header(cutoff)
    lines = md_head(head, "ll" + "r" * (len(head) - 2))
    lines += [md_row(r.cells(cutoff)) for r in rows]
    return "\n".join(lines)


def run_measured(cmd, env, mark=None):
    """Run a command (a subprocess, as a user runs it) and measure it.

    Returns a dict: ``wall`` seconds, ``rss_mb`` the command's own peak RSS (its process:
    with ``--workers`` the local cluster's scheduler runs in it, the workers do not),
    ``tree_mb`` the peak RSS of it and its children together, ``cpu`` its CPU seconds,
    ``cpu_at_mark`` its CPU seconds when ``mark()`` first returned True (None if never),
    and ``stdout``. Raises RuntimeError with the end of stderr if the command fails.
    """
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    ps = psutil.Process(proc.pid)
    peak = {"client": 0, "tree": 0, "cpu": 0.0, "cpu_at_mark": None}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                rss = ps.memory_info().rss
                cpu = ps.cpu_times()
                tree = rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            except psutil.Error:
                break
            peak["client"] = max(peak["client"], rss)
            peak["tree"] = max(peak["tree"], tree)
            peak["cpu"] = cpu.user + cpu.system
            if peak["cpu_at_mark"] is None and mark is not None and mark():
                peak["cpu_at_mark"] = peak["cpu"]
            stop.wait(0.02)

    watcher = threading.Thread(target=sample)
    watcher.start()
    stdout, err = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{err.decode()[-2000:]}")
    return {"wall": wall, "rss_mb": peak["client"] / 2**20, "tree_mb": peak["tree"] / 2**20,
            "cpu": peak["cpu"], "cpu_at_mark": peak["cpu_at_mark"], "stdout": stdout}
