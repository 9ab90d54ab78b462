"""The ``napari-gsm`` command: train, fit, evaluate and the demo.

::

    napari-gsm train DATA_DIR... --method gsm -o model.npz
    napari-gsm fit model.npz IMAGE_OR_DIR... -o OUT_DIR [--init ...] [--boxes B.json]
                   [--box-kind detector|landmarks] [--json]
    napari-gsm evaluate model.npz DATA_DIR [--norm auto] [--json]
    napari-gsm demo [--out out/demo] [--no-viewer]

Mistakes a user can make (a missing or malformed file, a corrupt model, a landmark count
that does not match) end with one line ``napari-gsm: error: ...`` naming the file and exit
status 2, like argparse's own usage errors. Progress bars go to stderr and are silent with
``--json``, so stdout holds exactly one JSON document.

Nothing here imports napari, except the demo's final step that opens the viewer.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "build_parser", "CLIError"]

PROG = "napari-gsm"


class CLIError(Exception):
    """A user-caused problem, reported as one line and exit status 2."""


# -- small helpers ---------------------------------------------------------------------

def _jsonable(obj):
    """``obj`` with numpy scalars/arrays made plain and NaN/inf turned into None."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _print_json(doc):
    json.dump(_jsonable(doc), sys.stdout, indent=1, allow_nan=False)
    sys.stdout.write("\n")


def _bar(total, desc, quiet):
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (logs, pipes, CI)
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr,
                disable=True if quiet else None, leave=False, dynamic_ncols=True)


class _TrainProgress:
    """``progress(done, total, what)`` callback for :func:`napari_gsm.model.train`: one
    tqdm bar per stage ('detectors', then whatever the method trains)."""

    def __init__(self, quiet):
        self.quiet, self.bar, self.what = quiet, None, None

    def __call__(self, done, total, what):
        if self.bar is None or what != self.what:
            self.close()
            self.bar, self.what = _bar(total, str(what), self.quiet), what
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _image_suffixes():
    from .io import IMAGE_SUFFIXES

    return IMAGE_SUFFIXES


def _expand_images(inputs):
    """Image paths from files and folders (a folder's images, sorted, not recursive)."""
    suffixes = _image_suffixes()
    out = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")
                           and q.suffix.lower() in suffixes)
            if not found:
                raise CLIError(f"{p}: no images in this folder ({', '.join(suffixes)})")
            out.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in suffixes:
                raise CLIError(f"{p}: not an image file (expected one of {', '.join(suffixes)})")
            out.append(p)
        else:
            raise CLIError(f"{p}: no such image file or folder")
    seen = {}
    for p in out:
        if p.stem in seen:
            raise CLIError(f"{p}: same name as {seen[p.stem]}; both would be written to "
                           f"{p.stem}.pts")
        seen[p.stem] = p
    return out


