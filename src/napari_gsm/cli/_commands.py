"""The ``train``, ``fit`` and ``evaluate`` commands."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from ._confidence import Assessment, note, print_summary
from ._inputs import Starts, annotations_beside, expand_images, read_boxes
from ._output import CLIError, percent, print_json, warn
from ._progress import Progress

#: Why ``fit`` leaves an image alone (the ``reason`` of a skipped image in the JSON).
OUTPUT_EXISTS, ANNOTATED = "output exists", "annotated"


def _load_model(path):
    from ..model import load_model

    return load_model(path)


def _record(result, label, image_path, output=None):
    rec = {"image": str(image_path), "output": None if output is None else str(output),
           "init": label, "fit_ms": round(float(result.fit_ms), 3),
           "n_iter": int(result.n_iter), "converged": bool(result.converged)}
    extra = result.to_json()
    extra.pop("points", None)
    for k, v in extra.items():
        rec.setdefault(k, v)
    return rec


def _load_dataset(folder, **kw):
    from ..io import load_dataset

    if not Path(folder).is_dir():
        raise CLIError(f"{folder}: " + ("not a folder" if Path(folder).exists()
                                         else "no such folder"))
    return load_dataset(folder, **kw)


def _output_folder(path):
    """``path`` made a folder (with its parents) for the outputs."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CLIError(f"{path}: exists and is not a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- train -----------------------------------------------------------------------------

def _train_boxes(path, datasets):
    """``{stem: box}`` of a TRAIN_BOXES.json for the annotated images of ``datasets``."""
    boxes = read_boxes(path)
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
        warn(f"{path}: {len(unused)} box(es) match no annotated image (e.g. {unused[0]!r})")
    return boxes


def cmd_train(args):
    from dataclasses import asdict

    from ..methods import GSMParams
    from ..model import TrainParams, train

    datasets, v, first = [], None, None
    for folder in args.data:
        ds = _load_dataset(folder, names=args.names)
        if not ds.annotated:
            warn(f"{folder}: no annotated images")
            continue
        if v is not None and ds.n_landmarks != v:
            raise CLIError(f"{folder}: {ds.n_landmarks} landmarks per image, but {first} "
                           f"has {v}")
        v, first = ds.n_landmarks, folder
        datasets.append(ds)
    if not datasets:
        raise CLIError(f"no annotated images (image + same-stem .pts) in {', '.join(args.data)}")
    # Only the options given override TrainParams' defaults: one source of defaults.
    tp = {k: val for k, val in (("features", args.features), ("sigma", args.sigma),
                                ("ref_size", args.ref_size)) if val is not None}
    params = TrainParams(face_detector=args.face_detector, **tp)
    gsm_params = GSMParams() if args.lam is None else GSMParams(lam=args.lam)
    method_kw = {}
    if args.mean3d is not None:
        if args.method != "gsm3d":
            raise CLIError("--mean3d is for --method gsm3d")
        from ..shape3d import load_mean3d

        if not Path(args.mean3d).is_file():
            raise CLIError(f"{args.mean3d}: no such file")
        try:  # checked before training: its error names the file and what is wrong
            method_kw["mean3d"] = load_mean3d(args.mean3d, v)
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
    boxes = None
    if args.boxes:
        if args.face_detector:
            raise CLIError("--boxes: not together with --face-detector (each learns where "
                           "its own boxes put the shape)")
        boxes = _train_boxes(args.boxes, datasets)
    t0 = time.perf_counter()
    with Progress("train") as progress:
        try:
            model = train(datasets, args.method, params=params, gsm_params=gsm_params,
                          boxes=boxes, progress=progress, **method_kw)
        except ValueError as exc:  # what the data cannot give (too few images, counts, ...)
            raise CLIError(str(exc)) from exc
    seconds = time.perf_counter() - t0
    out = Path(args.output)
    _output_folder(out.parent)
    model.save(out)
    n_images = sum(len(d.annotated) for d in datasets)
    summary = {"model": str(out), "method": args.method, "images": n_images,
               "landmarks": model.n_landmarks, "seconds": round(seconds, 2),
               "train_params": asdict(params), "lam": gsm_params.lam,
               "face_boxes_matched": model.summary.get("face_boxes_matched")}
    if args.json:
        print_json(summary)
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

