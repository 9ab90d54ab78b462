"""What the annotation widget draws in napari: the image, the landmarks and the start box.

Points layer conventions: feature ``index`` is the landmark number (so a skipped landmark
never shifts the labels of later ones; missing landmarks are simply absent), ``name`` its
name, ``state`` one of fitted / checked / pinned, and ``label`` the text drawn beside it:
the name of the selected and the hovered landmarks (names of 68 landmarks drawn at once
overlap), or every name when asked. Colours come from the plugin's one colour table
(:mod:`.colours`). Fitted points are hollow rings in the landmark's colour, pinned ones
filled with a white border, checked ones filled with a dark border. A fitted landmark
that is likely off (:attr:`~.image_state.ImageState.uncertain`) is a larger magenta ring;
features ``p_off`` and ``error_px`` hold the last fit's confidence (NaN when there is
none), and a fitted landmark's label adds its predicted error.

Start boxes belong to one image each: the Shapes layer shows the current image's box only.
"""

from __future__ import annotations

import numpy as np

from ..io import composite_alpha
from ._convert import layer_to_points, points_to_layer
from .colours import UNCERTAIN_SCALE, landmark_colours, uncertain_rgba
from .image_state import CHECKED, FITTED, PINNED

__all__ = ["LandmarkLayers", "POINTS_NAME", "BOX_NAME"]

POINTS_NAME = "landmarks"
BOX_NAME = "start box"


def _features(index, names, states, labels, p_off=(), error_px=()):
    """The Points layer's feature table, typed even when empty (napari checks the defaults)."""
    import pandas as pd  # a napari dependency

    n = len(index)
    p_off = np.full(n, np.nan) if len(p_off) != n else np.asarray(p_off, float)
    error_px = np.full(n, np.nan) if len(error_px) != n else np.asarray(error_px, float)
    return pd.DataFrame({"index": pd.Series(np.asarray(index, int), dtype=int),
                         "name": pd.Series(list(names), dtype=object),
                         "state": pd.Series([str(s) for s in states], dtype=object),
                         "label": pd.Series(list(labels), dtype=object),
                         "p_off": pd.Series(p_off, dtype=float),
                         "error_px": pd.Series(error_px, dtype=float)})


def _hint(state, p_off, error_px):
    """A fitted landmark's predicted error, for its label ('' when there is none)."""
    if state != FITTED or not np.isfinite(p_off):
        return ""
    return f"  \u00b1{error_px:.1f} px, {100 * p_off:.0f} % likely off"


