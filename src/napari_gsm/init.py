"""Starting shapes: face detector + learned box-to-pose regression, user box, prior, points.

Every start is the mean shape placed by a similarity (or, for points, the points
themselves). The placements that need learning -- where shapes sit in the training images,
and how a face detector's box (OpenCV's Viola-Jones, or any detector whose boxes were given
at training) relates to the face's landmarks -- are kept in :class:`StartModel` inside the
model file, with the errors of each start, from which training simulates starts
(:meth:`StartModel.simulate`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .geometry import apply_similarity, shape_size, similarity_fit

__all__ = ["StartModel", "FaceDetector", "BOX_KINDS", "place_mean", "start_from_box",
           "start_from_points"]


def place_mean(s0, centre, size, angle=0.0):
    """The mean shape with its centroid at ``centre``, :func:`shape_size` ``size``, rotated.

    Returns
    -------
    (v, 2) array
    """
    c = s0 - s0.mean(0)
    k = size / shape_size(s0)
    R = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (c @ R.T) * k + np.asarray(centre, float)


def start_from_box(s0, box):
    """Mean shape fitted into ``box = (x0, y0, x1, y1)``, read as the landmarks' bounding box.

    The scale is the mean of the width and height ratios, so an approximate box drawn by
    hand gives a sensible start whatever the shape's aspect ratio.
    """
    x0, y0, x1, y1 = (float(b) for b in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"box {box} must have x1 > x0 and y1 > y0")
    lo, hi = s0.min(0), s0.max(0)
    k = 0.5 * ((x1 - x0) / (hi[0] - lo[0]) + (y1 - y0) / (hi[1] - lo[1]))
    return (s0 - (lo + hi) / 2) * k + [(x0 + x1) / 2, (y0 + y1) / 2]


def start_from_points(s0, points):
    """A full start from given points; missing rows (NaN) are filled from the mean shape.

    With fewer than two given points nothing can be placed and ``ValueError`` is raised.
    """
    points = np.asarray(points, float)
    if points.shape != s0.shape:
        raise ValueError(f"expected {s0.shape[0]} points, got {points.shape[0]}")
    ok = np.isfinite(points).all(1)
    if ok.all():
        return points.copy()
    if ok.sum() < 2:
        raise ValueError("need at least two placed points to start from points")
    A, t = similarity_fit(s0, points)
    out = apply_similarity(s0, A, t)
    out[ok] = points[ok]
    return out


class FaceDetector:
    """OpenCV's Viola-Jones frontal face detector (the Haar cascade shipped in ``cv2.data``)."""

    def __init__(self, cascade="haarcascade_frontalface_default.xml", *, scale_factor=1.1,
                 min_neighbors=4, min_size=24):
        path = cv2.data.haarcascades + cascade
        self._clf = cv2.CascadeClassifier(path)
        if self._clf.empty():
            raise RuntimeError(f"could not load the face detector from {path}")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    def detect(self, grey):
        """All face boxes ``(n, 4)`` as ``(x0, y0, x1, y1)``, largest first."""
        img = np.clip(np.asarray(grey) * 255.0, 0, 255).astype(np.uint8)
        found = self._clf.detectMultiScale(img, scaleFactor=self.scale_factor,
                                           minNeighbors=self.min_neighbors,
                                           minSize=(self.min_size, self.min_size))
        if len(found) == 0:
            return np.zeros((0, 4))
        found = np.asarray(found, float)
        found = found[np.argsort(-found[:, 2] * found[:, 3])]
        return np.column_stack([found[:, 0], found[:, 1], found[:, 0] + found[:, 2],
                                found[:, 1] + found[:, 3]]) - 0.5  # pixel edges -> centres


#: What can be said about a box given for a start: the landmarks' bounding box (a box drawn
#: by hand around the object), or a face detector's box, placed by the learned placement.
BOX_KINDS = ("landmarks", "detector")


