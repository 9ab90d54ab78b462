"""The ``train`` and ``evaluate`` commands (``fit`` is in :mod:`._fit`)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ._confidence import Assessment, note, print_summary
from ._fit import failures_error, fit_record
from ._inputs import Starts, read_boxes
from ._output import CLIError, output_folder, percent, print_json, warn
from ._progress import Progress


def _check_folder(folder):
    if not Path(folder).is_dir():
        raise CLIError(f"{folder}: " + ("not a folder" if Path(folder).exists()
                                         else "no such folder"))


def _load_dataset(folder, **kw):
    from ..io import load_dataset

    _check_folder(folder)
    return load_dataset(folder, **kw)


# -- train -----------------------------------------------------------------------------

def _train_boxes(path, listing):
    """``{stem: box}`` of a TRAIN_BOXES.json for the annotated images of ``listing``."""
    import os

    boxes = read_boxes(path)
    where = {}
    for f, name in zip(listing.folder, listing.images):
        stem, root = os.path.splitext(os.fsdecode(name))[0], listing.folders[f]
        if stem in boxes and where.get(stem, root) != root:
            raise CLIError(f"{path}: {stem!r} names an image in both {where[stem]} "
                           f"and {root}; give the training folders one at a time")
        where[stem] = root
    unused = sorted(set(boxes) - set(where))
    if len(unused) == len(boxes):
        raise CLIError(f"{path}: no box names an annotated training image (keys are image "
                       f"stems, e.g. {next(iter(where), 'image_0001')!r})")
    if unused:
        warn(f"{path}: {len(unused)} box(es) match no annotated image (e.g. {unused[0]!r})")
    return boxes


def cmd_train(args):
    from dataclasses import asdict

    from ..distributed import connect, describe
    from ..methods import GSMParams
    from ..model import FEATURE_CHOICES, TrainParams, feature_choice, train

    from ..io import LandmarkFileError
    from ..listing import Listing

    for folder in args.data:
        _check_folder(folder)
    # The images by file name: training reads their landmarks and pixels where it runs
    # (here, or on a cluster's workers, which keeps this process small).
    try:
        listing = Listing.from_folders(args.data, names=args.names)
    except LandmarkFileError:
        raise
    except ValueError as exc:  # two folders with different landmark counts
        raise CLIError(str(exc)) from exc
    for folder, count in zip(args.data, listing.counts()):
        if not count:
            warn(f"{folder}: no annotated images")
    if not len(listing):
        raise CLIError(f"no annotated images (image + same-stem .pts) in {', '.join(args.data)}")
    v = len(listing[0].with_points().points)
    # Only the options given override TrainParams' defaults: one source of defaults.
    tp = {k: val for k, val in (("sigma", args.sigma), ("ref_size", args.ref_size))
          if val is not None}
    if args.features is not None:
        tp.update(FEATURE_CHOICES[args.features])
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
        boxes = _train_boxes(args.boxes, listing)
    t0 = time.perf_counter()
    # The model is written only once training has finished (atomically): a job stopped
    # by a lost cluster leaves the previous model file as it was.
    with connect(args.workers, args.scheduler) as client, Progress("train") as progress:
        cluster = describe(client)
        try:
            model = train(listing, args.method, params=params, gsm_params=gsm_params,
                          boxes=boxes, progress=progress, client=client, **method_kw)
        except ValueError as exc:  # what the data cannot give (too few images, counts, ...)
            raise CLIError(str(exc)) from exc
    seconds = time.perf_counter() - t0
    out = Path(args.output)
    output_folder(out.parent)
    model.save(out)
    n_images = len(listing)
    summary = {"model": str(out), "method": args.method, "images": n_images,
               "landmarks": model.n_landmarks, "seconds": round(seconds, 2),
               "train_params": asdict(params), "lam": gsm_params.lam,
               "face_boxes_matched": model.summary.get("face_boxes_matched"),
               "cluster": cluster}
    if args.json:
        print_json(summary)
        return 0
    where = "" if cluster is None else f" on {cluster['workers']} Dask worker(s)"
    print(f"trained {args.method} ({feature_choice(params)}) on {n_images} images x "
          f"{model.n_landmarks} landmarks in {seconds:.1f} s{where} -> {out}")
    if args.face_detector or boxes is not None:
        matched = summary["face_boxes_matched"]
        note = "" if model.starts.face is not None else " (too few: no face start)"
        what = "face detector matched" if args.face_detector else f"{args.boxes}: boxes for"
        print(f"{what} {matched}/{n_images} training faces{note}")
    return 0


# -- evaluate --------------------------------------------------------------------------

def cmd_evaluate(args):
    from ..confidence import OFF_FRACTION
    from ..distributed import ModelFile, connect, describe, fit_paths
    from ..evaluate import nme, normaliser, summarise
    from ..io import write_pts

    model_file = ModelFile(args.model)
    model = model_file.model
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
        output_folder(out_dir)
    records, errors, failed = {}, {}, []
    t0 = time.perf_counter()
    with connect(args.workers, args.scheduler) as client, Progress("evaluate") as progress:
        cluster = describe(client)
        for n, done in enumerate(fit_paths(model_file, [it.image_path for it in items],
                                           [starts.start(it.stem) for it in items],
                                           client=client), 1):
            it = items[done.index]
            if done.error is not None:
                failed.append({"image": str(it.image_path), "error": done.error})
            else:
                points = done.result.points
                out = None if out_dir is None else write_pts(out_dir / f"{it.stem}.pts", points)
                errors[done.index] = err = nme(points, it.points, args.norm)
                records[done.index] = {**fit_record(done, it.image_path, out),
                                       "nme_pct": percent(err),
                                       **assess.add(done.result, it.points, err)}
            progress(n, len(items), "fitting")
    if not records:
        raise failures_error(failed, args.scheduler)
    order = sorted(records)
    records, errors = [records[i] for i in order], [errors[i] for i in order]
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
           "wall_seconds": round(seconds, 3), "cluster": cluster,
           "confidence": assess.summary(), "confidence_note": why_none, "images": records,
           "failed": failed}
    if args.json:
        print_json(doc)
    else:
        _print_evaluation(doc)
    if failed:
        raise failures_error(failed, args.scheduler)
    return 0


def _print_evaluation(doc):
    cut = f"{doc['max_error_pct']:g} %"
    print(f"{doc['method']} on {doc['n_images']} images of {doc['data']} (normaliser: "
          f"{doc['norm_used']})")
    print(f"  mean NME        {doc['mean_nme_pct']:.3f} %")
    print(f"  median NME      {doc['median_nme_pct']:.3f} %")
    print(f"  AUC@{cut:<11} {doc['auc_pct']:.1f} %")
    print(f"  failures@{cut:<6} {doc['failure_rate_pct']:.1f} %")
    print(f"  median fit      {doc['median_fit_ms']:.1f} ms")

    print_summary(doc["confidence"])
