"""Benchmark GSM against the CLM baseline, the other GSM variants and dlib, in one command.

    .venv/bin/python benchmarks/run.py [--suite faces|wings|ceph|all] [--methods ...]
                                       [--quick] [--markdown FILE]

Prints one table per suite (see benchmarks/README.md for the columns). All methods of a
suite run in one process, image by image side by side, so background load hits them alike;
timings are medians of ``FitResult.fit_ms`` (fit only: the face detector is run once per
image beforehand and cached). Trained models are cached in ``benchmarks/cache``.
"""

from __future__ import annotations

import os

# Single-threaded BLAS/FFT: timings comparable across methods and machines (set before numpy).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from napari_gsm.evaluate import nme  # noqa: E402
from napari_gsm.methods import METHODS, GSMParams  # noqa: E402
from napari_gsm.crossfit import calibration_folds, cross_fits  # noqa: E402
from napari_gsm.model import TrainParams, feature_choice, load_model, train  # noqa: E402
from napari_gsm.shape3d import ortho_procrustes, rotation_to_euler  # noqa: E402

#: Rows after the start row: key -> (label, features, method name, TrainParams kwargs).
ROWS = {
    "gsm-grey": ("GSM", "grey", "gsm", {"features": "grey"}),
    "gsm": ("GSM", "HoG signed", "gsm", {}),
    "gsm-unsigned": ("GSM", "HoG", "gsm", {"signed": False}),
    "clm": ("CLM (SCMS)", "HoG signed", "clm", {}),
    "gsm3d": ("GSM 2D+3D", "HoG signed", "gsm3d", {}),
    "gsm-cr": ("GSM-CR", "HoG signed", "gsm-cr", {}),
    "gsm-cr-unsigned": ("GSM-CR", "HoG", "gsm-cr", {"signed": False}),
    # 18 signed channels (9 bins over 180 degrees, signed): the default before 8 December
    "gsm-18": ("GSM", "HoG signed 18", "gsm", {"n_bins": 9}),
    "gsm-cr-18": ("GSM-CR", "HoG signed 18", "gsm-cr", {"n_bins": 9}),
    "dlib": ("dlib ERT (peer)", "pixels", None, None),
    "dlib-placed": ("dlib ERT (peer, all faces)", "pixels", None, None),
}

#: dlib rows -> what a training face gets when Viola-Jones found no face on it: 'drop' (not
#: trained on), 'placed' (the box the learned face-box placement maps onto its landmarks).
DLIB_ROWS = {"dlib": "drop", "dlib-placed": "placed"}

FACE_ROWS = ["gsm-grey", "gsm", "gsm-18", "gsm-unsigned", "clm", "gsm3d", "gsm-cr", "gsm-cr-18",
             "gsm-cr-unsigned", "dlib", "dlib-placed"]
SMALL_ROWS = ["gsm-grey", "gsm", "gsm-18", "gsm-unsigned", "clm", "gsm-cr", "gsm-cr-18",
              "gsm-cr-unsigned"]

SUITES = {
    # name: train folder, test folder (None: seeded split of train, test_fraction of it),
    # normaliser, quick (n_train, n_test), face (starts from Viola-Jones boxes), rows
    "faces": dict(train=C.DATA / "faces-300w/train", test=C.DATA / "faces-300w/test-lfpw",
                  norm="auto", quick=(300, 60), face=True, rows=FACE_ROWS),
    # A seeded 10 % of the training faces, held out from training, that no setting of the
    # package was tuned on (tuning splits use the other 90 %: C.tuning_items).
    "faces-heldout": dict(train=C.DATA / "faces-300w/train", test=None, test_fraction=0.1,
                          norm="auto", quick=(300, 60), face=True, rows=FACE_ROWS),
    "wings": dict(train=C.DATA / "wings/train", test=None, test_fraction=0.25,
                  norm="diagonal", quick=(None, None), face=False,
                  rows=SMALL_ROWS),
    "ceph": dict(train=C.DATA / "ceph/train", test=None, test_fraction=0.25, norm="diagonal",
                 quick=(30, 10), face=False, rows=SMALL_ROWS),
}

QUICK_DLIB_FACES = 50


def log(*a):
    print(*a, flush=True)


