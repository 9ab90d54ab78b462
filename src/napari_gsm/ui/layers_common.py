"""What the layer docks share: reading landmarks off napari layers, writing fits back to
a Points layer, pairing Points with Image layers, and the model picker.

Points are mapped to the image's pixels through napari's world coordinates, so a Points
layer with its own scale or translation (a microscopy image in micrometres, points added in
world units) still lands on the right pixels.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label

from ..io import ModelFileError
from .colours import UNCERTAIN_SCALE, landmark_colours, uncertain_rgba
from .image_state import UNCERTAIN
from .layer_data import frame_count, frames_to_layer, group_by_frame, point_confidence
from .session import SESSION, describe_model

__all__ = ["wrapped_label", "layer_pair_choosers", "image_frames", "current_frame", "landmarks_of",
           "write_fits", "pair_for", "ModelPicker", "landmark_names", "FITTED_KEY",
           "CONFIDENCE_KEY", "moved_points", "model_lock"]

#: Points layer metadata: the positions a fit gave, per frame (a person's moves differ).
FITTED_KEY = "napari_gsm_fitted"
#: Points layer metadata: each fitted frame's confidence (``p_off``, ``error_px`` lists).
CONFIDENCE_KEY = "napari_gsm_confidence"


def wrapped_label(text=""):
    """A magicgui Label that wraps its text: a long message must not widen the dock (and
    squeeze napari's canvas)."""
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value=text)
    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    return label


def _is(layer, kind):
    return layer is not None and type(layer).__name__ == kind


def image_frames(image_layer):
    """``(data, rgb, n_frames)`` of an Image layer (full resolution of a multiscale one)."""
    data = image_layer.data[0] if image_layer.multiscale else image_layer.data
    return data, bool(image_layer.rgb), frame_count(np.shape(data), image_layer.rgb)


def current_frame(viewer, image_layer):
    """The frame of an image stack the viewer shows (0 for a 2D image)."""
    data, rgb, n = image_frames(image_layer)
    if n == 1:
        return 0
    t = image_layer.world_to_data(viewer.dims.point)[0]
    return int(np.clip(np.rint(t), 0, n - 1))


def _to_image_pixels(points_layer, image_layer):
    """The Points layer's data in the Image layer's data coordinates ``(n, ndim)``."""
    data = np.asarray(points_layer.data, float)
    if not len(data):
        return data.reshape(0, image_layer.ndim)
    if points_layer.ndim < image_layer.ndim:
        raise ValueError(f"{points_layer.name}: its points have {points_layer.ndim} "
                         f"coordinates but {image_layer.name} is a stack: add the points on "
                         "the stack's frames (a Points layer with as many dimensions)")
    world = np.array([points_layer.data_to_world(p) for p in data])
    pixels = np.array([image_layer.world_to_data(w) for w in world[:, -image_layer.ndim:]])
    if points_layer.ndim > image_layer.ndim:
        extra = data[:, : points_layer.ndim - image_layer.ndim]
        if len(np.unique(np.rint(extra), axis=0)) > 1:
            raise ValueError(f"{points_layer.name}: its points lie in several frames, but "
                             f"{image_layer.name} is a single 2D image")
    return pixels


def landmark_names(points_layer, n_landmarks):
    """Names from the layer (metadata, or its ``name`` feature), else ``'1'..'v'``."""
    names = points_layer.metadata.get("landmark_names") if points_layer is not None else None
    if names is not None and len(names) == n_landmarks:
        return [str(n) for n in names]
    return [str(i + 1) for i in range(n_landmarks)]


def landmarks_of(points_layer, image_layer, n_landmarks=None):
    """The Points layer's landmarks by frame, in the image's pixels (a ``FrameLandmarks``)."""
    pixels = _to_image_pixels(points_layer, image_layer)
    names = points_layer.metadata.get("landmark_names")
    if n_landmarks is None and names is not None:
        n_landmarks = len(names)
    if image_layer.ndim == 2:
        pixels = pixels[:, -2:]
    return group_by_frame(pixels, points_layer.features, n_landmarks=n_landmarks,
                          layer_name=f"Points layer {points_layer.name!r}")


def moved_points(points_layer, frame, points):
    """``(v,)`` bool: landmarks of ``frame`` a person placed or moved since the last fit.

    A layer with no fit recorded was placed by hand: all its landmarks are a person's.
    """
    fitted = (points_layer.metadata.get(FITTED_KEY) or {}).get(str(frame))
    placed = np.isfinite(points).all(1)
    if fitted is None:
        return placed
    fitted = np.asarray(fitted, float)
    same = np.isfinite(fitted).all(1) & placed
    same[same] = np.all(np.abs(fitted[same] - points[same]) <= 1e-6, axis=1)
    return placed & ~same