@dataclass
class StartModel:
    """Learned placements of the mean shape, and the errors of the starts they give.

    Attributes
    ----------
    prior : (4,) array
        Mean over training images of ``(cx / W, cy / H, size / sqrt(W H), angle)`` of the
        annotated shapes (centroid, :func:`shape_size`, rotation against the mean shape).
    prior_std : (4,) array
        Their standard deviations (used to draw perturbations of prior starts).
    face : (3,) array or None
        Detector-box placement ``(kx, ky, ks)``: centroid ``= (x0 + kx w, y0 + ky h)`` and
        size ``= ks sqrt(w h)`` for a detector's box ``(x0, y0, x1, y1)`` of width ``w`` and
        height ``h`` (``None`` if no detector's boxes were learned). For the square
        Viola-Jones boxes ``sqrt(w h) = w``.
    face_std : (3,) array or None
        Residual standard deviations of that placement, ``(centroid x, centroid y, size)``,
        in box sizes ``sqrt(w h)``.
    face_errors : (n, 4) array or None
        The errors of the starts that placement gave on the ``n`` training images with a
        box: :func:`start_error` of each start against the true shape. Simulated detector
        starts draw from them (:meth:`simulate`): the errors are heavy-tailed (most boxes
        are good, a few far off), which a normal distribution with their spread is not.
    box_std : (3,) array
        Standard deviations of ``(dx, dy, log size ratio)`` between the true shape and the
        start from its own bounding box (the error of a careful user box).
    face_source : str or None
        Whose boxes ``face`` places: ``'viola-jones'`` (OpenCV's detector, which
        :meth:`napari_gsm.model.Model.start` can run itself) or ``'boxes'`` (boxes given at
        training, from any detector; fits then need that detector's boxes).
    sums : (3, 7) array or None
        While training only (not saved): the :func:`placement_sums` the prior and the
        box start's spread were learned from, so a fold's can be taken out.
    """

    prior: np.ndarray
    prior_std: np.ndarray
    box_std: np.ndarray
    face: np.ndarray = None
    face_std: np.ndarray = None
    face_source: str = None
    face_errors: np.ndarray = None
    sums: np.ndarray = None

    @classmethod
    def train(cls, s0, shapes, image_shapes, face_boxes=None, face_source="viola-jones"):
        """Learn placements from training shapes ``(N, v, 2)`` and image ``(H, W)`` sizes.

        ``face_boxes`` is an ``(N, 4)`` array of a detector's boxes (NaN rows where none
        matched), from ``face_source`` (see the attribute).
        """
        shapes = np.asarray(shapes, float)
        out = cls.from_sums(placement_sums(s0, shapes, image_shapes))
        if face_boxes is not None:
            out.learn_face(face_rows(shapes, face_boxes),
                           lambda face: face_start_errors(shapes, face_boxes, s0, face),
                           face_source)
        return out

    @classmethod
    def from_sums(cls, sums):
        """The prior placement and the box start's spread from :func:`placement_sums`
        (added over the training images' parts); no detector-box placement yet."""
        mean, std = _mean_std(sums)
        return cls(prior=mean[:4], prior_std=std[:4], box_std=std[4:], sums=np.array(sums))

    def learn_face(self, rows, errors, face_source):
        """Learn the detector-box placement from :func:`face_rows` of the training images
        (with at least two boxes; else nothing is learned); ``errors(face)`` gives the
        :func:`face_start_errors` of that placement on the same images."""
        rows = np.asarray(rows, float).reshape(-1, 5)
        if len(rows) < 2:
            return
        z = rows[:, :3]
        self.face = np.median(z, 0)
        # Residuals in box sizes sqrt(w h), the unit the simulated starts use.
        self.face_std = np.column_stack([(z[:, 0] - self.face[0]) * rows[:, 3],
                                         (z[:, 1] - self.face[1]) * rows[:, 4],
                                         z[:, 2]]).std(0)
        self.face_errors = np.asarray(errors(self.face), float).reshape(-1, 4)
        self.face_source = face_source

    def from_prior(self, s0, image_shape):
        """Mean shape where shapes usually sit in an image of ``(H, W)``."""
        H, W = image_shape[:2]
        cx, cy, size, angle = self.prior
        return place_mean(s0, (cx * W, cy * H), size * np.sqrt(W * H), angle)

    def from_face_box(self, s0, box):
        """Mean shape placed from a detector's box ``(x0, y0, x1, y1)``."""
        if self.face is None:
            raise ValueError("this model has not learned where a face detector's box puts "
                             "the shape (train with face_detector=True / --face-detector, "
                             "or with a detector's boxes / --boxes)")
        return _place_in_box(s0, self.face, box)

    def choose_face(self, boxes, image_shape):
        """The detection, of ``(n, 4)`` boxes, whose placement the prior finds most likely.

        A detector may also fire on a background patch or another face; the learned prior
        (where and how large shapes sit in training images) tells the likely one apart.
        """
        boxes = np.asarray(boxes, float).reshape(-1, 4)
        if len(boxes) <= 1 or self.face is None:
            return boxes[0] if len(boxes) else None
        H, W = image_shape[:2]
        kx, ky, ks = self.face
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        z = np.column_stack([(boxes[:, 0] + kx * w) / W, (boxes[:, 1] + ky * h) / H,
                             ks * np.sqrt(w * h) / np.sqrt(W * H)])
        d = (z - self.prior[:3]) / np.maximum(self.prior_std[:3], 1e-3)
        return boxes[int(np.argmin((d * d).sum(1)))]

    # -- simulated starts ----------------------------------------------------------------
    def start_kind(self, kind="auto"):
        """The start to simulate: 'auto' is the one a fit without a box or points uses
        (the detector's box when a placement was learned, else the prior); 'face' (a
        detector's box), 'box' (the landmarks' bounding box) and 'prior' name themselves."""
        if kind == "auto":
            return "face" if self.face is not None else "prior"
        if kind not in ("face", "box", "prior"):
            raise ValueError(f"start kind must be 'auto', 'face', 'box' or 'prior', not {kind!r}")
        if kind == "face" and self.face is None:
            raise ValueError("simulating detector-box starts needs a model trained with a face "
                             "detector or a detector's boxes")
        return kind

    def simulate(self, s0, truth, image_shape, kind, M, rng, spread=1.0):
        """``M`` starts ``(M, v, 2)`` for a shape ``truth``, erring like real ``kind`` starts.

        The mean shape is placed at the true placement (centroid, size, angle) moved by
        errors like those measured on the training images (``spread`` scales them):

        - 'face': one of the errors the detector-box placement made (:attr:`face_errors`,
          drawn whole: centroid, size and rotation together);
        - 'box': normal errors with the spread of a start from the landmarks' own bounding
          box (:attr:`box_std`);
        - 'prior': normal errors with the prior placement's spread (:attr:`prior_std`).

        Box and prior starts are turned like the average training shape, so their rotation
        error is the spread of the true shapes' angles. Used to train GSM-CR and to choose
        GSM's shape prior weight, so both see the starts a fit gets.
        """
        kind = self.start_kind(kind)
        c = np.nanmean(truth, 0)
        size = shape_size(truth)
        A, _ = similarity_fit(s0, truth)
        angle = np.arctan2(A[1, 0], A[0, 0])
        if kind == "face":
            e = self.face_errors[rng.integers(len(self.face_errors), size=M)] * spread
            return np.stack([place_mean(s0, c + e[j, :2] * size, size * np.exp(e[j, 2]),
                                        angle + e[j, 3]) for j in range(M)])
        z = rng.standard_normal((M, 4)) * spread
        if kind == "box":
            std = self.box_std
            cs = c + z[:, :2] * std[:2] * size
            sizes = size * np.exp(z[:, 2] * std[2])
        else:
            H, W = image_shape[:2]
            cs = c + z[:, :2] * self.prior_std[:2] * [W, H]
            sizes = size * np.exp(z[:, 2] * self.prior_std[2] / max(self.prior[2], 1e-6))
        # Within a sane range for tiny or odd training sets.
        angles = angle + z[:, 3] * float(np.clip(self.prior_std[3], 0.02, 0.3))
        return np.stack([place_mean(s0, cs[j], sizes[j], angles[j]) for j in range(M)])

    def to_arrays(self):
        out = {"start_prior": self.prior, "start_prior_std": self.prior_std,
               "start_box_std": self.box_std}
        if self.face is not None:
            out["start_face"] = self.face
            out["start_face_std"] = self.face_std
            out["start_face_source"] = np.array(self.face_source)
            out["start_face_errors"] = self.face_errors
        return out

    @classmethod
    def from_arrays(cls, arrays):
        face = arrays.get("start_face")
        source = arrays.get("start_face_source")
        errors = arrays.get("start_face_errors")
        out = cls(prior=arrays["start_prior"], prior_std=arrays["start_prior_std"],
                  box_std=arrays["start_box_std"], face=face,
                  face_std=arrays.get("start_face_std"),
                  # models from before given boxes: the placement is Viola-Jones'
                  face_source=None if face is None
                  else (str(source) if source is not None else "viola-jones"),
                  face_errors=errors)
        if face is not None and errors is None:
            out.face_errors = out._normal_face_errors()
        return out

    def _normal_face_errors(self, n=1000):
        """Start errors of a model file from before they were kept: normal draws with the
        residual spreads (box sizes are ``1 / ks`` shape sizes) and the angles' spread."""
        z = np.random.default_rng(0).standard_normal((n, 4))
        ks = self.face[2]
        return np.column_stack([z[:, :2] * self.face_std[:2] / ks,
                                np.log(np.maximum(1 + z[:, 2] * self.face_std[2] / ks, 0.3)),
                                z[:, 3] * float(np.clip(self.prior_std[3], 0.02, 0.3))])