def plan_fit(images, out_dir, *, unannotated=False, overwrite=False):
    """Which images to fit, and which to leave alone and why.

    An image is skipped when ``unannotated`` and it has a same-stem ``.pts`` beside it
    (:data:`ANNOTATED`), or when its output ``out_dir/<stem>.pts`` exists and not
    ``overwrite`` (:data:`OUTPUT_EXISTS`; a re-run continues where the last one stopped).

    Returns
    -------
    todo : list of pathlib.Path
    skipped : list of dict
        ``image``, ``reason`` and ``file`` (the existing ``.pts`` that is the reason).
    """
    beside = annotations_beside(images) if unannotated else {}
    todo, skipped = [], []
    for path in images:
        out = out_dir / f"{path.stem}.pts"
        if path in beside:
            skipped.append({"image": str(path), "reason": ANNOTATED, "file": str(beside[path])})
        elif out.exists() and not overwrite:
            skipped.append({"image": str(path), "reason": OUTPUT_EXISTS, "file": str(out)})
        else:
            todo.append(path)
    return todo, skipped


def cmd_fit(args):
    from ..io import read_image, write_pts
    from ..io.atomic import next_backup_path

    images = expand_images(args.inputs)
    out_dir = Path(args.output)
    todo, skipped = plan_fit(images, out_dir, unannotated=args.unannotated,
                             overwrite=args.overwrite)
    model = _load_model(args.model)
    starts = Starts(model, args.model, args.init, args.boxes, [p.stem for p in todo],
                    args.box_kind, args.off_threshold)
    why_none = note(model, args.model, args.json)
    _output_folder(out_dir)
    records = []
    t0 = time.perf_counter()
    with Progress("fit") as progress:
        for path in todo:
            result, label = starts.fit(read_image(path), path.stem)
            out = out_dir / f"{path.stem}.pts"
            # write_pts keeps the file it replaces under this name
            backup = next_backup_path(out) if out.exists() else None
            write_pts(out, result.points)
            records.append({**_record(result, label, path, out),
                            "replaced": backup is not None,
                            "backup": None if backup is None else str(backup)})
            progress(len(records), len(todo), "fitting")
    ms = np.array([r["fit_ms"] for r in records], float)
    replaced = [r for r in records if r["replaced"]]
    totals = {"n_images": len(records), "n_skipped": len(skipped), "n_replaced": len(replaced),
              "n_converged": int(sum(r["converged"] for r in records)),
              "fit_ms_median": float(np.median(ms)) if ms.size else None,
              "fit_ms_mean": float(ms.mean()) if ms.size else None,
              "fit_ms_total": float(ms.sum()),
              "inits": dict(Counter(r["init"] for r in records)),
              "wall_seconds": round(time.perf_counter() - t0, 3)}
    if args.json:
        print_json({"model": str(args.model), "method": model.method, "images": records,
                    "skipped": skipped, "totals": totals, "confidence_note": why_none})
        return 0
    _print_fit_table(images, records, skipped)
    median = "" if not records else f" (median fit {totals['fit_ms_median']:.1f} ms)"
    print(f"wrote {len(records)} .pts file(s) to {out_dir}{median}")
    if replaced:
        print(f"replaced {len(replaced)} existing .pts file(s); each previous version is kept "
              f"beside it as <stem>.pts.~N~ (e.g. {replaced[0]['backup']})")
    if skipped:
        print(_skipped_summary(skipped, out_dir))
    return 0


