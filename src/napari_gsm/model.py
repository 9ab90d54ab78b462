"""The trained model: shape model, detectors, starts and the method's own state.

``train`` (:mod:`napari_gsm.learning`, re-exported here) builds a :class:`Model` from
annotated images, ``Model.fit`` places landmarks on a new image, ``Model.update`` adds one
accepted annotation incrementally, and ``Model.save`` / :func:`load_model` use the
versioned ``.npz`` + JSON model file (no pickle).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass

import numpy as np

from .calibration import Calibration
from .confidence import assess, bbox_diagonal, landmark_features
from .detectors import Detectors
from .features import FeatureSpec, Pyramid
from .init import BOX_KINDS, FaceDetector, StartModel, start_from_box, start_from_points
from .io import load_model_file, save_model_file, to_grey
from ._threads import one_blas_thread
from .io.errors import ModelFileError
from .methods import METHODS, GSMParams
from .shape import ShapeModel
from .training import Sample, accumulate

__all__ = ["Model", "TrainParams", "FEATURE_CHOICES", "feature_choice", "train",
           "choose_lam", "load_model", "Sample",
           "check_image_size", "MIN_IMAGE_SIDE", "LAM_GRID", "LAM_DEFAULT"]


@dataclass(frozen=True)
class TrainParams:
    """Training hyper-parameters shared by every method.

    ``features`` is 'hog' or 'grey'; ``signed`` HoG with signed orientations
    (:class:`~napari_gsm.features.FeatureSpec`; always False for grey, which has no
    orientations); ``n_bins`` HoG's orientation bins over 180 degrees, twice as many
    channels over 360 degrees when signed (default: 6 signed, 12 channels; 9 unsigned).
    ``sigma`` is the finest target width in grid samples (pixels for grey, cells for HoG),
    as in the paper (grey 5, HoG 1.5); ``coarse`` the wider widths fitted first, as
    multiples of ``sigma`` (coarse to fine; empty for the paper's single width); ``ref_size`` the mean shape's size in the reference frame
    (pixels, RMS distance of the landmarks from their centroid); ``reg`` the filter's ridge
    weight relative to the mean spectral energy; ``jitter`` how many extra training patches
    per image are sampled at a small random rotation and scale of the pose (robustness to
    pose error at fitting time).
    """

    features: str = "hog"
    signed: bool = True
    n_bins: int | None = None
    patch: int | None = None
    cell: int = 3
    sigma: float | None = None
    coarse: tuple = (2.0,)
    ref_size: float = 40.0
    reg: float = 0.01
    jitter: int = 0
    face_detector: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.features != "hog":  # grey levels have no orientations to sign
            object.__setattr__(self, "signed", False)
        if self.n_bins is None:
            # Signed: 12 channels of 30 degrees were as accurate as 18 of 20 degrees on
            # held-out training faces, at two thirds of the feature reading.
            object.__setattr__(self, "n_bins", 6 if self.signed else 9)

    def feature_spec(self):
        patch = self.patch or (15 if self.features == "hog" else 31)
        return FeatureSpec(kind=self.features, patch=patch, cell=self.cell,
                           n_bins=self.n_bins, signed=self.signed)

    def sigmas_px(self):
        """Target widths in reference-frame pixels, coarse to fine."""
        spec = self.feature_spec()
        sigma = self.sigma if self.sigma is not None else (1.5 if spec.kind == "hog" else 4.0)
        return tuple(sorted((k * sigma * spec.stride for k in (*self.coarse, 1.0)),
                            reverse=True))


#: The feature choices offered to people (``train --features``, the widgets), as
#: :class:`TrainParams` fields.
FEATURE_CHOICES = {"hog": {"features": "hog", "signed": False, "n_bins": None},
                   "hog-signed": {"features": "hog", "signed": True, "n_bins": None},
                   "grey": {"features": "grey"}}


def feature_choice(params):
    """The :data:`FEATURE_CHOICES` name of ``params``' features."""
    return "hog-signed" if params.features == "hog" and params.signed else params.features


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
        # Files from before signed HoG or the bin count were options hold 9 unsigned bins.
        tp = TrainParams(**{"signed": False, "n_bins": 9, **tp,
                            "coarse": tuple(tp.get("coarse", ()))})
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


# train() lives in its own module; imported last, as it builds on Model above.
from .learning import LAM_DEFAULT, LAM_GRID, choose_lam, train  # noqa: E402