def _place_in_box(s0, face, box):
    """The mean shape placed in a detector's box by the placement ``face = (kx, ky, ks)``."""
    x0, y0, x1, y1 = (float(b) for b in box)
    w, h = x1 - x0, y1 - y0
    if not (w > 0 and h > 0):
        raise ValueError(f"box {box} must have x1 > x0 and y1 > y0")
    kx, ky, ks = face
    return place_mean(s0, (x0 + kx * w, y0 + ky * h), ks * np.sqrt(w * h))


def start_error(start, truth):
    """How a start errs: ``(dx, dy, log size ratio, angle)`` of ``start`` against ``truth``.

    The centroid offset is in true shape sizes, the angle (radians) is the start's rotation
    against the true shape; :meth:`StartModel.simulate` applies such errors to a true shape.
    """
    size = shape_size(truth)
    ok = np.isfinite(truth).all(1)
    d = (start[ok].mean(0) - truth[ok].mean(0)) / size
    A, _ = similarity_fit(truth[ok], start[ok])
    return [d[0], d[1], np.log(shape_size(start[ok]) / size), np.arctan2(A[1, 0], A[0, 0])]


def _placement_error(start, truth):
    """``(dx, dy, log size ratio)`` of ``truth`` relative to ``start``, in start sizes."""
    size = shape_size(start)
    d = (np.nanmean(truth, 0) - start.mean(0)) / size
    return [d[0], d[1], np.log(shape_size(truth) / size)]