# -- models ----------------------------------------------------------------------------
def _model_path(suite, tag, key):
    (C.CACHE / "models").mkdir(parents=True, exist_ok=True)
    return C.CACHE / "models" / f"{suite}-{tag}-{key}.npz"


def _cached(path, tag, use_cache, what=""):
    """The model cached at ``path`` (logged with its recorded training time), or None."""
    if not (use_cache and path.exists()):
        return None
    model = load_model(path)
    log(f"  [{tag}] cached model {path.name} (trained in {model.summary.get('train_seconds')}"
        f" s{what} on {model.summary.get('trained')})")
    return model


def base_model(suite, samples, params, use_cache):
    """The GSM model (shape model, detectors, starts) for one feature kind, cached."""
    key = C.key_of({"suite": suite, "data": C.files_digest(samples), "params": asdict(params),
                    "gsm_params": asdict(GSMParams()), "method": "gsm",
                    "version": C.package_version(), "code": C.code_digest()})
    path = _model_path(suite, f"gsm-{feature_choice(params)}", key)
    model = _cached(path, feature_choice(params), use_cache)
    if model is not None:
        return model, path
    log(f"  [{feature_choice(params)}] training GSM on {len(samples)} images ...")
    model = train([(s.grey, s.points) for s in samples], "gsm", params=params)
    model.summary["images"] = [s.name for s in samples][:5000]
    model.save(path)
    log(f"  [{feature_choice(params)}] trained in {model.summary['train_seconds']} s -> {path.name}")
    return model, path


def method_model(suite, name, base, base_path, samples, use_cache):
    """``base`` turned into method ``name``, with its own state and confidence calibration
    (on its own cross-validated fits), cached; GSM is ``base`` itself."""
    impl = METHODS[name]
    if name == base.method:
        return base, base_path
    key = C.key_of({"base": base_path.name, "method": name,
                    "version": C.package_version(), "code": C.code_digest()})
    path = _model_path(suite, name, key)
    m = _cached(path, name, use_cache, " incl. the shared detectors")
    if m is not None:
        return m, path
    log(f"  [{name}] training its own state and calibration on {len(samples)} images ...")
    m = copy.copy(base)
    m.method = name
    m.summary = dict(base.summary)
    t0 = time.perf_counter()
    folds = calibration_folds(len(samples))
    if impl.train is not None:
        m.state = impl.train(m, samples, **({"folds": folds} if impl.train_folds else {}))
    t_cal = time.perf_counter()
    m.calibration = cross_fits(m, samples, folds=folds)
    m.summary["calibration_seconds"] = round(time.perf_counter() - t_cal, 2)
    own = time.perf_counter() - t0
    # the shared part: the base's training without its own (GSM) calibration
    shared = float(base.summary["train_seconds"]) - float(
        base.summary.get("calibration_seconds", 0.0))
    m.summary["train_seconds"] = round(shared + own, 2)
    m.summary["state_train_seconds"] = round(own, 2)
    m.save(path)
    log(f"  [{name}] trained in {own:.1f} s (+ {shared:.1f} s shared) -> {path.name}")
    return m, path


