"""The ``fit`` command: which images to fit, fitting them (here or on Dask), writing ``.pts``."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from ._confidence import note
from ._inputs import Starts, annotations_beside, expand_images
from ._output import CLIError, output_folder, print_json
from ._progress import Progress

#: Why ``fit`` leaves an image alone (the ``reason`` of a skipped image in the JSON): its
#: output is a file fit did not write (or one changed since), fit already wrote it with
#: this model, or (``--unannotated``) the image has an annotation beside it.
OUTPUT_EXISTS, DONE, ANNOTATED = "output exists", "done", "annotated"


def plan_fit(images, out_dir, log, model_digest, *, unannotated=False, overwrite=False):
    """Which images to fit, and which to leave alone and why.

    An image is skipped when ``unannotated`` and it has a same-stem ``.pts`` beside it that
    fit did not write (:data:`ANNOTATED`); when fit wrote its output ``out_dir/<stem>.pts``
    with this model (:data:`DONE`: a re-run continues where the last one stopped); and
    when that output exists but is not fit's own (a person's annotation, or a fit changed
    since) (:data:`OUTPUT_EXISTS`). ``overwrite`` fits the last two kinds again. An output
    fit wrote with another model is fitted again. What fit wrote is what the folders'
    journals say (:class:`napari_gsm.io.fits_log.FitsLog`).

    Parameters
    ----------
    images : list of pathlib.Path
    out_dir : pathlib.Path
    log : FitsLog
        ``out_dir``'s journal.
    model_digest : str

    Returns
    -------
    todo : list of (pathlib.Path, str or None)
        Each image, with the SHA-256 of fit's own output it replaces (None: the output is
        new, or not fit's own and replaced only with ``overwrite``, keeping a backup).
    skipped : list of dict
        ``image``, ``reason`` and ``file`` (the existing ``.pts`` that is the reason).
    """
    from ..io.fits_log import FitsLog

    beside = {}
    if unannotated:
        logs = {out_dir: log}
        for image, pts in annotations_beside(images).items():
            folder_log = logs.setdefault(pts.parent, FitsLog(pts.parent))
            if folder_log.owner(pts) is None:  # fit's own output is no annotation
                beside[image] = pts
    todo, skipped = [], []
    for path in images:
        out = out_dir / f"{path.stem}.pts"
        own = log.owner(out)
        if path in beside:
            skipped.append({"image": str(path), "reason": ANNOTATED, "file": str(beside[path])})
        elif own is not None and (own[0] != model_digest or overwrite):
            todo.append((path, own[1]))
        elif own is not None:
            skipped.append({"image": str(path), "reason": DONE, "file": str(out)})
        elif out.exists() and not overwrite:
            skipped.append({"image": str(path), "reason": OUTPUT_EXISTS, "file": str(out)})
        else:
            todo.append((path, None))
    return todo, skipped


def write_fit(out, points, own_sha):
    """Write ``points`` to ``out`` atomically; returns ``(bytes written, backup or None)``.

    The file there is kept as ``<stem>.pts.~N~`` unless it is fit's own output the plan
    chose to replace (its SHA-256 is ``own_sha``): a file a person saved meanwhile is kept.
    """
    from ..io import format_pts
    from ..io.atomic import atomic_write_bytes, next_backup_path
    from ..io.fits_log import sha256_hex

    data = format_pts(points).encode("utf-8")
    try:
        current = out.read_bytes()
    except FileNotFoundError:
        current = None
    keep = current is not None and sha256_hex(current) != own_sha
    backup = next_backup_path(out) if keep else None  # the name atomic_write_bytes uses
    atomic_write_bytes(out, data, backup=keep)
    return data, backup


def fit_record(done, image, output=None):
    """The JSON record of one fitted image (:class:`napari_gsm.distributed.Fitted`)."""
    result = done.result
    rec = {"image": str(image), "output": None if output is None else str(output),
           "init": done.label, "fit_ms": round(float(result.fit_ms), 3),
           "read_ms": round(float(done.read_ms), 3),
           "n_iter": int(result.n_iter), "converged": bool(result.converged)}
    extra = result.to_json()
    extra.pop("points", None)
    for k, v in extra.items():
        rec.setdefault(k, v)
    return rec


def failures_error(failed, scheduler=None):
    """The CLIError that ends a command some of whose images could not be fitted."""
    more = (f" ({len(failed) - 1} more image(s) could not be fitted either)"
            if len(failed) > 1 else "")
    where = (" (the workers read the images by path: they must see them at the same paths "
             "as this computer)" if scheduler else "")
    return CLIError(f"{failed[0]['error']}{more}; the other images were fitted{where}")


def cmd_fit(args):
    from ..distributed import ModelFile, connect, describe, fit_paths
    from ..io.fits_log import FitsLog

    images = expand_images(args.inputs)
    out_dir = Path(args.output)
    model_file = ModelFile(args.model)
    log = FitsLog(out_dir)
    todo, skipped = plan_fit(images, out_dir, log, model_file.digest,
                             unannotated=args.unannotated, overwrite=args.overwrite)
    starts = Starts(model_file.model, args.model, args.init, args.boxes,
                    [p.stem for p, _ in todo], args.box_kind, args.off_threshold)
    why_none = note(model_file.model, args.model, args.json)
    if todo:
        output_folder(out_dir)
    records, failed, first = {}, [], None
    t0 = time.perf_counter()
    with connect(*((args.workers, args.scheduler) if todo else (None, None))) as client, \
            Progress("fit") as progress, log:
        cluster = describe(client)
        for n, done in enumerate(fit_paths(model_file, [p for p, _ in todo],
                                           [starts.start(p.stem) for p, _ in todo],
                                           client=client), 1):
            if n == 1:
                first = time.perf_counter() - t0
            image, own_sha = todo[done.index]
            if done.error is not None:
                failed.append({"image": str(image), "error": done.error})
            else:
                out = out_dir / f"{image.stem}.pts"
                data, backup = write_fit(out, done.result.points, own_sha)
                log.append(out, data, model_file.digest)
                records[done.index] = {
                    **fit_record(done, image, out),
                    "replaced": own_sha is not None or backup is not None,
                    "backup": None if backup is None else str(backup)}
            progress(n, len(todo), "fitting")
    records = [records[i] for i in sorted(records)]
    _report(args, images, records, skipped, failed, model_file, cluster,
            time.perf_counter() - t0, first, why_none)
    if failed:
        raise failures_error(failed, args.scheduler)
    return 0


def _report(args, images, records, skipped, failed, model_file, cluster, seconds, first,
            why_none):
    ms = np.array([r["fit_ms"] for r in records], float)
    backups = [r for r in records if r["backup"] is not None]
    refitted = [r for r in records if r["replaced"] and r["backup"] is None]
    totals = {"n_images": len(records), "n_skipped": len(skipped), "n_failed": len(failed),
              "n_replaced": len(backups), "n_refitted": len(refitted),
              "n_converged": int(sum(r["converged"] for r in records)),
              "fit_ms_median": float(np.median(ms)) if ms.size else None,
              "fit_ms_mean": float(ms.mean()) if ms.size else None,
              "fit_ms_total": float(ms.sum()),
              "inits": dict(Counter(r["init"] for r in records)),
              "wall_seconds": round(seconds, 3),
              "seconds_to_first_image": None if first is None else round(first, 3)}
    if args.json:
        print_json({"model": str(args.model), "method": model_file.model.method,
                    "model_sha256": model_file.digest, "cluster": cluster,
                    "images": records, "skipped": skipped, "failed": failed, "totals": totals,
                    "confidence_note": why_none})
        return
    out_dir = Path(args.output)
    _print_fit_table(images, records, skipped, failed)
    median = "" if not records else f" (median fit {totals['fit_ms_median']:.1f} ms)"
    where = "" if cluster is None else (f" on {cluster['workers']} Dask worker(s), "
                                        f"{cluster['threads']} thread(s)")
    print(f"wrote {len(records)} .pts file(s) to {out_dir}{median}{where} in {seconds:.1f} s")
    if refitted:
        print(f"re-fitted {len(refitted)} image(s) whose .pts fit had written with another "
              "model (or --overwrite)")
    if backups:
        print(f"replaced {len(backups)} existing .pts file(s); each previous version is kept "
              f"beside it as <stem>.pts.~N~ (e.g. {backups[0]['backup']})")
    if skipped:
        print(_skipped_summary(skipped, out_dir))


def _print_fit_table(images, records, skipped, failed):
    rows = {Path(r["image"]): r for r in records}
    why = {Path(s["image"]): s for s in skipped}
    bad = {Path(f["image"]): f for f in failed}
    width = max(len(p.stem) for p in images)
    print(f"{'image':<{width}}  {'init':<21} {'fit ms':>8} {'iter':>5}  converged  "
          "likely off")
    for p in images:
        if p in why:
            s = why[p]
            text = {OUTPUT_EXISTS: f"{s['file']} exists",
                    DONE: f"done ({s['file']}, fitted with this model)",
                    ANNOTATED: f"annotated ({s['file']})"}[s["reason"]]
            print(f"{p.stem:<{width}}  skipped: {text}")
        elif p in bad:
            print(f"{p.stem:<{width}}  failed: {bad[p]['error']}")
        else:
            r = rows[p]
            c = r["confidence"]  # likely off: more likely off than not
            off = "-" if c is None else (f"{sum(q >= 0.5 for q in c['p_off'])}"
                                         + (" (fit failed)" if c["failed"] else ""))
            print(f"{p.stem:<{width}}  {r['init']:<21} {r['fit_ms']:8.1f} {r['n_iter']:5d}  "
                  f"{'yes' if r['converged'] else 'no':<9}  {off}")


def _skipped_summary(skipped, out_dir):
    count = Counter(s["reason"] for s in skipped)
    parts = []
    if count[DONE]:
        parts.append(f"{count[DONE]} already fitted with this model (a re-run goes on where "
                     "the last one stopped)")
    if count[OUTPUT_EXISTS]:
        parts.append(f"{count[OUTPUT_EXISTS]} whose .pts in {out_dir} fit did not write, or "
                     "was changed since (--overwrite replaces them, keeping backups)")
    if count[ANNOTATED]:
        parts.append(f"{count[ANNOTATED]} annotated (a same-stem .pts beside the image)")
    return f"skipped {len(skipped)} image(s): " + "; ".join(parts)
