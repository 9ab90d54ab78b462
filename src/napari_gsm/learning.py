"""Training a model from annotated images: :func:`train`.

Training's work on the images runs in parts through a runner (:mod:`napari_gsm.training`):
here, or on the workers of a Dask cluster (``client=``), which read the images. Re-exported
by :mod:`napari_gsm.model`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ._threads import one_blas_thread
from .calibration import Calibration
from .crossfit import calibration_folds, cross_fits
from .init import StartModel, face_rows, face_start_errors, placement_sums
from .io import Dataset, load_dataset, to_grey
from .listing import Listing
from .methods import METHODS, GSMParams
from .methods.gsm import REFIT_SCALE_DEFAULT
from .model import Model, TrainParams, check_image_size
from .quality import score_reference
from .refit import choose_refit_scale
from .shape import ShapeModel
from .training import (InProcess, Sample, add_sums, detector_sums, empty_detectors,
                       grid_errors, lam_errors, part_shapes, pick, positions, size_sum, total,
                       with_sizes)

__all__ = ["train", "choose_lam", "LAM_GRID", "LAM_DEFAULT"]


def train(data, method="gsm", *, params=None, gsm_params=None, landmark_names=None,
          boxes=None, progress=None, calibrate=True, client=None, **method_kw):
    """Train a model from annotated images.

    Parameters
    ----------
    data : Dataset, path, Listing, or list of these, or list of ``(image, points)`` pairs
        Annotated images; points ``(v, 2)`` in 0-based ``(x, y)``.
    method : {'gsm', 'clm', 'gsm-cr', 'gsm3d'}
    params : TrainParams, optional
    gsm_params : GSMParams, optional
        With ``lam=None`` (the default) the shape prior weight is chosen on held-out
        training images (:func:`choose_lam`), and with it, unless given, the share of it a
        re-fit around pinned landmarks uses
        (:func:`~napari_gsm.refit.choose_refit_scale`); a given ``lam`` is used as it is.
    landmark_names : list of str, optional
        Defaults to the dataset's names file, else ``'1'..'v'``.
    boxes : dict or sequence, optional
        A face detector's boxes ``(x0, y0, x1, y1)`` on the training images, to learn where
        that detector's box puts the shape (as ``params.face_detector`` does for OpenCV's
        Viola-Jones boxes; give one or the other): a dict keyed by image stem (or path),
        or one box per training image in order; images without a box (missing key, None)
        do not count. Fits then start from that detector's boxes with
        ``box_kind='detector'``.
    progress : callable ``(done, total, what)``, optional
        Called as training proceeds; raising from it cancels training.
    calibrate : bool
        Calibrate the fits' confidence on cross-validated fits of the training images
        (:func:`~napari_gsm.crossfit.cross_fits`; about one fit per training image, at most
        400). Off, the model gathers a calibration from its incremental updates only.
    client : distributed.Client, optional
        Train on that Dask cluster's workers (:func:`napari_gsm.distributed.connect` makes
        one): they read the images, and the landmarks of folders (``data`` must be
        datasets or folders, seen by the workers at the same paths), and return their
        parts' sums, which are added here. Given folders, this process reads no image and
        the landmarks of only the few images it needs whole (the held-out ones); per
        training image it keeps its file names, its size and, with a face detector, its
        box (:class:`~napari_gsm.listing.Listing`), so its memory hardly grows with the
        number of images (datasets in memory keep their landmarks here too). None:
        everything runs here. Both give the same model, up to the order of
        floating-point sums.
    **method_kw
        Passed to the method's own training (e.g. cascade levels for GSM-CR).

    Returns
    -------
    Model

    Raises
    ------
    napari_gsm.distributed.ClusterError
        With a client, when the cluster cannot finish (workers kept dying on a part).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    params = params or TrainParams()
    gsm_params = gsm_params or GSMParams()
    samples, names = _as_samples(data, load=client is None)
    v = samples[0].with_points().points.shape[0]
    names = list(landmark_names or names or [str(i + 1) for i in range(v)])
    if len(names) != v:
        raise ValueError(f"{len(names)} landmark names for {v} landmarks")
    if params.face_detector and boxes is not None:
        raise ValueError("give either the face detector or a detector's boxes, not both: "
                         "each learns where its boxes put the shape")
    if client is None:
        runner = InProcess(progress)
    else:
        from .distributed import OnCluster

        runner = OnCluster(client, progress)
    try:
        # Training's linear algebra is mostly small products, like a fit's: a second BLAS
        # thread spins more than it helps (GSM-CR on 2,012 faces from the command line,
        # idle machine: the same wall time, 35 % less CPU), and costs when the cores are
        # shared.
        with one_blas_thread():
            return _train(samples, names, method, params, gsm_params, boxes, progress,
                          calibrate, runner, method_kw)
    finally:
        runner.close()


