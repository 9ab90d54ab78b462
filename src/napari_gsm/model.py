"""The trained model: shape model, detectors, starts and the method's own state.

``train`` builds a :class:`Model` from annotated images, ``Model.fit`` places landmarks on a
new image, ``Model.update`` adds one accepted annotation incrementally, and
``Model.save`` / :func:`load_model` use the versioned ``.npz`` + JSON model file (no pickle).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .calibration import Calibration
from .confidence import assess, bbox_diagonal, landmark_features
from .crossfit import calibration_folds, cross_fits
from .detectors import Detectors
from .features import FeatureSpec, Pyramid
from .geometry import shape_size
from .init import BOX_KINDS, FaceDetector, StartModel, start_from_box, start_from_points
from .io import Dataset, load_dataset, load_model_file, save_model_file, to_grey
from ._threads import one_blas_thread
from .io.errors import ModelFileError
from .methods import METHODS, GSMParams
from .methods.gsm import REFIT_SCALE_DEFAULT
from .quality import score_reference
from .refit import choose_refit_scale
from .shape import ShapeModel
from .training import (InProcess, Sample, accumulate, add_sums, detector_sums,
                       empty_detectors, gather_rows, lam_errors)

__all__ = ["Model", "TrainParams", "train", "load_model", "Sample", "check_image_size",
           "MIN_IMAGE_SIDE"]


@dataclass(frozen=True)
class TrainParams:
    """Training hyper-parameters shared by every method.

    ``sigma`` is the finest target width in grid samples (pixels for grey, cells for HoG),
    as in the paper (grey 5, HoG 1.5); ``coarse`` the wider widths fitted first, as
    multiples of ``sigma`` (coarse to fine; empty for the paper's single width); ``ref_size`` the mean shape's size in the reference frame
    (pixels, RMS distance of the landmarks from their centroid); ``reg`` the filter's ridge
    weight relative to the mean spectral energy; ``jitter`` how many extra training patches
    per image are sampled at a small random rotation and scale of the pose (robustness to
    pose error at fitting time).
    """

    features: str = "hog"
    patch: int | None = None
    cell: int = 3
    sigma: float | None = None
    coarse: tuple = (2.0,)
    ref_size: float = 40.0
    reg: float = 0.01
    jitter: int = 0
    face_detector: bool = False
    seed: int = 0

    def feature_spec(self):
        patch = self.patch or (15 if self.features == "hog" else 31)
        return FeatureSpec(kind=self.features, patch=patch, cell=self.cell)

    def sigmas_px(self):
        """Target widths in reference-frame pixels, coarse to fine."""
        spec = self.feature_spec()
        sigma = self.sigma if self.sigma is not None else (1.5 if spec.kind == "hog" else 4.0)
        return tuple(sorted((k * sigma * spec.stride for k in (*self.coarse, 1.0)),
                            reverse=True))


def _as_samples(data, load=True):
    """Annotated samples from a dataset, folder, list of those, or (image, points) pairs.

    With ``load`` False the images of datasets are not read (their samples keep the path;
    :meth:`Sample.image` reads it where the work runs), and images in memory are refused.
    """
    if isinstance(data, (str, Path, Dataset)):
        data = [data]
    out, names = [], None
    for entry in data:
        if isinstance(entry, (str, Path)):
            entry = load_dataset(entry)
        if isinstance(entry, Dataset):
            names = names or entry.landmark_names
            for item in entry.annotated:
                grey = to_grey(item.load_image()) if load else None
                out.append(Sample(str(item.image_path), grey, np.asarray(item.points, float),
                                  path=item.image_path, index=len(out)))
        else:
            if not load:
                raise ValueError("training on a Dask cluster needs the images as files (the "
                                 "workers read them): give datasets or folders, not images "
                                 "in memory")
            image, points = entry
            out.append(Sample(f"image {len(out)}", to_grey(image), np.asarray(points, float),
                              index=len(out)))
    if not out:
        raise ValueError("no annotated images to train on")
    v = out[0].points.shape[0]
    for s in out:
        if s.grey is not None:
            check_image_size(s.grey, s.name)
        if s.points.shape != (v, 2):
            raise ValueError(f"{s.name}: {s.points.shape[0]} landmarks, expected {v}")
    return out, names


#: Images smaller than this on either side cannot be fitted or trained on.
MIN_IMAGE_SIDE = 8


def check_image_size(grey, name=None):
    """Raise a ValueError a person can read when an image is too small to fit."""
    h, w = np.shape(grey)[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise ValueError(f"{name + ': ' if name else ''}image too small to fit: {w}x{h} pixels "
                         f"(at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} needed)")


class Model:
    """A trained landmark model (any method).

    Use :func:`train` or :func:`load_model` to make one.

    Attributes
    ----------
    method : str
        'gsm', 'clm', 'gsm-cr' or 'gsm3d'.
    shape : ShapeModel
    detectors : Detectors
    features : FeatureSpec
    starts : StartModel
    landmark_names : list of str
    train_params : TrainParams
    gsm_params : GSMParams
    state : object or None
        The method's own trained state (cascade, 3D shape model), or None.
    summary : dict
        Training-set summary stored in the model file.
    calibration : Calibration or None
        What turns the evidence at a fit into per-landmark confidence
        (:mod:`napari_gsm.calibration`); None for a model file written before napari-gsm
        calibrated it (:attr:`confidence_note` says so).
    """

    def __init__(self, method, shape, detectors, features, starts, landmark_names,
                 train_params, gsm_params, state=None, summary=None):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
        self.method = method
        self.shape = shape
        self.detectors = detectors
        self.features = features
        self.starts = starts
        self.landmark_names = list(landmark_names)
        self.train_params = train_params
        self.gsm_params = gsm_params
        self.state = state
        self.summary = summary or {}
        self.calibration = None
        self._face_detector = None
        self._precision = None

    @property
    def n_landmarks(self):
        return self.shape.n_landmarks

    def __getstate__(self):
        # OpenCV's face detector does not pickle (a worker of a cluster makes its own).
        return {**self.__dict__, "_face_detector": None}

    def for_workers(self, sums=False):
        """A shallow copy to send to a cluster's workers: the detectors' filters without
        their statistics (which fits do not need), or with them when ``sums``."""
        out = copy.copy(self)
        if self.detectors is not None and not sums:
            out.detectors = (self.detectors.for_fitting() if self.detectors.filters is not None
                             else None)
        return out

    @property
    def precision(self):
        """``Sigma_s^-1`` (cached; refreshed by :meth:`update`)."""
        if self._precision is None:
            self._precision = self.shape.precision
        return self._precision

    @property
    def confidence_note(self):
        """Why fits of this model get no confidence (a sentence), or None when they do."""
        cal = self.calibration
        if cal is None:
            return ("this model was saved before napari-gsm calibrated its confidence: "
                    "retrain it to get each landmark's confidence")
        if not cal.ready:
            return cal.info.get("note") or (f"the confidence is calibrated on "
                                            f"{cal.n_images} fit(s) so far; it needs 4")
        return None

    @property
    def face_detector(self):
        if self._face_detector is None:
            self._face_detector = FaceDetector()
        return self._face_detector

    # -- starts ------------------------------------------------------------------------
    def start(self, grey, init="auto", *, box=None, points=None, box_kind="landmarks"):
        """Starting shape ``(v, 2)`` and the name of the start used.

        ``init`` is 'detect' (OpenCV's face detector; models trained with it), 'box' (``box``
        given), 'prior', 'points' (``points`` given, NaN rows filled from the mean shape) or
        'auto': points if given, else box, else the face detector when the model was
        trained with it and it finds a face, else the prior. ``box_kind`` says what the
        box is: 'landmarks', the landmarks' bounding box (a box drawn around the object),
        or 'detector', a face detector's box, placed as the model learned for that
        detector's boxes (:attr:`StartModel.face <napari_gsm.init.StartModel>`).
        """
        return self._start(grey, init, box, points, box_kind)[:2]

    def _start(self, grey, init, box, points, box_kind="landmarks"):
        """:meth:`start`, plus how many faces the detector found (None if it did not run)."""
        s0 = self.shape.s0
        n_faces = None
        if box_kind not in BOX_KINDS:
            raise ValueError(f"box_kind must be one of {', '.join(BOX_KINDS)}, not {box_kind!r}")
        if init == "auto":
            if points is not None:
                init = "points"
            elif box is not None:
                init = "box"
            elif self.starts.face_source == "viola-jones":
                faces = self.face_detector.detect(grey)
                n_faces = len(faces)
                box = self.starts.choose_face(faces, grey.shape)
                if box is not None:
                    return self.starts.from_face_box(s0, box), "detect", n_faces
                init = "prior"
            else:
                init = "prior"
        if init == "points":
            if points is None:
                raise ValueError("init='points' needs points")
            return start_from_points(s0, points), "points", None
        if init == "box":
            if box is None:
                raise ValueError("init='box' needs a box (x0, y0, x1, y1)")
            if box_kind == "detector":
                return self.starts.from_face_box(s0, box), "detector box", None
            return start_from_box(s0, box), "box", None
        if init == "detect":
            if self.starts.face_source != "viola-jones":
                raise ValueError(
                    "this model was not trained with the face detector (train with "
                    "face_detector=True / --face-detector)" if self.starts.face is None else
                    "this model learned where the given detector boxes put the shape, not "
                    "OpenCV's face detector: fit from that detector's boxes "
                    "(box_kind='detector' / --boxes with --box-kind detector)")
            faces = self.face_detector.detect(grey)
            box = self.starts.choose_face(faces, grey.shape)
            if box is None:
                raise LookupError("the face detector found no face")
            return self.starts.from_face_box(s0, box), "detect", len(faces)
        if init == "prior":
            return self.starts.from_prior(s0, grey.shape), "prior", n_faces
        raise ValueError(f"unknown init {init!r}")

    # -- fitting -----------------------------------------------------------------------
    def fit(self, image, init="auto", *, box=None, points=None, box_kind="landmarks",
            pinned=None, history=True, warm_start=False, confidence=True, off_fraction=None,
            **method_kw):
        """Place the landmarks on an image.

        BLAS runs on one thread during the fit (:func:`~napari_gsm._threads.one_blas_thread`).

        Parameters
        ----------
        image : array
            Grey ``(H, W)`` or colour ``(H, W, 3|4)`` image, any dtype.
        init, box, points, box_kind
            The start, see :meth:`start`. ``box`` is ``(x0, y0, x1, y1)`` in 0-based pixels.
        pinned : (v,) bool array, optional
            Landmarks held exactly at ``points`` (a person has placed them); needs ``points``.
            The other landmarks start from ``init``: e.g. ``init='detect'`` with two pinned
            eye corners starts from the face detector with those two put where they are.
        warm_start : bool
            The start is already close to the answer (the previous video frame's fit, see
            :func:`~napari_gsm.track.track`): skip what the method does for capture range
            (GSM and GSM 2D+3D fit at the finest target width only, GSM-CR skips its
            coarse levels, CLM runs its narrowest kernel only). Fewer iterations; a start
            farther off than the finest width reaches may not be recovered.
        confidence : bool
            Fill ``FitResult.confidence`` (:func:`~napari_gsm.confidence.assess`: one more
            warp and feature read at the finest width and a solve of GSM's system, a few
            milliseconds, reported as ``extra['confidence_ms']`` and not counted in
            ``fit_ms``). It stays None when this is False or the model has no calibration
            (:attr:`confidence_note`).
        off_fraction : float, optional
            A landmark is "off" when farther than this fraction of the fitted shape's
            bounding-box diagonal from where it belongs (default 0.02).

        Returns
        -------
        FitResult
            When the face detector ran, ``extra`` holds ``detect_ms`` (not part of
            ``fit_ms``) and ``n_faces`` (how many it found; 0: the start is the prior).

        Raises
        ------
        ValueError
            If the image is smaller than ``MIN_IMAGE_SIDE`` pixels on a side, or the pins
            have no positions.
        """
        t0 = time.perf_counter()
        grey = to_grey(image)
        check_image_size(grey)
        if pinned is not None:
            pinned = np.asarray(pinned, bool)
            if pinned.shape != (self.n_landmarks,):
                raise ValueError(f"pinned must have {self.n_landmarks} entries")
            if pinned.any() and points is None:
                raise ValueError("pinned landmarks need their positions in points")
            if pinned.any() and not np.isfinite(np.asarray(points)[pinned]).all():
                raise ValueError("a pinned landmark has no position")
            if not pinned.any():
                pinned = None
        t_start = time.perf_counter()
        # With pins, ``points`` holds their positions: an 'auto' start must not mistake
        # them for a start shape.
        given = points if pinned is None or init == "points" else None
        start, used, n_faces = self._start(grey, init, box, given, box_kind)
        if pinned is not None:
            start[pinned] = np.asarray(points, float)[pinned]
        detect_ms = (time.perf_counter() - t_start) * 1e3 if n_faces is not None else 0.0
        with one_blas_thread():
            pyramid = Pyramid(grey)
            result = METHODS[self.method].fit(self, pyramid, start, pinned=pinned,
                                              history=history, warm_start=warm_start,
                                              **method_kw)
        result.fit_ms = (time.perf_counter() - t0) * 1e3 - detect_ms
        result.init = used
        result.start = start
        result.method = self.method
        if n_faces is not None:
            result.extra["detect_ms"] = round(detect_ms, 3)
            result.extra["n_faces"] = n_faces
        if confidence and self.calibration is not None and self.calibration.ready:
            t_conf = time.perf_counter()
            with one_blas_thread():
                result.confidence = assess(self, pyramid, result.points,
                                           off_fraction=off_fraction, pinned=pinned)
            result.extra["confidence_ms"] = round((time.perf_counter() - t_conf) * 1e3, 3)
        return result

    # -- incremental update ------------------------------------------------------------
    def update(self, image, points):
        """Add one annotated image to the shape model and detectors, without retraining.

        The method's own state (a cascade, a 3D model) is left as trained: it needs the
        whole training set, see :func:`train`. The confidence calibration stays usable and
        learns from the image: before the image is added, the model fits it from the start
        a fit uses when given nothing (a fit by a model that has not seen it, like the
        calibration fits of training) and that fit's features and true errors join the
        calibration, whose error model is refitted (:meth:`Calibration.add`).
        """
        points = np.asarray(points, float)
        if points.shape != (self.n_landmarks, 2):
            raise ValueError(f"expected ({self.n_landmarks}, 2) points, got {points.shape}")
        grey = to_grey(image)
        check_image_size(grey)
        pyramid = Pyramid(grey)
        if self.calibration is not None:
            self._calibrate_on(pyramid, grey, points)
        accumulate(self, pyramid, points, np.random.default_rng(self.summary.get(
            "n_images", 0)))
        self.detectors.solve()
        self.shape.add(points)
        self._precision = None
        self.summary["n_images"] = self.summary.get("n_images", 0) + 1
        self.summary["n_updates"] = self.summary.get("n_updates", 0) + 1

    def _calibrate_on(self, pyramid, grey, points):
        """Add this model's fit of an annotated image to the calibration (:meth:`update`)."""
        with one_blas_thread():
            res = self.fit(grey, "auto", history=False, confidence=False)
            X, scale = landmark_features(self, pyramid, res.points)
            self.calibration.add(X, np.linalg.norm(res.points - points, axis=1) * scale,
                                 bbox_diagonal(res.points) * scale)

    # -- files -------------------------------------------------------------------------
    def save(self, path, *, backup=True):
        """Write the model to a versioned ``.npz`` + JSON file; returns the path.

        The write is atomic (temp file + rename), so an interrupted save or training leaves
        the previous model intact; ``backup`` also keeps it as a numbered ``name.~N~``.
        """
        arrays = {}
        arrays.update(self.shape.to_arrays())
        arrays.update(self.detectors.to_arrays())
        arrays.update(self.starts.to_arrays())
        if self.state is not None:
            arrays.update({f"state_{k}": v for k, v in self.state.to_arrays().items()})
        if self.calibration is not None:
            arrays.update(self.calibration.to_arrays())
        meta = {
            "method": self.method,
            "n_landmarks": self.n_landmarks,
            "landmark_names": self.landmark_names,
            "features": asdict(self.features),
            "train_params": asdict(self.train_params),
            "gsm_params": asdict(self.gsm_params),
            "state_params": self.state.params() if self.state is not None else None,
            "training_set": self.summary,
            "calibration": None if self.calibration is None else self.calibration.params(),
        }
        return save_model_file(path, arrays, meta, backup=backup)


def train(data, method="gsm", *, params=None, gsm_params=None, landmark_names=None,
          boxes=None, progress=None, calibrate=True, client=None, **method_kw):
    """Train a model from annotated images.

    Parameters
    ----------
    data : Dataset, path, or list of these, or list of ``(image, points)`` pairs
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
        one): they read the images (``data`` must be datasets or folders, seen by the
        workers at the same paths) and return their parts' sums, which are added here; no
        image is read in this process. None: everything runs here. Both give the same
        model, up to the order of floating-point sums.
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
    v = samples[0].points.shape[0]
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
    t0 = time.perf_counter()
    shapes = np.stack([s.points for s in samples])
    rng = np.random.default_rng(params.seed)
    # Images held out to choose lam: the model is first built without them, measured on
    # them, then they are added exactly as incremental updates add images.
    n_held = min(40, len(samples) // 6) if gsm_params.lam is None else 0
    held = sorted(rng.permutation(len(samples))[:n_held].tolist()) if n_held >= 2 else []
    fit_idx = sorted(set(range(len(samples))) - set(held))
    shape = ShapeModel.train(shapes[fit_idx], ref_size=params.ref_size,
                             # After the pose is aligned the landmarks stay near s0 (within
                             # the shape's deformations), so the frame needs the patch
                             # extent plus a little room; features outside cost time.
                             margin=params.feature_spec().extent + 0.2 * params.ref_size)
    spec = params.feature_spec()
    model = Model(method, shape, None, spec, None, names, params, gsm_params,
                  summary={"n_images": len(samples)})
    # The detectors' sums of the images fitted to and of the held-out ones, apart: the
    # held-out images join the model once lam is chosen.
    light = runner.put(model)
    det, held_det = empty_detectors(model), empty_detectors(model)
    face_boxes = (_given_boxes(samples, boxes) if boxes is not None
                  else np.full((len(samples), 4), np.nan) if params.face_detector else None)
    for idx, into in ((fit_idx, det), (held, held_det)):
        parts = runner.parts([samples[k] for k in idx])
        handles = runner.map(detector_sums, [(p, light, params.face_detector) for p in parts],
                             "detectors", len(samples), done=len(fit_idx) if into is held_det
                             else 0)
        for part, sums in zip(parts, runner.results(handles)):
            add_sums(into, sums)
            for smp, size, box in zip(part, sums.sizes, sums.face_boxes):
                smp.size = size
                if params.face_detector:
                    face_boxes[smp.index] = box
    model.detectors = det
    face_source = "viola-jones" if params.face_detector else "boxes"
    sizes = [s.size for s in samples]
    if held:
        det.solve()
        model.starts = StartModel.train(shape.s0, shapes, sizes, face_boxes, face_source)
        held_samples = [samples[k] for k in held]
        model.gsm_params = replace(gsm_params, lam=choose_lam(model, held_samples, rng,
                                                              runner=runner))
        if gsm_params.refit_scale is None:
            # its own generator, so the rest of training draws what it drew before
            model.gsm_params = replace(model.gsm_params, refit_scale=choose_refit_scale(
                model, held_samples, np.random.default_rng(params.seed), runner=runner))
        add_sums(det, held_det)
        for k in held:
            shape.add(samples[k].points)
    del held_det
    det.solve()
    model._precision = None
    if model.gsm_params.lam is None:  # too few images to hold any out
        model.gsm_params = replace(gsm_params, lam=LAM_DEFAULT)
    if model.gsm_params.refit_scale is None:
        model.gsm_params = replace(model.gsm_params, refit_scale=REFIT_SCALE_DEFAULT)
    model.starts = StartModel.train(shape.s0, shapes, sizes, face_boxes, face_source)
    model.summary.update({
        "trained": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "images": [Path(s.name).name for s in samples][:5000],
        "mean_size_px": float(np.mean([shape_size(p) for p in shapes])),
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
    runner = runner or InProcess()
    starts = [model.starts.simulate(model.shape.s0, smp.points, smp.size, "auto", 1,
                                    rng)[0] for smp in held]
    handle = runner.put(model)
    parts = runner.parts(list(zip(held, starts)))
    errors = gather_rows(runner, runner.map(
        lam_errors, [([s for s, _ in p], handle, [st for _, st in p], grid) for p in parts],
        "choosing the shape prior weight", len(held))).mean(0)
    model.summary["lam_validation"] = {f"{lam:g}": round(float(e), 5)
                                       for lam, e in zip(grid, errors)}
    return float(grid[int(np.argmin(errors))])


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


def load_model(path):
    """Read a model written by :meth:`Model.save`.

    Raises
    ------
    ModelFileError
        For a missing, corrupt, truncated or newer-version file, or one whose contents do
        not fit together.
    """
    arrays, meta = load_model_file(path)
    try:
        method = meta["method"]
        if method not in METHODS:
            raise ModelFileError(path, f"unknown method {method!r}")
        spec = FeatureSpec(**meta["features"])
        shape = ShapeModel.from_arrays(arrays)
        det = Detectors.from_arrays(arrays)
        starts = StartModel.from_arrays(arrays)
        tp = meta["train_params"]
        tp = TrainParams(**{**tp, "coarse": tuple(tp.get("coarse", ()))})
        gp = GSMParams(**meta["gsm_params"])
        model = Model(method, shape, det, spec, starts, meta["landmark_names"], tp, gp,
                      summary=meta.get("training_set") or {})
        # None in files from before the calibration (Model.confidence_note says so).
        model.calibration = Calibration.from_arrays(arrays, meta.get("calibration"))
        impl = METHODS[method]
        if impl.load is not None:
            state = {k[len("state_"):]: v for k, v in arrays.items() if k.startswith("state_")}
            model.state = impl.load(state, meta.get("state_params"))
        if det.filters.shape[1] != shape.n_landmarks or len(model.landmark_names) != shape.n_landmarks:
            raise ModelFileError(path, "landmark counts in the file disagree")
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(path, f"incomplete or inconsistent model file ({exc})") from exc
    return model