def write_fits(viewer, image_layer, fits, names, layer=None):
    """Put fits ``{frame: FitResult}`` into a Points layer (new if ``layer`` is None).

    Frames not in ``fits`` keep their points. The layer gets the image's transform, the
    ``landmark``/``name`` features, the plugin's colours, and the fitted positions in its
    metadata (so a later fit knows which points a person moved). With the fits' confidence,
    features ``p_off`` and ``error_px`` (NaN without) and a likely-off landmark drawn as a
    larger magenta ring. Returns the layer.
    """
    stacked = image_layer.ndim == 3
    frames = {}
    if layer is not None and len(layer.data):
        frames = landmarks_of(layer, image_layer, len(names)).frames
    frames.update({int(t): np.asarray(r.points, float) for t, r in fits.items()})
    data, ids = frames_to_layer(frames, stacked)
    old = layer.metadata if layer is not None else {}
    fitted = dict(old.get(FITTED_KEY) or {})
    fitted.update({str(int(t)): np.asarray(r.points, float).tolist() for t, r in fits.items()})
    records = dict(old.get(CONFIDENCE_KEY) or {})
    for t, r in fits.items():
        c = r.confidence
        if c is None:
            records.pop(str(int(t)), None)
        else:
            records[str(int(t))] = {"p_off": np.round(c.p_off, 4).tolist(),
                                    "error_px": np.round(c.error_px, 3).tolist()}
    p_off, error_px = point_confidence(data, ids, stacked, records)
    features = {"landmark": ids, "name": np.asarray([names[i] for i in ids], dtype=object),
                "p_off": p_off, "error_px": error_px}
    uncertain = p_off >= UNCERTAIN  # NaN compares False
    border = np.tile([1.0, 1.0, 1.0, 1.0], (len(ids), 1))
    border[uncertain] = uncertain_rgba()
    size = max(3.0, 0.012 * max(image_layer.data.shape[-2:] if not image_layer.rgb else
                                image_layer.data.shape[-3:-1]))
    sizes = size * np.where(uncertain, UNCERTAIN_SCALE, 1.0)
    metadata = {"landmark_names": list(names), FITTED_KEY: fitted, CONFIDENCE_KEY: records}
    if layer is None:
        layer = viewer.add_points(
            data, ndim=data.shape[1], name=f"{image_layer.name} landmarks", features=features,
            face_color=landmark_colours(ids) if len(ids) else "white",
            border_color=border if len(ids) else "white", border_width=0.1,
            size=sizes if len(ids) else size,
            text={"string": "{name}", "visible": False, "color": "white", "size": 8,
                  "anchor": "upper_left"},
            scale=image_layer.scale, translate=image_layer.translate, metadata=metadata)
    else:
        with layer.events.blocker_all():
            layer.data = data
            layer.features = features
            if len(ids):
                layer.face_color = landmark_colours(ids)
                layer.border_color = border
                layer.size = sizes
            layer.metadata.update(metadata)
            layer.text.refresh(layer.features)
        layer.refresh()
    return layer


def pair_for(viewer, layer):
    """The Image layer that goes with a Points layer (or the other way round), or None.

    Same image file in the metadata (this plugin's reader), else a name that starts with the
    other's name (``img`` and ``img landmarks``), else the only layer of that kind.
    """
    want = "Image" if _is(layer, "Points") else "Points"
    others = [ly for ly in viewer.layers if _is(ly, want)]
    if layer is None or not others:
        return None
    source = layer.metadata.get("image_path") or layer.metadata.get("napari_gsm_source")
    for other in others:
        other_source = other.metadata.get("image_path") or other.metadata.get("napari_gsm_source")
        if source and other_source and Path(source) == Path(other_source):
            return other
    stem = Path(layer.name).stem
    for other in others:
        if Path(other.name).stem.startswith(stem) or stem.startswith(Path(other.name).stem):
            return other
    return others[0] if len(others) == 1 else None


def layer_pair_choosers(viewer):
    """An Image-layer and a Points-layer chooser (magicgui, following the viewer's layer
    list); choosing a Points layer picks the Image layer that goes with it
    (:func:`pair_for`). Returns ``(image, points)``."""
    from magicgui.widgets import create_widget
    from napari.layers import Image, Points

    image_widget = create_widget(annotation=Image, label="image")
    points_widget = create_widget(annotation=Points, label="landmarks")

    def pair(points_layer):
        image = pair_for(viewer, points_layer)
        if image is not None and image in image_widget.choices:
            image_widget.value = image

    points_widget.changed.connect(pair)
    return image_widget, points_widget


class ModelPicker(Container):
    """Choose a model of the session (trained here, or loaded from a file) and see what it is."""

    def __init__(self):
        self.choice = ComboBox(label="model", choices=self._labels)
        self.file = FileEdit(label="load model", mode="r", filter="*.npz")
        self.info = wrapped_label("no model yet: train one from layers, or load a file")
        super().__init__(widgets=[self.choice, self.file, self.info], labels=True)
        self.file.changed.connect(self._load)
        self.choice.changed.connect(lambda *_: self._show())
        SESSION.connect(self._on_session)
        self.native.destroyed.connect(lambda *_: SESSION.disconnect(self._on_session))
        self._on_session()

    @staticmethod
    def _labels(*_):
        return [e.label for e in SESSION.entries]

    def _on_session(self):
        latest = SESSION.latest
        self.choice.reset_choices()
        if latest is not None:
            self.choice.value = latest.label
        self._show()

    @property
    def entry(self):
        return SESSION.find(self.choice.value) if self.choice.value else None

    @property
    def model(self):
        entry = self.entry
        return None if entry is None else entry.model

    def _show(self):
        entry = self.entry
        self.info.value = ("no model yet: train one from layers, or load a file" if entry is None
                           else describe_model(entry.model))

    def _load(self, path):
        path = Path(path)
        if not path.is_file():
            return
        try:
            SESSION.load(path)
        except (ModelFileError, ValueError) as exc:
            self.info.value = str(exc)


#: One lock per model object: a fit never reads a model that an update is changing.
_LOCKS: dict[int, threading.Lock] = {}


def model_lock(model):
    return _LOCKS.setdefault(id(model), threading.Lock())