def _train(samples, names, method, params, gsm_params, boxes, progress, calibrate, runner,
           method_kw):
    """:func:`train` on ``samples`` through ``runner``."""
    v = len(names)
    t0 = time.perf_counter()
    n = len(samples)
    rng = np.random.default_rng(params.seed)
    # Images held out to choose lam: the model is first built without them, measured on
    # them, then they are added exactly as incremental updates add images.
    n_held = min(40, n // 6) if gsm_params.lam is None else 0
    held = sorted(rng.permutation(n)[:n_held].tolist()) if n_held >= 2 else []
    fit_idx = np.setdiff1d(np.arange(n), held)
    parts = {"fit": runner.parts(pick(samples, fit_idx)),
             "held": runner.parts(pick(samples, held))}
    where = {k: [positions(p) for p in ps] for k, ps in parts.items()}
    # The parts' landmarks stay where the parts run: this process gets sums of them.
    shapes = {k: runner.map(part_shapes, [(p,) for p in ps]) for k, ps in parts.items()}
    shape = ShapeModel.train_from_sums(
        samples[int(fit_idx[0])].with_points().points,
        lambda func, *args: total(runner, shapes["fit"], func, *args),
        ref_size=params.ref_size,
        # After the pose is aligned the landmarks stay near s0 (within the shape's
        # deformations), so the frame needs the patch extent plus a little room; features
        # outside cost time.
        margin=params.feature_spec().extent + 0.2 * params.ref_size)
    spec = params.feature_spec()
    model = Model(method, shape, None, spec, None, names, params, gsm_params,
                  summary={"n_images": n})
    # The detectors' sums of the images fitted to and of the held-out ones, apart: the
    # held-out images join the model once lam is chosen.
    light = runner.put(model)
    det, held_det = empty_detectors(model), empty_detectors(model)
    face_boxes = (_given_boxes(samples, boxes) if boxes is not None
                  else np.full((n, 4), np.nan) if params.face_detector else None)
    sizes = np.zeros((n, 2), np.int32)
    for key, into, done in (("fit", det, 0), ("held", held_det, len(fit_idx))):
        handles = runner.map(detector_sums, [(p, light, params.face_detector)
                                             for p in parts[key]], "detectors", n, done=done)
        for pos, sums in zip(where[key], runner.results(handles)):
            add_sums(into, sums)
            sizes[pos] = sums.sizes
            if params.face_detector:
                face_boxes[pos] = sums.face_boxes
    samples = with_sizes(samples, sizes)
    model.detectors = det
    model.starts = _train_starts(runner, shape.s0, shapes, where, sizes, face_boxes,
                                 "viola-jones" if params.face_detector else "boxes")
    mean_size = total(runner, shapes["fit"] + shapes["held"], size_sum) / n
    shapes.clear()  # the parts' landmarks are not needed any more where they are
    if held:
        det.solve()
        held_samples = [smp.with_points() for smp in pick(samples, held)]
        model.gsm_params = replace(gsm_params, lam=choose_lam(model, held_samples, rng,
                                                              runner=runner))
        if gsm_params.refit_scale is None:
            # its own generator, so the rest of training draws what it drew before
            model.gsm_params = replace(model.gsm_params, refit_scale=choose_refit_scale(
                model, held_samples, np.random.default_rng(params.seed), runner=runner))
        add_sums(det, held_det)
        for smp in held_samples:
            shape.add(smp.points)
    del held_det
    det.solve()
    model._precision = None
    if model.gsm_params.lam is None:  # too few images to hold any out
        model.gsm_params = replace(gsm_params, lam=LAM_DEFAULT)
    if model.gsm_params.refit_scale is None:
        model.gsm_params = replace(model.gsm_params, refit_scale=REFIT_SCALE_DEFAULT)
    model.summary.update({
        "trained": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "images": [Path(samples[k].name).name for k in range(min(n, 5000))],
        "mean_size_px": float(mean_size),
        "face_boxes_matched": None if face_boxes is None
        else int(np.isfinite(face_boxes).all(1).sum()),
    })
    # What the detectors' match at the true landmarks looks like, for fit_warnings.
    model.summary["score_ref"] = round(score_reference(model, samples, runner=runner), 4)
    impl = METHODS[method]
    folds = calibration_folds(len(samples)) if calibrate else None
    if impl.train is not None:
        if impl.train_folds and folds:
            method_kw = {**method_kw, "folds": folds}
        model.state = impl.train(model, samples, progress=progress, runner=runner, **method_kw)
    if calibrate:
        t_cal = time.perf_counter()
        model.calibration = cross_fits(model, samples, folds=folds, progress=progress,
                                       runner=runner)
        model.summary["calibration_seconds"] = round(time.perf_counter() - t_cal, 2)
    else:
        model.calibration = Calibration.empty(v, source="incremental updates")
    model.starts.sums = None  # training's only: not saved
    model.summary["train_seconds"] = round(time.perf_counter() - t0, 2)
    return model


LAM_GRID = (0.025, 0.05, 0.1, 0.2, 0.4)
LAM_DEFAULT = 0.1  # when there are too few images (< 12) to hold some out


def choose_lam(model, held, rng, grid=LAM_GRID, runner=None):
    """The shape prior weight that fits held-out images best.

    How much to trust the detectors against the shape prior depends on the landmark set,
    the features and how many images trained them (paper section 2.3: "in practice a bit of
    tuning may be required"), so it is measured: each held-out image is fitted with every
    ``lam`` of the grid from a start erring like the start a fit uses without a box or
    points (the detector box's, else the prior placement's;
    :meth:`~napari_gsm.init.StartModel.simulate`, which GSM-CR trains on too), and the
    ``lam`` with the lowest mean error, in shape sizes, wins. The starts are drawn here
    from ``rng``; the fits run where ``runner`` runs them (default: here).
    """
    starts = [model.starts.simulate(model.shape.s0, smp.points, smp.size, "auto", 1,
                                    rng)[0] for smp in held]
    errors = grid_errors(runner, lam_errors, model, held, starts, grid,
                         "choosing the shape prior weight")
    model.summary["lam_validation"] = {f"{lam:g}": round(float(e), 5)
                                       for lam, e in zip(grid, errors)}
    return float(grid[int(np.argmin(errors))])


def _train_starts(runner, s0, shapes, where, sizes, face_boxes, face_source):
    """The start model, from sums over the parts' landmarks (``shapes``: their handles,
    ``where``: their images' positions, both per kind of part) and the images' ``sizes``
    and detector's boxes (``face_boxes``, or None)."""
    handles = shapes["fit"] + shapes["held"]
    where = where["fit"] + where["held"]
    starts = StartModel.from_sums(sum(runner.results(runner.map(
        placement_sums, [(s0, h, sizes[pos]) for h, pos in zip(handles, where)]))))
    if face_boxes is None:
        return starts
    # per image with a box, in the images' order (which the simulated starts draw from)
    order = np.argsort(np.concatenate(
        [pos[np.isfinite(face_boxes[pos]).all(1)] for pos in where] + [np.zeros(0, int)]),
        kind="stable")

    def rows(func, *args):
        out = runner.results(runner.map(func, [(h, face_boxes[pos], *args)
                                               for h, pos in zip(handles, where)]))
        return np.concatenate([np.zeros((0, 5 if func is face_rows else 4)), *out])[order]

    starts.learn_face(rows(face_rows), lambda face: rows(face_start_errors, s0, face),
                      face_source)
    return starts


def _given_boxes(samples, boxes):
    """``(N, 4)`` boxes of the training samples (NaN rows: none) from :func:`train`'s ``boxes``."""
    out = np.full((len(samples), 4), np.nan)
    if isinstance(boxes, dict):
        for k, smp in enumerate(samples):
            box = boxes.get(smp.name, boxes.get(Path(smp.name).stem))
            if box is not None:
                out[k] = box
        if np.isnan(out).all():
            raise ValueError("none of the given boxes names a training image (keys are image "
                             f"stems, e.g. {Path(samples[0].name).stem!r})")
    else:
        boxes = list(boxes)
        if len(boxes) != len(samples):
            raise ValueError(f"{len(boxes)} boxes for {len(samples)} training images")
        for k, box in enumerate(boxes):
            if box is not None:
                out[k] = box
    bad = np.isfinite(out).all(1) & ~((out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1]))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{samples[k].name}: box {out[k].tolist()} must have x1 > x0 and "
                         "y1 > y0")
    return out