# -- dlib ------------------------------------------------------------------------------
def dlib_predictor(suite, samples, box_cache, quick, use_cache, missed, ref_model):
    """Train (or load) dlib's predictor; ``missed`` is a :data:`DLIB_ROWS` value."""
    import dlib_peer as D

    dlib, note = D.ensure_dlib()
    if dlib is None:
        return None, None, note
    if quick:
        samples = C.subset(samples, QUICK_DLIB_FACES, seed=1)
        options = D.QUICK_OPTIONS
    else:
        options = D.FULL_OPTIONS
    train, boxes, n_missed = [], [], 0
    for s in samples:
        b = C.matching_box(box_cache.get(s), s.points)
        if b is None:  # the detector missed this training face
            n_missed += 1
            if missed == "drop":
                continue
            b = _box_from_start(ref_model, s.points)
        train.append(s)
        boxes.append(b)
    box_cache.save()
    key = C.key_of({"suite": suite, "data": C.files_digest(samples), "options": options,
                    "dlib": dlib.__version__, "missed": missed,
                    "boxes": C.key_of(np.round(boxes, 2).tolist())})
    path = C.CACHE / "models" / f"{suite}-dlib-{missed}-{key}.dat"
    meta_path = path.with_suffix(".json")
    how = {"drop": "not trained on", "placed": "given the learned placement's box"}[missed]
    if use_cache and path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        log(f"  [dlib] cached predictor {path.name} (trained in {meta['train_seconds']:.1f} s "
            f"on {meta['trained']})")
    else:
        log(f"  [dlib] training on {len(train)} faces ({n_missed} without a Viola-Jones box "
            f"{how}), options {options} ...")
        seconds, _ = D.train_predictor(dlib, train, boxes, options, path)
        meta = {"train_seconds": seconds, "n_train": len(train), "options": options,
                "missed": missed, "n_missed": n_missed,
                "trained": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        meta_path.write_text(json.dumps(meta, indent=1))
        log(f"  [dlib] trained in {seconds:.1f} s")
    pred = D.load_predictor(dlib, path)
    info = dict(meta, size_mb=path.stat().st_size / 1e6,
                note=f"dlib {dlib.__version__}, {meta['n_train']} training faces "
                     f"(the {meta['n_missed']} without a Viola-Jones detection {how}), "
                     f"oversampling {meta['options']['oversampling_amount']}"
                     + (f"; {note}" if note else ""))
    return dlib, pred, info


def _box_from_start(model, start):
    """The square (Viola-Jones) face box that the learned placement maps onto ``start``."""
    from napari_gsm.geometry import shape_size
    kx, ky, ks = model.starts.face
    c = np.nanmean(start, 0)
    w = shape_size(start) / ks
    return np.array([c[0] - kx * w, c[1] - ky * w, c[0] - kx * w + w, c[1] - ky * w + w])


# -- one suite -------------------------------------------------------------------------
def true_yaw(model3d, points):
    """Head yaw (degrees) of ground-truth landmarks ``(v, 2)``: the camera of the model's
    NRSfM mean 3D shape fitted to them (0 is the training faces' average pose)."""
    _, R, _ = ortho_procrustes(model3d.state.shape3d.mean, model3d.shape.align(points))
    return rotation_to_euler(R)[0]


def yaw_quarter_line(rows, order, model3d, test_s):
    """The rows on the quarter of test faces with the largest |yaw|, where a 3D prior
    should pay (issue #15): mean NME, median fit_ms, and GSM 2D+3D against GSM 2D."""
    yaw = np.abs([true_yaw(model3d, s.points) for s in test_s])
    keep = yaw >= np.quantile(yaw, 0.75)
    parts = []
    for k in order:
        r = rows[k]
        err = np.mean(np.asarray(r.errors)[keep])
        ms = f", {np.median(np.asarray(r.fit_ms)[keep]):.1f} ms" if r.fit_ms else ""
        parts.append(f"{r.method} {r.features} {C.pct(err)}{ms}")
    line = (f"- the {keep.sum()} test faces with the largest head yaw (|yaw| >= "
            f"{yaw[keep].min():.0f} deg, median {np.median(yaw[keep]):.0f} deg, estimated from "
            f"the ground truth with GSM 2D+3D's NRSfM shape; all faces: median "
            f"{np.median(yaw):.0f} deg): mean NME (%) and median fit_ms: " + "; ".join(parts))
    if "gsm" in rows:
        a, b = (np.mean(np.asarray(rows[k].errors)[keep]) for k in ("gsm3d", "gsm"))
        ta, tb = (np.median(np.asarray(rows[k].fit_ms)[keep]) for k in ("gsm3d", "gsm"))
        line += (f". GSM 2D+3D vs GSM 2D there: {100 * (1 - a / b):+.1f} % lower mean NME, "
                 f"{ta / tb:.2f}x the time")
    return line


def suite_items(name, quick):
    """A suite's ``(train, test)`` dataset items (the ``--quick`` subsets if ``quick``)."""
    cfg = SUITES[name]
    if cfg["test"] is None:
        train_items, test_items = C.split_items(cfg["train"], cfg["test_fraction"], seed=0)
    else:
        train_items = sorted(C.load_dataset(cfg["train"]).annotated,
                             key=lambda it: it.image_path.name)
        test_items = sorted(C.load_dataset(cfg["test"]).annotated,
                            key=lambda it: it.image_path.name)
    if quick:
        n_train, n_test = cfg["quick"]
        train_items = C.subset(train_items, n_train, seed=0)
        test_items = C.subset(test_items, n_test, seed=0)
    return train_items, test_items


def run_suite(name, args):
    cfg = SUITES[name]
    use_cache = not args.no_cache
    log(f"\n=== suite {name}{' (QUICK RUN)' if args.quick else ''} ===")
    train_items, test_items = suite_items(name, args.quick)
    log(f"loading {len(train_items)} training and {len(test_items)} test images ...")
    train_s = C.load_samples(train_items)
    test_s = C.load_samples(test_items)
    wanted = [k for k in cfg["rows"] if k in args.methods]
    notes = []
    for k in wanted:
        meth = ROWS[k][2]
        if meth is not None and meth not in METHODS:
            notes.append(f"{ROWS[k][0]}: method {meth!r} not available in this build, skipped")
    wanted = [k for k in wanted if ROWS[k][2] is None or ROWS[k][2] in METHODS]

    # Models.
    # features -> their TrainParams fields (the rows of one features share one model)
    feats = {ROWS[k][1]: ROWS[k][3] for k in wanted if ROWS[k][3] is not None}
    bases = {}
    for feat in sorted(feats):
        params = TrainParams(face_detector=cfg["face"], **feats[feat])
        bases[feat] = base_model(name, train_s, params, use_cache)
    if not bases:  # the start row needs the start model
        bases["HoG signed"] = base_model(name, train_s, TrainParams(face_detector=cfg["face"]),
                                         use_cache)
    models = {}
    for k in wanted:
        label, feat, meth, _ = ROWS[k]
        if meth is None:
            continue
        base, path = bases[feat]
        models[k] = method_model(name, meth, base, path, train_s, use_cache)
    ref_model = bases.get("HoG signed", next(iter(bases.values())))[0]

    # Starts: one face box per test face, fed to every method (dlib included); the
    # Viola-Jones boxes are cached by image path.
    box_cache = C.BoxCache(C.CACHE / "vj_boxes.json") if cfg["face"] else None
    starts, fallbacks, on_face = [], 0, []
    for s in test_s:
        box = None
        if box_cache is not None:
            # the detection Model.start would pick (the one the learned prior finds likeliest)
            box = ref_model.starts.choose_face(box_cache.get(s), s.grey.shape)
            if box is None:  # none: the box the placement maps onto the prior start
                fallbacks += 1
                box = _box_from_start(ref_model, ref_model.start(s.grey, "prior")[0])
            on_face.append(C.matching_box([box], s.points) is not None)
        starts.append(box)
    if box_cache is not None:
        box_cache.save()
        log(f"Viola-Jones boxes: {box_cache.computed} computed, the rest from the cache; "
            f"{fallbacks}/{len(test_s)} test faces without a detection")
        notes.append(f"{fallbacks} of {len(test_s)} test faces had no Viola-Jones detection: "
                     "every method gets the box the learned placement maps onto the prior "
                     "start")

    def start_kw(box):
        """How every method starts (``Model.fit`` / ``Model.start`` arguments): from the face
        box, placed as each model learned for a detector's box, else the prior placement."""
        return dict(init="box", box=box, box_kind="detector") if box is not None \
            else dict(init="prior")

    dlib, peers = None, {}
    for k in [k for k in wanted if k in DLIB_ROWS]:
        dlib, pred, info = dlib_predictor(name, train_s, box_cache, args.quick, use_cache,
                                          DLIB_ROWS[k], ref_model)
        if pred is None:
            notes.append(f"{ROWS[k][0]} row skipped: {info}")
            wanted.remove(k)
        else:
            peers[k] = (pred, info)
    if peers:
        import dlib_peer as D

    # Rows.
    rows = {"start": C.Row(f"start (mean shape from {'VJ box' if cfg['face'] else 'prior'})",
                           "-")}
    for k in wanted:
        label, feat, meth, _ = ROWS[k]
        r = C.Row(label, feat)
        if k in peers:
            info = peers[k][1]
            r.train_s, r.size_mb, r.note = info["train_seconds"], info["size_mb"], info["note"]
        else:
            m, path = models[k]
            r.train_s = float(m.summary.get("train_seconds", float("nan")))
            r.size_mb = path.stat().st_size / 1e6
        rows[k] = r
    if "clm" in rows and "gsm" in rows:
        rows["clm"].note = "same trained model (detectors, prior) as GSM HoG"

    # Warm-up: one fit per method on the first image (import / FFT-plan costs, not timed).
    s, box = test_s[0], starts[0]
    for k, (m, _) in models.items():
        m.fit(s.grey, history=False, **start_kw(box))

    norm = cfg["norm"]
    t_all = time.perf_counter()
    for n, (s, box) in enumerate(zip(test_s, starts)):
        start, _ = ref_model.start(s.grey, **start_kw(box))
        rows["start"].errors.append(nme(start, s.points, norm))
        for k in wanted:
            r = rows[k]
            C.flush_caches()
            if k in peers:
                pts, ms = D.fit(dlib, peers[k][0], D.to_u8(s.grey), box)
                r.errors.append(nme(pts, s.points, norm))
                r.fit_ms.append(ms)
                continue
            m, _ = models[k]
            res = m.fit(s.grey, history=False, **start_kw(box))
            r.errors.append(nme(res.points, s.points, norm))
            r.fit_ms.append(res.fit_ms)
            r.iters.append(res.n_iter)
        if (n + 1) % 20 == 0 or n + 1 == len(test_s):
            log(f"  fitted {n + 1}/{len(test_s)} images ({time.perf_counter() - t_all:.0f} s)")

    order = ["start"] + [k for k in ROWS if k in rows]
    held_out = f"seeded {cfg.get('test_fraction', 0):.0%} hold-out of the same folder"
    table = C.markdown_table([rows[k] for k in order])
    lines = [f"### Suite `{name}`" + (" — QUICK RUN (development subset, not a result)"
                                       if args.quick else ""),
             "",
             f"Train: {len(train_s)} images ({cfg['train']}), test: {len(test_s)} images "
             f"({cfg['test'] or held_out}); start: "
             f"{'Viola-Jones box -> learned placement' if cfg['face'] else 'prior placement'};"
             f" normaliser: {'outer eye corners 36/45' if norm == 'auto' else 'bounding-box diagonal'}.",
             "", table, ""]
    if "clm" in rows and "gsm" in rows:
        speed = rows["clm"].median_ms / rows["gsm"].median_ms
        lines.append(f"Speed-up of GSM HoG over CLM HoG (median fit_ms ratio): **{speed:.1f}x** "
                     f"({rows['clm'].median_ms:.1f} ms vs {rows['gsm'].median_ms:.1f} ms).")
    for k in order:
        if rows[k].note:
            lines.append(f"- {rows[k].method}: {rows[k].note}")
    lines += [f"- {n}" for n in notes]
    if on_face and not all(on_face):
        # The mean NME is dominated by the few faces started from a wrong box (or none);
        # the same rows on the faces whose start box contains the face, for comparison.
        keep = np.asarray(on_face)
        means = ", ".join(f"{rows[k].method} {rows[k].features} "
                          f"{C.pct(np.mean(np.asarray(rows[k].errors)[keep]))}" for k in order)
        lines.append(f"- mean NME (%) on the {keep.sum()} test faces whose start box contains the "
                     f"face (the other {len(keep) - keep.sum()}: a wrong detection or none): "
                     + means)
    if "gsm3d" in models:
        lines.append(yaw_quarter_line(rows, order, models["gsm3d"][0], test_s))
    if peers:
        lines.append("- dlib fit_ms is the predictor call alone on a uint8 image; the GSM/CLM "
                     "fit_ms also include building the image pyramid.")
    text = "\n".join(lines)
    log("\n" + text)
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="faces", choices=[*SUITES, "all"])
    p.add_argument("--methods", nargs="+", default=list(ROWS), choices=list(ROWS),
                   help="rows to run (the start row is always shown)")
    p.add_argument("--quick", action="store_true",
                   help="development run: faces 300 train / 60 test (dlib: 50 faces, "
                        "oversampling 2), ceph 30/10")
    p.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE")
    p.add_argument("--no-cache", action="store_true", help="retrain even if cached")
    args = p.parse_args(argv)
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    head = [f"# napari-gsm benchmark{' — QUICK RUN' if args.quick else ''}", "",
            f"napari-gsm {C.package_version()}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, methods in this build: "
            f"{', '.join(METHODS)}.", ""]
    parts = [run_suite(s, args) for s in suites]
    text = "\n".join(head) + "\n" + "\n\n".join(parts) + "\n"
    if args.markdown:
        Path(args.markdown).write_text(text)
        log(f"\nwrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
