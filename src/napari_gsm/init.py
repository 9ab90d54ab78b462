"""Starting shapes: face detector + learned box-to-pose regression, user box, prior, points.

Every start is the mean shape placed by a similarity (or, for points, the points
themselves). The placements that need learning -- where shapes sit in the training images,
and how a Viola-Jones face box relates to the face's landmarks -- are kept in
:class:`StartModel` inside the model file.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .geometry import apply_similarity, shape_size, similarity_fit

__all__ = ["StartModel", "FaceDetector", "place_mean", "start_from_box", "start_from_points"]


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


@dataclass
class StartModel:
    """Learned placements of the mean shape.

    Attributes
    ----------
    prior : (4,) array
        Mean over training images of ``(cx / W, cy / H, size / sqrt(W H), angle)`` of the
        annotated shapes (centroid, :func:`shape_size`, rotation against the mean shape).
    prior_std : (4,) array
        Their standard deviations (used to draw perturbations of prior starts).
    face : (3,) array or None
        Face-box regression ``(kx, ky, ks)``: centroid ``= (x0 + kx w, y0 + ky w)`` and size
        ``= ks w`` for a detected box of width ``w`` (``None`` if not trained for faces).
    face_std : (3,) array or None
        Residual standard deviations of that regression, in box widths.
    box_std : (3,) array
        Standard deviations of ``(dx, dy, log size ratio)`` between the true shape and the
        start from its own bounding box (the error of a careful user box).
    """

    prior: np.ndarray
    prior_std: np.ndarray
    box_std: np.ndarray
    face: np.ndarray = None
    face_std: np.ndarray = None

    @classmethod
    def train(cls, s0, shapes, image_shapes, face_boxes=None):
        """Learn placements from training shapes ``(N, v, 2)`` and image ``(H, W)`` sizes.

        ``face_boxes`` is an ``(N, 4)`` array of detections (NaN rows where none matched).
        """
        rows, box_err = [], []
        for s, (H, W) in zip(shapes, image_shapes):
            A, _ = similarity_fit(s0, s)
            c = np.nanmean(s, 0)
            rows.append([c[0] / W, c[1] / H, shape_size(s) / np.sqrt(W * H),
                         np.arctan2(A[1, 0], A[0, 0])])
            ok = np.isfinite(s).all(1)
            start = start_from_box(s0, (*s[ok].min(0), *s[ok].max(0)))
            box_err.append(_placement_error(start, s))
        rows = np.array(rows)
        face = face_std = None
        if face_boxes is not None:
            fb = np.asarray(face_boxes, float)
            ok = np.isfinite(fb).all(1)
            if ok.sum() >= 2:
                w = fb[ok, 2] - fb[ok, 0]
                c = np.array([np.nanmean(s, 0) for s in np.asarray(shapes)[ok]])
                z = np.column_stack([(c[:, 0] - fb[ok, 0]) / w, (c[:, 1] - fb[ok, 1]) / w,
                                     [shape_size(s) / wi for s, wi in
                                      zip(np.asarray(shapes)[ok], w)]])
                face, face_std = np.median(z, 0), z.std(0)
        return cls(prior=rows.mean(0), prior_std=rows.std(0),
                   box_std=np.array(box_err).std(0), face=face, face_std=face_std)

    def from_prior(self, s0, image_shape):
        """Mean shape where shapes usually sit in an image of ``(H, W)``."""
        H, W = image_shape[:2]
        cx, cy, size, angle = self.prior
        return place_mean(s0, (cx * W, cy * H), size * np.sqrt(W * H), angle)

    def from_face_box(self, s0, box):
        """Mean shape placed from a face detector box ``(x0, y0, x1, y1)``."""
        if self.face is None:
            raise ValueError("this model was not trained with the face detector "
                             "(train with face_detector=True / --face-detector)")
        x0, y0, x1, _ = box
        w = x1 - x0
        kx, ky, ks = self.face
        return place_mean(s0, (x0 + kx * w, y0 + ky * w), ks * w)

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
        w = boxes[:, 2] - boxes[:, 0]
        z = np.column_stack([(boxes[:, 0] + kx * w) / W, (boxes[:, 1] + ky * w) / H,
                             ks * w / np.sqrt(W * H)])
        d = (z - self.prior[:3]) / np.maximum(self.prior_std[:3], 1e-3)
        return boxes[int(np.argmin((d * d).sum(1)))]

    def to_arrays(self):
        out = {"start_prior": self.prior, "start_prior_std": self.prior_std,
               "start_box_std": self.box_std}
        if self.face is not None:
            out["start_face"] = self.face
            out["start_face_std"] = self.face_std
        return out

    @classmethod
    def from_arrays(cls, arrays):
        return cls(prior=arrays["start_prior"], prior_std=arrays["start_prior_std"],
                   box_std=arrays["start_box_std"], face=arrays.get("start_face"),
                   face_std=arrays.get("start_face_std"))


def _placement_error(start, truth):
    """``(dx, dy, log size ratio)`` of ``truth`` relative to ``start``, in start sizes."""
    size = shape_size(start)
    d = (np.nanmean(truth, 0) - start.mean(0)) / size
    return [d[0], d[1], np.log(shape_size(truth) / size)]