class LandmarkLayers:
    """The image, landmarks and start-box layers of one annotation widget.

    Parameters
    ----------
    viewer : napari.Viewer
    on_edit : callable
        Called with no argument after a person added, moved or deleted points.
    """

    def __init__(self, viewer, on_edit):
        self.viewer = viewer
        self.on_edit = on_edit
        self.image = self.points = self.box = None
        self.names: list[str] = []
        self.all_names = False
        self._drawing = False
        self._hovered = None
        self._size = 4.0  # the points' size on the current image
        self._boxes: dict[str, np.ndarray] = {}
        self._box_stem = None
        viewer.mouse_move_callbacks.append(self._on_mouse_move)

    def close(self):
        if self._on_mouse_move in self.viewer.mouse_move_callbacks:
            self.viewer.mouse_move_callbacks.remove(self._on_mouse_move)

    def _alive(self, layer):
        return layer is not None and layer in self.viewer.layers

    # == points =========================================================================
    def setup_points(self, names):
        """A fresh, empty landmarks layer for a project with these landmark names."""
        self.names = list(names)
        if self._alive(self.points):
            self.viewer.layers.remove(self.points)
        layer = self.viewer.add_points(
            np.empty((0, 2)), name=POINTS_NAME, ndim=2, features=_features([], [], [], []),
            text={"string": "{label}", "size": 9, "color": "white", "anchor": "upper_left"},
            border_width_is_relative=True)
        self.points = layer
        self._set_feature_defaults()
        layer.events.data.connect(self._on_points_data)
        layer.selected_data.events.items_changed.connect(lambda *_: self.refresh_labels())

    def _set_feature_defaults(self):
        # A clicked point arrives with index -1: "the landmark the widget asks for".
        self.points.feature_defaults = {"index": -1, "name": "", "state": PINNED, "label": "",
                                        "p_off": np.nan, "error_px": np.nan}

    def draw(self, state):
        """Draw an :class:`~.image_state.ImageState`'s landmarks."""
        ok = state.placed
        idx = np.flatnonzero(ok)
        states = state.states[ok].astype(str)
        colour = landmark_colours(idx)
        face = colour.copy()
        face[states == FITTED] = (0, 0, 0, 0)
        border = colour.copy()
        border[states == PINNED] = (1, 1, 1, 1)
        border[states == CHECKED] = (0.1, 0.1, 0.1, 1)
        uncertain = state.uncertain[ok]
        border[uncertain] = uncertain_rgba()
        conf = state.confidence
        p_off = conf.p_off[ok] if conf is not None else np.full(len(idx), np.nan)
        error_px = conf.error_px[ok] if conf is not None else np.full(len(idx), np.nan)
        layer = self.points
        old_n = len(layer.data)
        if old_n == 0 and not len(idx):
            return  # nothing drawn, nothing to draw
        self._drawing = True
        try:
            # One redraw for all of it: each property would otherwise redraw the layer (about
            # 30 ms on the UI thread for 68 points).
            with layer.events.blocker_all():
                layer.data = points_to_layer(state.points[ok])
                names = [self.names[k] for k in idx]
                layer.features = _features(idx, names, states, names if self.all_names else
                                           [""] * len(idx), p_off, error_px)
                if len(idx):
                    layer.face_color = face
                    layer.border_color = border
                    layer.border_width = np.where(states == FITTED, 0.3, 0.15)
                    layer.size = self._size * np.where(uncertain, UNCERTAIN_SCALE, 1.0)
                self._set_feature_defaults()
                layer.text.refresh(layer.features)
                if old_n != len(idx):
                    layer.selected_data = set()
            layer.refresh()
        finally:
            self._drawing = False
        self.refresh_labels()

    def edits(self):
        """``(indices, xy)`` of the layer's points: landmark index (-1 for a new point) and
        core ``(x, y)``."""
        layer = self.points
        if len(layer.features) == len(layer.data):
            idx = np.asarray(layer.features["index"], int)
        else:
            idx = np.full(len(layer.data), -1)
        return idx, layer_to_points(layer.data)

    def _on_points_data(self, event):
        if self._drawing:
            return
        action = str(getattr(event, "action", "changed"))
        if action not in ("added", "removed", "changed"):
            return  # 'adding', 'changing' ...: wait for the end of the edit
        self.on_edit(np.asarray(getattr(event, "data_indices", ()), int) if action == "added"
                     else None)

    def select_mode(self, complete):
        """Add mode while landmarks are missing, else select mode (a drag moves a point)."""
        self.viewer.layers.selection.active = self.points
        self.points.mode = "select" if complete else "add"

    def focus(self, k):
        """Select landmark ``k``'s point (select mode) and centre the view on it."""
        rows = np.flatnonzero(np.asarray(self.points.features["index"], int) == k)
        if not len(rows):
            return
        self.viewer.layers.selection.active = self.points
        self.points.mode = "select"
        self.points.selected_data = {int(rows[0])}
        camera = self.viewer.scene.camera if hasattr(self.viewer, "scene") else self.viewer.camera
        camera.center = tuple(self.points.data_to_world(self.points.data[rows[0]]))

    def selected_landmarks(self):
        sel = sorted(self.points.selected_data)
        return np.asarray(self.points.features["index"], int)[sel]

    # -- labels ------------------------------------------------------------------------
    def set_all_names(self, on):
        self.all_names = bool(on)
        self.refresh_labels()

    def refresh_labels(self):
        """Label the selected and hovered landmarks (or all, with :attr:`all_names`)."""
        layer = self.points
        if layer is None or not len(layer.data) or len(layer.features) != len(layer.data):
            return
        f = layer.features
        names = np.asarray(f["name"], object)
        shown = set(layer.selected_data)
        if self._hovered is not None and self._hovered < len(names):
            shown.add(self._hovered)
        labels = names.copy() if self.all_names else np.full(len(names), "", object)
        for i in shown:
            labels[i] = names[i] + _hint(f["state"].iloc[i], f["p_off"].iloc[i],
                                         f["error_px"].iloc[i])
        if list(labels) != list(layer.features["label"]):
            features = layer.features.copy()
            features["label"] = labels
            self._drawing = True
            try:
                layer.features = features
                layer.text.refresh(layer.features)
            finally:
                self._drawing = False

    def _on_mouse_move(self, viewer, event):
        layer = self.points
        if not self._alive(layer) or not len(layer.data):
            return
        hovered = layer.get_value(event.position, world=True)
        hovered = None if hovered is None else int(hovered)
        if hovered != self._hovered:
            self._hovered = hovered
            self.refresh_labels()

    # == image ==========================================================================
    def show_image(self, image, name):
        """Show an image (alpha composited as the model sees it) and fit the view to it."""
        image = composite_alpha(image)
        rgb = image.ndim == 3
        layer = self.image
        if self._alive(layer) and layer.rgb == rgb:
            layer.data = image
            layer.reset_contrast_limits()
            layer.name = name
        else:
            if self._alive(layer):
                self.viewer.layers.remove(layer)
            layer = self.viewer.add_image(image, name=name, rgb=rgb)
            self.viewer.layers.move(self.viewer.layers.index(layer), 0)
            self.image = layer
        size = self._size = max(4.0, 0.015 * max(image.shape[:2]))
        if self.points.current_size != size:  # each of these redraws the layer
            self.points.size = size
            self.points.current_size = size
            self.points.text.translation = np.array([-0.6 * size, 0.6 * size])
        self.viewer.reset_view()

    # == start boxes ====================================================================
    def show_box_of(self, stem):
        """Make the Shapes layer show image ``stem``'s box (none if it has none)."""
        self._keep_box()
        self._box_stem = stem
        if self._alive(self.box):
            box = self._boxes.get(stem)
            self._drawing = True
            try:
                self.box.data = [] if box is None else [box]
            finally:
                self._drawing = False

    def _keep_box(self):
        # The rectangle drawn last on the image being left stays that image's box.
        if self._box_stem is not None and self._alive(self.box):
            if len(self.box.data):
                self._boxes[self._box_stem] = np.asarray(self.box.data[-1])
            else:
                self._boxes.pop(self._box_stem, None)

    def keep_newest_box(self):
        """One box per image: drop all but the rectangle drawn last."""
        if self._alive(self.box) and len(self.box.data) > 1:
            self._drawing = True
            try:
                self.box.data = [self.box.data[-1]]
            finally:
                self._drawing = False

    def current_box(self):
        """The current image's start box ``(x0, y0, x1, y1)``, or None."""
        self._keep_box()
        rect = self._boxes.get(self._box_stem)
        if rect is None:
            return None
        xy = layer_to_points(np.asarray(rect)[:, -2:])
        (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
        return (float(x0), float(y0), float(x1), float(y1))

    def draw_box_mode(self, on_drawn):
        """Select the start-box layer (made if needed) in rectangle mode; ``on_drawn()`` is
        called after each rectangle a person finishes."""
        if not self._alive(self.box):
            self.box = self.viewer.add_shapes(name=BOX_NAME, edge_color="cyan",
                                              face_color="transparent", edge_width=2)
            self.box.events.data.connect(
                lambda e: on_drawn() if str(getattr(e, "action", "")) == "added"
                and not self._drawing else None)
        self.viewer.layers.selection.active = self.box
        self.box.mode = "add_rectangle"