def _read_boxes(path):
    """``{stem: (x0, y0, x1, y1)}`` from a BOXES.json file, validated."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CLIError(f"{path}: no such boxes file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"{path}: cannot read the boxes file ({exc})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(doc, dict):
        raise CLIError(f"{path}: expected a JSON object mapping image stems to "
                       "[x0, y0, x1, y1]")
    boxes = {}
    for stem, box in doc.items():
        ok = (isinstance(box, list) and len(box) == 4
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box))
        if ok:
            box = np.asarray(box, float)
            ok = bool(np.isfinite(box).all() and box[2] > box[0] and box[3] > box[1])
        if not ok:
            raise CLIError(f"{path}: box for {stem!r} must be [x0, y0, x1, y1] with "
                           f"x1 > x0 and y1 > y0, got {json.dumps(doc[stem])[:60]}")
        boxes[str(stem)] = box
    return boxes


def _init_arg(text):
    """argparse type for --init."""
    if text in ("auto", "detect", "prior", "box"):
        return text
    if text.startswith("pts:") and len(text) > 4:
        return text
    raise argparse.ArgumentTypeError(
        f"invalid --init {text!r}: use auto, detect, prior, box or pts:DIR")


def _norm_arg(text):
    from .evaluate import parse_norm

    try:
        return parse_norm(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _load_model(path):
    from .model import load_model

    return load_model(path)


class _Starts:
    """How each image's start is chosen: boxes, points files, face detector or prior.

    ``box_kind`` says what the boxes are (see :meth:`napari_gsm.model.Model.start`); None:
    a face detector's ('detector') when the model learned where such boxes put the shape,
    else the landmarks' bounding boxes.
    """

    def __init__(self, model, model_path, init, boxes_path, stems, box_kind=None):
        self.model, self.init = model, init
        self.boxes = _read_boxes(boxes_path) if boxes_path else {}
        self.points = {}
        if box_kind is None:
            box_kind = "detector" if model.starts.face is not None else "landmarks"
        if box_kind == "detector" and model.starts.face is None:
            raise CLIError(f"{model_path}: this model has not learned where a face detector's "
                           "box puts the shape (train with --face-detector or --boxes), so "
                           "--box-kind detector cannot be used")
        self.box_kind = box_kind
        if init == "box":
            if not boxes_path:
                raise CLIError("--init box needs --boxes BOXES.json")
            missing = [s for s in stems if s not in self.boxes]
            if missing:
                raise CLIError(f"{boxes_path}: no box for {missing[0]!r} "
                               f"({len(missing)} image(s) without a box)")
        if init == "detect" and model.starts.face_source != "viola-jones":
            raise CLIError(f"{model_path}: this model was not trained with the face detector "
                           + ("(train with --face-detector)" if model.starts.face is None else
                              "but with given detector boxes: give that detector's boxes "
                              "(--boxes, --box-kind detector)")
                           + ", so --init detect cannot be used")
        if init.startswith("pts:"):
            self._read_points(Path(init[4:]), stems)
        unused = sorted(set(self.boxes) - set(stems))
        if unused:
            print(f"{PROG}: warning: {boxes_path}: {len(unused)} box(es) match no image "
                  f"(e.g. {unused[0]!r})", file=sys.stderr)

    def _read_points(self, folder, stems):
        from .io import read_pts

        if not folder.is_dir():
            raise CLIError(f"{folder}: no such folder of start .pts files")
        v = self.model.n_landmarks
        for stem in stems:
            path = folder / f"{stem}.pts"
            pts = read_pts(path, missing="negative")
            if len(pts) != v:
                raise CLIError(f"{path}: has {len(pts)} points, the model has {v} landmarks")
            if np.isfinite(pts).all(1).sum() < 2:
                raise CLIError(f"{path}: needs at least two placed points to start from")
            self.points[stem] = pts

    def fit(self, image, stem):
        """Fit one image; returns ``(FitResult, start label)``."""
        model = self.model
        if stem in self.points:
            return model.fit(image, "points", points=self.points[stem]), "points"
        if stem in self.boxes:
            # A user box overrides the detector and the prior for this image.
            res = model.fit(image, "box", box=self.boxes[stem], box_kind=self.box_kind)
            return res, res.init
        if self.init == "detect":
            try:
                return model.fit(image, "detect"), "detect"
            except LookupError:
                return model.fit(image, "prior"), "prior (no face found)"
        if self.init == "auto":
            res = model.fit(image, "auto")
            if res.init == "prior" and model.starts.face_source == "viola-jones":
                # auto with a face model only falls back to the prior when no face is found
                return res, "prior (no face found)"
            return res, res.init
        return model.fit(image, self.init), self.init


def _record(result, label, image_path, output=None):
    rec = {"image": str(image_path), "output": None if output is None else str(output),
           "init": label, "fit_ms": round(float(result.fit_ms), 3),
           "n_iter": int(result.n_iter), "converged": bool(result.converged)}
    extra = result.to_json()
    extra.pop("points", None)
    for k, v in extra.items():
        rec.setdefault(k, v)
    return rec


def _fit_totals(records, seconds):
    ms = np.array([r["fit_ms"] for r in records], float)
    inits = {}
    for r in records:
        inits[r["init"]] = inits.get(r["init"], 0) + 1
    return {"n_images": len(records),
            "n_converged": int(sum(r["converged"] for r in records)),
            "fit_ms_median": float(np.median(ms)) if ms.size else None,
            "fit_ms_mean": float(ms.mean()) if ms.size else None,
            "fit_ms_total": float(ms.sum()),
            "inits": inits,
            "wall_seconds": round(seconds, 3)}


# -- train -----------------------------------------------------------------------------

def _train_boxes(path, datasets):
    """``{stem: box}`` of a TRAIN_BOXES.json for the annotated images of ``datasets``."""
    boxes = _read_boxes(path)
    where = {}
    for ds in datasets:
        for it in ds.annotated:
            if it.stem in boxes and it.stem in where:
                raise CLIError(f"{path}: {it.stem!r} names an image in both {where[it.stem]} "
                               f"and {ds.root}; give the training folders one at a time")
            where[it.stem] = ds.root
    unused = sorted(set(boxes) - set(where))
    if len(unused) == len(boxes):
        raise CLIError(f"{path}: no box names an annotated training image (keys are image "
                       f"stems, e.g. {next(iter(where), 'image_0001')!r})")
    if unused:
        print(f"{PROG}: warning: {path}: {len(unused)} box(es) match no annotated image "
              f"(e.g. {unused[0]!r})", file=sys.stderr)
    return boxes


def cmd_train(args):
    from dataclasses import asdict

    from .io import load_dataset
    from .methods import GSMParams
    from .model import TrainParams, train

    datasets, v, first = [], None, None
    for folder in args.data:
        ds = load_dataset(folder, names=args.names)
        if not ds.annotated:
            print(f"{PROG}: warning: {folder}: no annotated images", file=sys.stderr)
            continue
        if v is not None and ds.n_landmarks != v:
            raise CLIError(f"{folder}: {ds.n_landmarks} landmarks per image, but {first} "
                           f"has {v}")
        v, first = ds.n_landmarks, folder
        datasets.append(ds)
    if not datasets:
        raise CLIError(f"no annotated images (image + same-stem .pts) in {', '.join(args.data)}")
    boxes = None
    if args.boxes:
        if args.face_detector:
            raise CLIError("give --face-detector or --boxes, not both: each learns where its "
                           "boxes put the shape")
        boxes = _train_boxes(args.boxes, datasets)
    # Only the options given override TrainParams' defaults: one source of defaults.
    tp = {k: val for k, val in (("features", args.features), ("sigma", args.sigma),
                                ("ref_size", args.ref_size)) if val is not None}
    params = TrainParams(face_detector=args.face_detector, **tp)
    gsm_params = GSMParams() if args.lam is None else GSMParams(lam=args.lam)
    method_kw = {}
    if args.mean3d is not None:
        if args.method != "gsm3d":
            raise CLIError("--mean3d is for --method gsm3d")
        from .shape3d import load_mean3d

        try:  # checked before training: its error names the file and what is wrong
            method_kw["mean3d"] = load_mean3d(args.mean3d, v)
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
    progress = _TrainProgress(args.json)
    t0 = time.perf_counter()
    try:
        model = train(datasets, args.method, params=params, gsm_params=gsm_params,
                      boxes=boxes, progress=progress, **method_kw)
    except ValueError as exc:  # what the data cannot give (too few images, counts, ...)
        raise CLIError(str(exc)) from exc
    finally:
        progress.close()
    seconds = time.perf_counter() - t0
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    n_images = sum(len(d.annotated) for d in datasets)
    summary = {"model": str(out), "method": args.method, "images": n_images,
               "landmarks": model.n_landmarks, "seconds": round(seconds, 2),
               "train_params": asdict(params), "lam": gsm_params.lam,
               "face_boxes_matched": model.summary.get("face_boxes_matched")}
    if args.json:
        _print_json(summary)
        return 0
    print(f"trained {args.method} ({params.features}) on {n_images} images x "
          f"{model.n_landmarks} landmarks in {seconds:.1f} s -> {out}")
    if args.face_detector or boxes is not None:
        matched = summary["face_boxes_matched"]
        note = "" if model.starts.face is not None else " (too few: no face start)"
        what = "face detector matched" if args.face_detector else f"{args.boxes}: boxes for"
        print(f"{what} {matched}/{n_images} training faces{note}")
    return 0


# -- fit -------------------------------------------------------------------------------

def cmd_fit(args):
    from .io import read_image, write_pts

    images = _expand_images(args.inputs)
    model = _load_model(args.model)
    starts = _Starts(model, args.model, args.init, args.boxes, [p.stem for p in images],
                     args.box_kind)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    t0 = time.perf_counter()
    with _bar(len(images), "fit", args.json) as bar:
        for path in images:
            result, label = starts.fit(read_image(path), path.stem)
            out = write_pts(out_dir / f"{path.stem}.pts", result.points)
            records.append(_record(result, label, path, out))
            bar.update(1)
    totals = _fit_totals(records, time.perf_counter() - t0)
    if args.json:
        _print_json({"model": str(args.model), "method": model.method, "images": records,
                     "totals": totals})
        return 0
    width = max(len(p.stem) for p in images)
    print(f"{'image':<{width}}  {'init':<21} {'fit ms':>8} {'iter':>5}  converged")
    for p, r in zip(images, records):
        print(f"{p.stem:<{width}}  {r['init']:<21} {r['fit_ms']:8.1f} {r['n_iter']:5d}  "
              f"{'yes' if r['converged'] else 'no'}")
    print(f"wrote {len(records)} .pts file(s) to {out_dir} (median fit "
          f"{totals['fit_ms_median']:.1f} ms)")
    return 0


# -- evaluate --------------------------------------------------------------------------

def cmd_evaluate(args):
    from .evaluate import nme, normaliser, summarise
    from .io import load_dataset, write_pts

    model = _load_model(args.model)
    ds = load_dataset(args.data)
    items = ds.annotated
    if not items:
        raise CLIError(f"{args.data}: no annotated images (image + same-stem .pts)")
    v = model.n_landmarks
    if ds.n_landmarks != v:
        raise CLIError(f"{args.data}: {ds.n_landmarks} landmarks per image, the model "
                       f"{args.model} has {v}")
    try:
        normaliser(items[0].points, args.norm)
    except ValueError as exc:
        raise CLIError(f"--norm: {exc}") from None
    starts = _Starts(model, args.model, args.init, args.boxes, [it.stem for it in items],
                     args.box_kind)
    out_dir = None
    if args.output:
        out_dir = Path(args.output)
        if out_dir.resolve() == Path(args.data).resolve():
            raise CLIError(f"{out_dir}: -o is the data folder; the fits would replace its "
                           "annotations")
        out_dir.mkdir(parents=True, exist_ok=True)
    records, errors = [], []
    t0 = time.perf_counter()
    with _bar(len(items), "evaluate", args.json) as bar:
        for it in items:
            result, label = starts.fit(it.load_image(), it.stem)
            out = None
            if out_dir is not None:
                out = write_pts(out_dir / f"{it.stem}.pts", result.points)
            err = nme(result.points, it.points, args.norm)
            errors.append(err)
            rec = _record(result, label, it.image_path, out)
            rec["nme"] = err
            records.append(rec)
            bar.update(1)
    seconds = time.perf_counter() - t0
    s = summarise(errors, args.max_error)
    ms = np.array([r["fit_ms"] for r in records])
    norm = args.norm if isinstance(args.norm, str) else f"pair:{args.norm[1]},{args.norm[2]}"
    resolved = ("eyes" if v == 68 else "diagonal") if norm == "auto" else norm
    doc = {"model": str(args.model), "data": str(args.data), "method": model.method,
           "norm": norm, "norm_used": resolved, "max_error": args.max_error, "n_images": s["n"],
           "mean_nme": s["mean"], "median_nme": s["median"], "auc": s["auc"],
           "failure_rate": s["failure_rate"], "median_fit_ms": float(np.median(ms)),
           "wall_seconds": round(seconds, 3), "images": records}
    if args.json:
        _print_json(doc)
        return 0
    cut = f"{args.max_error:g}"
    print(f"{model.method} on {s['n']} images of {args.data} (normaliser: {resolved})")
    print(f"  mean NME        {s['mean']:.4f}")
    print(f"  median NME      {s['median']:.4f}")
    print(f"  AUC@{cut:<11} {s['auc']:.4f}")
    print(f"  failures@{cut:<6} {100 * s['failure_rate']:.1f} %")
    print(f"  median fit      {np.median(ms):.1f} ms")
    return 0


# -- demo ------------------------------------------------------------------------------

def sample_root():
    """The bundled ``sample_data`` folder (``faces/``, ``wings/``)."""
    try:
        # Qt-free: napari_gsm.ui and ui.sample_data import napari only inside functions.
        from .ui.sample_data import sample_data_dir

        return sample_data_dir()
    except (ImportError, FileNotFoundError):
        root = Path(__file__).resolve().parents[2] / "sample_data"
        if not (root / "faces").is_dir():
            raise CLIError(f"{root}: sample data not found") from None
        return root


#: The demo's sample sets: folder, train the face detector start, how the held-out
#: images are started.
DEMO_SETS = (("faces", True, "auto"), ("wings", False, "prior"))

# BGR colours of the overlay
_GREEN, _RED, _BLUE = (40, 200, 40), (30, 30, 230), (230, 120, 20)


def _to_bgr8(image):
    import cv2

    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = img.astype(float)
        hi = float(np.nanmax(img)) if img.size else 1.0
        img = np.clip(img / (hi if hi > 0 else 1.0) * 255.0, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_RGBA2BGR)
    return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)


def draw_overlay(image, truth, fit, start, title=""):
    """The image with the truth (green), fit (red) and start (small blue dots), and a
    legend; returns a BGR ``uint8`` array for ``cv2.imwrite``.

    Images smaller than 500 px are enlarged so the landmarks stay distinguishable.
    """
    import cv2

    img = _to_bgr8(image)
    k = max(1.0, 500.0 / max(img.shape[:2]))
    if k > 1:
        img = cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_LINEAR)
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px

    def dots(points, colour, radius):
        for x, y in np.asarray(points, float):
            if np.isfinite(x) and np.isfinite(y):
                # +0.5: pixel centres (0-based) to OpenCV's continuous coordinates
                c = (int(round((x + 0.5) * k * 16 - 8)), int(round((y + 0.5) * k * 16 - 8)))
                cv2.circle(img, c, radius * 16, colour, -1, cv2.LINE_AA, shift)

    if start is not None:
        dots(start, _BLUE, 2)
    dots(truth, _GREEN, 3)
    dots(fit, _RED, 3)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
    rows = [("truth", _GREEN), ("fit", _RED), ("start", _BLUE)]
    h = 20 * len(rows) + 8 + (20 if title else 0)
    w = 150 if not title else max(150, 12 + cv2.getTextSize(title, font, scale, 1)[0][0])
    cv2.rectangle(img, (4, 4), (4 + w, 4 + h), (255, 255, 255), -1)
    cv2.rectangle(img, (4, 4), (4 + w, 4 + h), (90, 90, 90), 1)
    y = 22
    if title:
        cv2.putText(img, title, (10, y), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
        y += 20
    for name, colour in rows:
        cv2.circle(img, (18, y - 5), 5, colour, -1, cv2.LINE_AA)
        cv2.putText(img, name, (30, y), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
        y += 20
    return img


def _write_png(path, bgr):
    import cv2

    from .io import atomic_write_bytes

    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise OSError(f"{path}: could not encode the PNG")
    return atomic_write_bytes(path, buf.tobytes(), backup=False)


def run_demo_sets(out, *, quiet=False):
    """Train on each sample set minus its last 2 images, fit those, write the results.

    Layout of `out`: ``<set>/`` a writable copy of the sample set in which the held-out
    images' ``.pts`` are the fits (an annotation project to review), ``<set>-model.npz``,
    and ``overlays/<set>-<stem>.png``.

    Returns
    -------
    list of dict
        One row per fitted image: set, image, init, nme, fit_ms, pts, png, and per set the
        project folder and model path.
    """
    from .evaluate import nme
    from .io import NAMES_FILE, Dataset, load_dataset, write_pts
    from .model import TrainParams, train

    root = sample_root()
    out = Path(out)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, face_detector, init in DEMO_SETS:
        ds = load_dataset(root / name)
        items = ds.annotated
        if len(items) < 4:
            raise CLIError(f"{root / name}: the demo needs at least 4 annotated images")
        train_items, held = items[:-2], items[-2:]
        project = out / name
        project.mkdir(parents=True, exist_ok=True)
        if (root / name / NAMES_FILE).is_file():
            shutil.copyfile(root / name / NAMES_FILE, project / NAMES_FILE)
        for it in items:
            shutil.copyfile(it.image_path, project / it.image_path.name)
        for it in train_items:
            shutil.copyfile(it.pts_path, project / it.pts_path.name)
        t0 = time.perf_counter()
        model = train(Dataset(ds.root, train_items, ds.landmark_names), "gsm",
                      params=TrainParams(features="hog", face_detector=face_detector))
        train_s = time.perf_counter() - t0
        model_path = model.save(out / f"{name}-model.npz")
        starts = _Starts(model, model_path, init, None, [it.stem for it in held])
        for it in held:
            image = it.load_image()
            result, label = starts.fit(image, it.stem)
            pts = write_pts(project / f"{it.stem}.pts", result.points)
            err = nme(result.points, it.points)
            png = _write_png(out / "overlays" / f"{name}-{it.stem}.png",
                             draw_overlay(image, it.points, result.points, result.start,
                                          f"{name}/{it.stem}  NME {err:.3f}"))
            rows.append({"set": name, "image": it.stem, "init": label, "nme": err,
                         "fit_ms": float(result.fit_ms), "n_train": len(train_items),
                         "train_s": train_s, "pts": pts, "png": png, "project": project,
                         "model": model_path})
    return rows


def _has_display():
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _open_viewer(project, model_path, stem):
    """napari with the project and the annotation widget (the plugin's launcher), or, if
    this version has none, with the image and the fitted points."""
    try:
        import napari
    except ImportError:
        raise CLIError("napari is not installed: pip install 'napari-gsm[napari]', "
                       "or run the demo with --no-viewer") from None
    try:
        from .ui import launch
    except ImportError:
        launch = None
    if launch is not None and not callable(launch):
        # importing the submodule ui/launch.py can shadow the package's lazy attribute
        launch = getattr(launch, "launch", None)
    if launch is not None:
        launch(project, model_path)  # returns the viewer; napari.run() below shows it
    else:
        from .ui.reader import read_pts_layers

        viewer = napari.Viewer(title=f"napari-gsm demo: {project}")
        for data, kwargs, kind in read_pts_layers(project / f"{stem}.pts"):
            getattr(viewer, f"add_{kind}")(data, **kwargs)
    napari.run()


def cmd_demo(args):
    t0 = time.perf_counter()
    rows = run_demo_sets(args.out)
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    width = max(len(r["image"]) for r in rows)
    print("napari-gsm demo: GSM (HoG) trained on each sample set minus its last 2 images")
    print(f"{'set':<6} {'image':<{width}}  {'start':<21} {'NME':>6} {'fit ms':>7}")
    for r in rows:
        print(f"{r['set']:<6} {r['image']:<{width}}  {r['init']:<21} {r['nme']:6.3f} "
              f"{r['fit_ms']:7.1f}")
    print("NME: mean error / outer-eye distance (faces), / bounding-box diagonal (wings)")
    trained = {r["set"]: (r["n_train"], r["train_s"]) for r in rows}
    print("training: " + ", ".join(f"{k} {n} images in {t:.1f} s"
                                   for k, (n, t) in trained.items()))
    print(f"wrote {out}/<set>/<image>.pts (fits; the rest of each set copied beside them), "
          f"{out}/<set>-model.npz and {len(rows)} overlays in {out}/overlays/ "
          f"(truth green, fit red, start blue) in {seconds:.1f} s")
    if args.no_viewer:
        return 0
    if not _has_display():
        print("no display (DISPLAY/WAYLAND_DISPLAY unset): not opening napari")
        return 0
    first = rows[0]
    print(f"opening napari on {first['project']} ...")
    _open_viewer(first["project"], first["model"], first["image"])
    return 0


# -- parser and entry point --------------------------------------------------------------

def build_parser():
    from .init import BOX_KINDS
    from .methods import METHODS, GSMParams
    from .model import TrainParams

    tp, gp = TrainParams(), GSMParams()

    p = argparse.ArgumentParser(prog=PROG, description="Semi-automatic landmark annotation "
                                "with the Gradient Shape Model.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model from annotated folders",
                       description="Train a model from folders of images with same-stem "
                       ".pts files.")
    t.add_argument("data", nargs="+", metavar="DATA_DIR")
    # Only the methods registered at run time are offered.
    t.add_argument("--method", default="gsm", choices=sorted(METHODS),
                   help="fitting method (default gsm)")
    t.add_argument("--features", choices=("grey", "hog"), default=None,
                   help=f"patch features (default {tp.features})")
    t.add_argument("--sigma", type=float, default=None, metavar="S",
                   help="detector target width in grid units (default: hog 1.5, grey 4)")
    t.add_argument("--ref-size", type=float, default=None, metavar="R",
                   help=f"mean shape size in the reference frame, px (default {tp.ref_size:g})")
    t.add_argument("--lam", type=float, default=None, metavar="L",
                   help="shape prior weight lambda (default: chosen on held-out training images)")
    t.add_argument("--face-detector", action="store_true",
                   help="learn to start from OpenCV's face detector (faces only)")
    t.add_argument("--boxes", metavar="TRAIN_BOXES.json",
                   help="JSON {stem: [x0, y0, x1, y1]}: a face detector's boxes on the "
                   "training images; learns where that detector's box puts the shape, so "
                   "fits start from its boxes (fit --boxes, --box-kind detector)")
    t.add_argument("--names", metavar="FILE", help="landmark names, one per line")
    t.add_argument("--mean3d", metavar="FILE",
                   help="gsm3d: a known 3D mean shape (.npy or CSV, one row x y z per "
                   "landmark) instead of recovering it from the annotations")
    t.add_argument("-o", "--output", required=True, metavar="MODEL",
                   help="model file to write (.npz)")
    t.add_argument("--json", action="store_true", help="print a JSON summary, no progress")
    t.set_defaults(func=cmd_train)

    box_kind_help = ("what the --boxes are: a face detector's boxes (placed as the model "
                     "learned with --face-detector or --boxes; the default for such models) "
                     "or the landmarks' bounding boxes (the default otherwise)")
    init_help = ("start: auto (points/box if given, else face detector if trained, else "
                 "prior), detect, prior, box (needs --boxes), pts:DIR (DIR/<stem>.pts)")
    f = sub.add_parser("fit", help="place landmarks on images",
                       description="Fit a model to images; writes OUT_DIR/<stem>.pts.")
    f.add_argument("model", metavar="MODEL")
    f.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    f.add_argument("-o", "--output", required=True, metavar="OUT_DIR")
    f.add_argument("--init", type=_init_arg, default="auto", help=init_help,
                   metavar="auto|detect|prior|box|pts:DIR")
    f.add_argument("--boxes", metavar="BOXES.json",
                   help="JSON {stem: [x0, y0, x1, y1]} (0-based px); overrides the start "
                   "for those images")
    f.add_argument("--box-kind", choices=BOX_KINDS, default=None, help=box_kind_help)
    f.add_argument("--json", action="store_true", help="print one JSON document, no progress")
    f.set_defaults(func=cmd_fit)

    e = sub.add_parser("evaluate", help="fit annotated images and measure the error",
                       description="Fit every annotated image of DATA_DIR and report "
                       "NME, AUC and failure rate.")
    e.add_argument("model", metavar="MODEL")
    e.add_argument("data", metavar="DATA_DIR")
    e.add_argument("--init", type=_init_arg, default="auto", help=init_help,
                   metavar="auto|detect|prior|box|pts:DIR")
    e.add_argument("--boxes", metavar="BOXES.json")
    e.add_argument("--box-kind", choices=BOX_KINDS, default=None, help=box_kind_help)
    e.add_argument("--norm", type=_norm_arg, default="auto", metavar="auto|eyes|diagonal|pair:I,J",
                   help="normaliser: auto (eyes for 68 points, else diagonal), eyes, "
                   "diagonal, pair:I,J (0-based landmarks)")
    e.add_argument("--max-error", type=float, default=0.08, metavar="E",
                   help="AUC and failure cut-off (default 0.08)")
    e.add_argument("-o", "--output", metavar="OUT_DIR", help="also write the fitted .pts")
    e.add_argument("--json", action="store_true",
                   help="print one JSON document (with per-image errors), no progress")
    e.set_defaults(func=cmd_evaluate)

    d = sub.add_parser("demo", help="train and fit on the bundled sample data, open napari")
    d.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    d.add_argument("--no-viewer", action="store_true", help="do not open napari")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv=None):
    """Run the command line; returns the exit status (0 ok, 2 user error)."""
    from .io import LandmarkFileError, ModelFileError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, LandmarkFileError, ModelFileError) as exc:
        # LandmarkFileError covers ImageFileError; all name their file.
        message = str(exc)
    except OSError as exc:  # missing folder, unwritable output, ...
        message = (f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror
                   else str(exc))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