def _print_fit_table(images, records, skipped):
    rows = {Path(r["image"]): r for r in records}
    why = {Path(s["image"]): s for s in skipped}
    width = max(len(p.stem) for p in images)
    print(f"{'image':<{width}}  {'init':<21} {'fit ms':>8} {'iter':>5}  converged  "
          "likely off")
    for p in images:
        if p in why:
            s = why[p]
            text = (f"{s['file']} exists" if s["reason"] == OUTPUT_EXISTS
                    else f"annotated ({s['file']})")
            print(f"{p.stem:<{width}}  skipped: {text}")
            continue
        r = rows[p]
        c = r["confidence"]  # likely off: more likely off than not
        off = "-" if c is None else (f"{sum(p >= 0.5 for p in c['p_off'])}"
                                     + (" (fit failed)" if c["failed"] else ""))
        print(f"{p.stem:<{width}}  {r['init']:<21} {r['fit_ms']:8.1f} {r['n_iter']:5d}  "
              f"{'yes' if r['converged'] else 'no':<9}  {off}")


def _skipped_summary(skipped, out_dir):
    exists = sum(s["reason"] == OUTPUT_EXISTS for s in skipped)
    parts = []
    if exists:
        parts.append(f"{exists} whose .pts already exists in {out_dir} "
                     "(--overwrite replaces them, keeping backups)")
    if len(skipped) > exists:
        parts.append(f"{len(skipped) - exists} annotated (a same-stem .pts beside the image)")
    return f"skipped {len(skipped)} image(s): " + "; ".join(parts)


# -- evaluate --------------------------------------------------------------------------

def cmd_evaluate(args):
    from ..confidence import OFF_FRACTION
    from ..evaluate import nme, normaliser, summarise
    from ..io import write_pts

    model = _load_model(args.model)
    ds = _load_dataset(args.data)
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
    starts = Starts(model, args.model, args.init, args.boxes, [it.stem for it in items],
                    args.box_kind, args.off_threshold)
    why_none = note(model, args.model, args.json)
    assess = Assessment(args.norm, args.off_threshold or OFF_FRACTION)
    out_dir = None
    if args.output:
        out_dir = Path(args.output)
        if out_dir.resolve() == Path(args.data).resolve():
            raise CLIError(f"{out_dir}: -o is the data folder; the fits would replace its "
                           "annotations")
        _output_folder(out_dir)
    records, errors = [], []
    t0 = time.perf_counter()
    with Progress("evaluate") as progress:
        for it in items:
            result, label = starts.fit(it.load_image(), it.stem)
            out = None
            if out_dir is not None:
                out = write_pts(out_dir / f"{it.stem}.pts", result.points)
            err = nme(result.points, it.points, args.norm)
            errors.append(err)
            records.append({**_record(result, label, it.image_path, out),
                            "nme_pct": percent(err), **assess.add(result, it.points, err)})
            progress(len(records), len(items), "fitting")
    seconds = time.perf_counter() - t0
    # evaluate's functions work in fractions of the normaliser; people read percent
    s = summarise(errors, args.max_error / 100.0)
    norm = args.norm if isinstance(args.norm, str) else f"pair:{args.norm[1]},{args.norm[2]}"
    resolved = ("eyes" if v == 68 else "diagonal") if norm == "auto" else norm
    doc = {"model": str(args.model), "data": str(args.data), "method": model.method,
           "norm": norm, "norm_used": resolved, "max_error_pct": args.max_error,
           "n_images": s["n"], "mean_nme_pct": percent(s["mean"]),
           "median_nme_pct": percent(s["median"]), "auc_pct": percent(s["auc"]),
           "failure_rate_pct": percent(s["failure_rate"]),
           "median_fit_ms": float(np.median([r["fit_ms"] for r in records])),
           "wall_seconds": round(seconds, 3), "confidence": assess.summary(),
           "confidence_note": why_none, "images": records}
    if args.json:
        print_json(doc)
        return 0
    cut = f"{args.max_error:g} %"
    print(f"{model.method} on {s['n']} images of {args.data} (normaliser: {resolved})")
    print(f"  mean NME        {doc['mean_nme_pct']:.3f} %")
    print(f"  median NME      {doc['median_nme_pct']:.3f} %")
    print(f"  AUC@{cut:<11} {doc['auc_pct']:.1f} %")
    print(f"  failures@{cut:<6} {doc['failure_rate_pct']:.1f} %")
    print(f"  median fit      {doc['median_fit_ms']:.1f} ms")
    print_summary(doc["confidence"])
    return 0