def _as_samples(data, load=True):
    """Annotated samples from a dataset, folder, list of those, or (image, points) pairs.

    With ``load`` False, datasets and folders give a :class:`~napari_gsm.listing.Listing`:
    their images are not read here (their samples keep the paths; the work reads them
    where it runs), nor the landmarks of folders (a dataset's travel: they may not be
    saved yet), and images in memory are refused.
    """
    if isinstance(data, (str, Path, Dataset, Listing)):
        data = [data]
    if not load:
        if not all(isinstance(entry, (str, Path, Dataset, Listing)) for entry in data):
            raise ValueError("training on a Dask cluster needs the images as files (the "
                             "workers read them): give datasets or folders, not images "
                             "in memory")
        if len(data) == 1 and isinstance(data[0], Listing):
            listing = data[0]
        elif any(isinstance(entry, Dataset) for entry in data):
            # datasets in memory: their landmarks may not be saved, so they travel
            listing = Listing.from_datasets([entry if isinstance(entry, Dataset)
                                             else load_dataset(entry) for entry in data])
        else:  # folders: the workers read the landmarks
            listing = Listing.from_folders(data)
        if not len(listing):
            raise ValueError("no annotated images to train on")
        return listing, listing.landmark_names
    out, names = [], None
    for entry in data:
        if isinstance(entry, Listing):
            names = names or entry.landmark_names
            out += [replace(smp.loaded(), index=len(out) + i) for i, smp in enumerate(entry)]
            continue
        if isinstance(entry, (str, Path)):
            entry = load_dataset(entry)
        if isinstance(entry, Dataset):
            names = names or entry.landmark_names
            for item in entry.annotated:
                # absolute: a cluster's workers need not share this process's folder
                out.append(Sample(str(item.image_path), to_grey(item.load_image()),
                                  np.asarray(item.points, float),
                                  path=Path(item.image_path).absolute(), index=len(out)))
        else:
            image, points = entry
            out.append(Sample(f"image {len(out)}", to_grey(image), np.asarray(points, float),
                              index=len(out)))
    if not out:
        raise ValueError("no annotated images to train on")
    v = out[0].points.shape[0]
    for s in out:
        check_image_size(s.grey, s.name)
        if s.points.shape != (v, 2):
            raise ValueError(f"{s.name}: {s.points.shape[0]} landmarks, expected {v}")
    return out, names