def placement_sums(s0, shapes, image_shapes):
    """Sums over training shapes of their prior placements and own-box start errors.

    Returns
    -------
    (3, 7) array
        Count, sum and sum of squares of ``(cx / W, cy / H, size / sqrt(W H), angle)``
        (:attr:`StartModel.prior`) and of the :func:`_placement_error` of the start from
        each shape's own bounding box (:attr:`StartModel.box_std`), per shape ``(v, 2)``
        of an ``(H, W)`` image; parts' sums add up.
    """
    out = np.zeros((3, 7))
    for s, (H, W) in zip(shapes, image_shapes):
        H, W = float(H), float(W)
        A, _ = similarity_fit(s0, s)
        c = np.nanmean(s, 0)
        ok = np.isfinite(s).all(1)
        start = start_from_box(s0, (*s[ok].min(0), *s[ok].max(0)))
        row = np.r_[c[0] / W, c[1] / H, shape_size(s) / np.sqrt(W * H),
                    np.arctan2(A[1, 0], A[0, 0]), _placement_error(start, s)]
        out += [np.ones(7), row, row * row]
    return out


def _mean_std(sums):
    """Means and standard deviations from :func:`placement_sums`."""
    n = sums[0]
    mean = sums[1] / n
    return mean, np.sqrt(np.maximum(sums[2] / n - mean ** 2, 0.0))


def face_rows(shapes, face_boxes):
    """Per shape with a detector's box ``(x0, y0, x1, y1)`` (NaN: none), where the box
    puts it: ``(kx, ky, ks, w / r, h / r)`` with centroid ``= (x0 + kx w, y0 + ky h)``,
    size ``= ks r``, ``r = sqrt(w h)``; ``(n, 5)``."""
    out = []
    for s, b in zip(shapes, np.asarray(face_boxes, float).reshape(-1, 4)):
        if not np.isfinite(b).all():
            continue
        w, h = b[2] - b[0], b[3] - b[1]
        c, r = np.nanmean(s, 0), np.sqrt(w * h)
        out.append([(c[0] - b[0]) / w, (c[1] - b[1]) / h, shape_size(s) / r, w / r, h / r])
    return np.asarray(out, float).reshape(-1, 5)


def face_start_errors(shapes, face_boxes, s0, face):
    """:func:`start_error` of the placement ``face`` in each detector's box, per shape
    with a box, ``(n, 4)``."""
    return np.array([start_error(_place_in_box(s0, face, b), s)
                     for s, b in zip(shapes, np.asarray(face_boxes, float).reshape(-1, 4))
                     if np.isfinite(b).all()], float).reshape(-1, 4)
