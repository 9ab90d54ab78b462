"""The annotation dock widget: open a project, place, train, fit, correct, accept, export.

The widget is thin: what the project holds (which images are done, edits, pins, undo,
drafts) is :class:`napari_gsm.ui.project.Project`; training and fitting are the core's
:func:`napari_gsm.train` and :meth:`napari_gsm.Model.fit`. The widget draws the state in
an Image, a Points and (for start boxes) a Shapes layer, and turns a person's edits of the
Points layer back into project edits.

Points layer conventions: feature ``index`` is the landmark number (so a skipped landmark
never shifts the labels of later ones; missing landmarks are simply absent), ``name`` its
name, ``state`` one of fitted / checked / pinned. Fitted points are drawn hollow (a ring in
the landmark's colour), pinned ones filled with a white border, checked ones filled with a
dark border.
"""

from __future__ import annotations

import colorsys
import functools
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                            QGroupBox, QHBoxLayout, QInputDialog, QLabel, QListWidget,
                            QListWidgetItem, QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ..io import LandmarkFileError, ModelFileError, read_image, to_grey
from ..methods import METHODS, GSMParams
from ..model import TrainParams, load_model, train
from ._convert import layer_to_points, points_to_layer
from .keys import bind_keys, shortcuts_html, unbind_keys
from .project import CHECKED, FITTED, PINNED, Project

__all__ = ["AnnotationWidget", "TrainingCancelled"]

#: Start sources offered for a fit: (label, ``Model.start`` init name).
START_SOURCES = (("auto", "auto"), ("face detector", "detect"), ("box (Shapes layer)", "box"),
                 ("learned prior", "prior"), ("current points", "points"))

# The check box says "accepted"; the mark says what else there is.
_MARK = {"annotated": "", "edited": "\u270e ", "fitted": "~ ", "": ""}
#: Names are drawn by default only up to this many landmarks (68 face names overlap).
NAMES_SHOWN_UP_TO = 20
_USER_ERRORS = (ValueError, LookupError, LandmarkFileError, ModelFileError, OSError)


class TrainingCancelled(Exception):
    """Raised from the progress callback to stop training."""


class _Bridge(QObject):
    # Emitted from the training thread; Qt queues it to the widget's (main) thread.
    progress = Signal(int, int, str)


def landmark_colours(v):
    """``(v, 4)`` RGBA: well separated hues, neighbours far apart (golden-ratio steps)."""
    return np.array([(*colorsys.hsv_to_rgb((0.61803398875 * k) % 1.0, 0.8, 1.0), 1.0)
                     for k in range(v)])


def _features(index, names, states):
    """The Points layer's feature table, typed even when empty (napari checks the defaults)."""
    import pandas as pd  # a napari dependency

    return pd.DataFrame({"index": pd.Series(np.asarray(index, int), dtype=int),
                         "name": pd.Series(list(names), dtype=object),
                         "state": pd.Series([str(s) for s in states], dtype=object)})


def _hbox(*items):
    """A row of widgets; an item ``(widget, stretch)`` gets that stretch factor."""
    row = QHBoxLayout()
    for item in items:
        widget, stretch = item if isinstance(item, tuple) else (item, 0)
        row.addWidget(widget, stretch)
    return row


def _guarded(method):
    """Show a person's mistake (no model, missing landmarks, unreadable file) in the status."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except _USER_ERRORS as exc:
            self.set_status(f"{type(exc).__name__}: {exc}", error=True)
            return None

    return wrapper


class AnnotationWidget(QWidget):
    """Dock widget for the annotation loop.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    project_dir : path, optional
        Open this project folder at once.
    model_path : path, optional
        Start from this model instead of the project's own ``.napari-gsm/model.npz``
        (updates are then saved to the project's model file; this one is never written).
    """

    def __init__(self, napari_viewer, project_dir=None, model_path=None):
        super().__init__()
        self.viewer = napari_viewer
        self.project: Project | None = None
        self.model = None
        self.image_layer = self.points_layer = self.box_layer = None
        self._rendering = False
        self._updating_list = False
        self._cancel = threading.Event()
        self.train_worker = self.fit_worker = None
        self._accepted_while_training: list[int] = []
        self._bridge = _Bridge()
        self._bridge.progress.connect(self._on_progress)
        self._build()
        bound, viewer = bind_keys(self.viewer, self), self.viewer
        # Keys must not call into a closed widget (its Qt object is gone).
        self.destroyed.connect(lambda *_: unbind_keys(viewer, bound))
        if project_dir is not None:
            self.open_project(project_dir, model_path)

    # == layout =========================================================================
    def _button(self, text, action):
        """A push button that calls ``self.<action>()``, looked up when clicked (Qt's
        ``checked`` argument dropped)."""
        btn = QPushButton(text)
        btn.clicked.connect(lambda *_: getattr(self, action)())
        return btn

    def _build(self):
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)

        box = QGroupBox("Project")
        v = QVBoxLayout(box)
        self.open_btn = self._button("Open folder\u2026", "open_project")
        self.path_label = QLabel("no project")
        self.path_label.setWordWrap(True)
        v.addLayout(_hbox(self.open_btn, (self.path_label, 1)))
        self.image_list = QListWidget()
        self.image_list.setMinimumHeight(120)
        self.image_list.currentRowChanged.connect(self._on_list_row)
        v.addWidget(self.image_list)
        self.count_label = QLabel("")
        v.addWidget(self.count_label)
        lay.addWidget(box)

        box = QGroupBox("Landmarks")
        v = QVBoxLayout(box)
        self.target_label = QLabel("")
        self.target_label.setStyleSheet("font-weight: bold")
        v.addWidget(self.target_label)
        self.back_btn = self._button("\u25c0 back", "back_landmark")
        self.skip_btn = self._button("skip \u25b6", "skip_landmark")
        self.names_check = QCheckBox("names")
        self.names_check.setChecked(True)
        self.names_check.toggled.connect(self._apply_names_visible)
        v.addLayout(_hbox(self.back_btn, self.skip_btn, self.names_check))
        self.undo_btn = self._button("Undo", "undo")
        self.pin_btn = self._button("Pin / unpin", "toggle_pin")
        v.addLayout(_hbox(self.undo_btn, self.pin_btn))
        lay.addWidget(box)

        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.method_combo = QComboBox()
        self.features_combo = QComboBox()
        self.features_combo.addItems(["hog", "grey"])
        self.patch_spin = QSpinBox()
        self.patch_spin.setRange(0, 101)
        self.patch_spin.setSpecialValueText("auto")
        self.sigma_spin = QDoubleSpinBox()
        self.sigma_spin.setRange(0.0, 20.0)
        self.sigma_spin.setSingleStep(0.5)
        self.sigma_spin.setSpecialValueText("auto")
        self.ref_spin = QDoubleSpinBox()
        self.ref_spin.setRange(10.0, 200.0)
        self.ref_spin.setValue(TrainParams().ref_size)
        self.lam_spin = QDoubleSpinBox()
        self.lam_spin.setDecimals(3)
        self.lam_spin.setRange(0.0, 100.0)
        self.lam_spin.setSingleStep(0.01)
        self.lam_spin.setSpecialValueText("auto")  # 0: chosen on held-out images
        self.lam_spin.setValue(0.0)
        self.jitter_spin = QSpinBox()
        self.jitter_spin.setRange(0, 20)
        self.face_check = QCheckBox("learn face-detector starts")
        form.addRow("method", self.method_combo)
        form.addRow("features", self.features_combo)
        form.addRow("patch (px/cells)", self.patch_spin)
        form.addRow("sigma (grid)", self.sigma_spin)
        form.addRow("reference size", self.ref_spin)
        form.addRow("shape weight \u03bb", self.lam_spin)
        form.addRow("jitter copies", self.jitter_spin)
        form.addRow("", self.face_check)
        self.train_btn = self._button("Train", "train")
        self.cancel_btn = self._button("Cancel", "cancel")
        self.cancel_btn.setEnabled(False)
        form.addRow(_hbox(self.train_btn, self.cancel_btn))
        self.progress_bar = QProgressBar()
        self.progress_bar.setVisible(False)
        form.addRow(self.progress_bar)
        self.model_label = QLabel("no model")
        self.model_label.setWordWrap(True)
        form.addRow(self.model_label)
        lay.addWidget(box)

        box = QGroupBox("Fit")
        v = QVBoxLayout(box)
        self.start_combo = QComboBox()
        for label, init in START_SOURCES:
            self.start_combo.addItem(label, init)
        self.box_btn = self._button("Draw box", "draw_box")
        v.addLayout(_hbox(QLabel("start"), (self.start_combo, 1), self.box_btn))
        self.fit_btn = self._button("Fit", "fit")
        self.refit_btn = self._button("Re-fit with pins", "refit")
        self.fit_all_btn = self._button("Fit all unannotated", "fit_all")
        v.addLayout(_hbox(self.fit_btn, self.refit_btn, self.fit_all_btn))
        lay.addWidget(box)

        self.accept_btn = self._button("Accept \u2713", "accept")
        self.accept_btn.setStyleSheet("font-weight: bold")
        self.export_btn = self._button("Export\u2026", "export")
        lay.addLayout(_hbox((self.accept_btn, 2), (self.export_btn, 1)))

        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        lay.addWidget(self.status_label)

        keys = QGroupBox("Shortcuts")
        v = QVBoxLayout(keys)
        self.keys_label = QLabel(shortcuts_html())
        self.keys_label.setTextFormat(Qt.TextFormat.RichText)
        self.keys_label.setWordWrap(True)
        v.addWidget(self.keys_label)
        lay.addWidget(keys)
        lay.addStretch(1)
        self._refresh_methods()
        self._update_controls()

    def set_status(self, text, error=False):
        self.status_label.setText(text)
        self.status_label.setStyleSheet("color: #ff6b6b" if error else "")

    def _refresh_methods(self):
        # Methods are registered by other modules; read the registry each time.
        current = self.method_combo.currentText()
        names = list(METHODS)
        if names != [self.method_combo.itemText(i) for i in range(self.method_combo.count())]:
            self.method_combo.clear()
            self.method_combo.addItems(names)
            for i, n in enumerate(names):
                self.method_combo.setItemData(i, METHODS[n].description, Qt.ItemDataRole.ToolTipRole)
            if current in names:
                self.method_combo.setCurrentText(current)

    def _update_controls(self):
        has_project = self.project is not None
        has_model = self.model is not None
        busy_train = self.train_worker is not None
        busy_fit = self.fit_worker is not None
        for w in (self.back_btn, self.skip_btn, self.undo_btn, self.pin_btn, self.accept_btn,
                  self.export_btn, self.box_btn):
            w.setEnabled(has_project)
        self.train_btn.setEnabled(has_project and not busy_train)
        for w in (self.fit_btn, self.refit_btn):
            w.setEnabled(has_project and has_model)
        self.fit_all_btn.setEnabled(has_project and has_model and not busy_fit)
        self.cancel_btn.setEnabled(busy_train or busy_fit)
        # The face detector is a start only for models trained with it.
        item = self.start_combo.model().item(1)
        has_face = has_model and self.model.starts is not None and self.model.starts.face is not None
        item.setEnabled(has_face)
        if not has_face and self.start_combo.currentIndex() == 1:
            self.start_combo.setCurrentIndex(0)

    # == project and images =============================================================
    @_guarded
    def open_project(self, path=None, model_path=None, n_landmarks=None):
        """Open a project folder (asks for one when ``path`` is None).

        A folder with no ``.pts`` and no ``landmarks.txt`` needs ``n_landmarks`` (asked for
        when the folder was chosen in the dialog); the first accepted image then fixes it.
        """
        ask = path is None
        if self.train_worker is not None or self.fit_worker is not None:
            raise ValueError("wait for (or cancel) training / fitting before opening another folder")
        if path is None:
            path = QFileDialog.getExistingDirectory(self, "Open an image folder")
            if not path:
                return None
        try:
            project = Project(path, n_landmarks)
        except ValueError as exc:
            if not ask or "number of landmarks is unknown" not in str(exc):
                raise
            v, ok = QInputDialog.getInt(self, "New project", "There is no landmarks.txt and no "
                                        ".pts file here.\nLandmarks per image:", 10, 3, 10000)
            if not ok:
                return None
            project = Project(path, v)
        if self.project is not None:
            self.project.autosave()
        self.project = project
        self.model = None
        self.model_label.setText("no model: annotate a few images, then Train")
        src = Path(model_path) if model_path is not None else self.project.model_path
        model_problem = ""
        if src.exists():
            # A bad model file must not keep the annotations from opening.
            try:
                self._set_model(load_model(src), f"loaded {src.name}")
            except (ModelFileError, ValueError) as exc:
                model_problem = f"; model not loaded ({exc})"
        self.path_label.setText(str(self.project.root))
        self.image_list.clear()
        for stem in self.project.stems:
            item = QListWidgetItem(stem)
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            self.image_list.addItem(item)
        self._setup_points_layer()
        self.names_check.setChecked(self.project.n_landmarks <= NAMES_SHOWN_UP_TO)
        self._apply_names_visible(self.names_check.isChecked())
        first = self.project.next_unannotated(after=-1)
        # Unguarded: a failure to show the first image must not read as "opened".
        AnnotationWidget.show_image.__wrapped__(self, 0 if first is None else first)
        self._update_controls()
        problems = self.project.dataset.problems
        self.set_status(f"opened {len(self.project)} images"
                        + (f"; {len(problems)} unreadable .pts skipped" if problems else "")
                        + model_problem, error=bool(model_problem))
        return self.project

    def _set_model(self, model, how):
        if model.n_landmarks != self.project.n_landmarks:
            raise ValueError(f"the model has {model.n_landmarks} landmarks, the project "
                             f"{self.project.n_landmarks}")
        self.model = model
        s = model.summary
        self.model_label.setText(
            f"model: {model.method}, {model.features.kind}, {s.get('n_images', '?')} images "
            f"({s.get('n_updates', 0)} incremental) \u2014 {how}")
        self._update_controls()

    def _setup_points_layer(self):
        v = self.project.n_landmarks
        self._colours = landmark_colours(v)
        if self.points_layer is not None and self.points_layer in self.viewer.layers:
            self.viewer.layers.remove(self.points_layer)
        layer = self.viewer.add_points(
            np.empty((0, 2)), name="landmarks", ndim=2,
            features=_features([], [], []),
            text={"string": "{name}", "size": 9, "color": "white", "anchor": "upper_left"},
            border_width_is_relative=True)
        self.points_layer = layer
        self._set_feature_defaults()
        layer.events.data.connect(self._on_points_data)

    def _set_feature_defaults(self):
        # A clicked point arrives with index -1: "the landmark the widget asks for".
        self.points_layer.feature_defaults = {"index": -1, "name": "", "state": PINNED}

    def _on_list_row(self, row):
        if not self._updating_list and self.project is not None and row >= 0 \
                and row != self.project.index:
            self.show_image(row)

    @_guarded
    def show_image(self, i):
        """Show image ``i`` and its landmarks (the previous image's edits stay, autosaved)."""
        self.project.go(i)
        image = self.project.image()
        rgb = image.ndim == 3
        layer = self.image_layer
        if layer is not None and layer in self.viewer.layers and layer.rgb == rgb:
            layer.data = image
            layer.reset_contrast_limits()
            layer.name = self.project.item.stem
        else:
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
            layer = self.viewer.add_image(image, name=self.project.item.stem, rgb=rgb)
            self.viewer.layers.move(self.viewer.layers.index(layer), 0)
            self.image_layer = layer
        size = max(4.0, 0.015 * max(image.shape[:2]))
        self.points_layer.size = size
        self.points_layer.current_size = size
        self.points_layer.text.translation = np.array([-0.6 * size, 0.6 * size])
        self.render()
        st = self.project.state()
        self.points_layer.selected_data = set()
        self.viewer.layers.selection.active = self.points_layer
        self.points_layer.mode = "add" if not st.complete else "select"
        self.viewer.reset_view()
        self._refresh_list()
        return st

    def _refresh_list(self, only=None):
        """Update the list's marks (all rows, or just row ``only``) and the counts."""
        p = self.project
        self._updating_list = True
        try:
            for i in range(len(p)) if only is None else [only]:
                status = p.status(i)
                item = self.image_list.item(i)
                item.setText(f"{_MARK[status]}{p.stems[i]}")
                item.setCheckState(Qt.CheckState.Checked if p.is_annotated(i)
                                   else Qt.CheckState.Unchecked)
                item.setToolTip(status or "not annotated")
            self.image_list.setCurrentRow(p.index)
        finally:
            self._updating_list = False
        self.count_label.setText(f"{p.n_annotated} / {len(p)} annotated  "
                                 f"(checked: accepted; \u270e unsaved edits, ~ fitted)")

    # == drawing the landmarks and reading edits back ===================================
    def render(self):
        """Draw the current image's landmarks from the project state."""
        st = self.project.state()
        ok = st.placed
        idx = np.flatnonzero(ok)
        states = st.states[ok].astype(str)
        colour = self._colours[idx]
        face = colour.copy()
        face[states == FITTED] = (0, 0, 0, 0)
        border = colour.copy()
        border[states == PINNED] = (1, 1, 1, 1)
        border[states == CHECKED] = (0.1, 0.1, 0.1, 1)
        layer = self.points_layer
        old_n = len(layer.data)
        self._rendering = True
        try:
            layer.data = points_to_layer(st.points[ok])
            layer.features = _features(idx, [self.project.names[k] for k in idx], states)
            if len(idx):
                layer.face_color = face
                layer.border_color = border
                layer.border_width = np.where(states == FITTED, 0.3, 0.15)
            self._set_feature_defaults()
            if old_n != len(idx):
                layer.selected_data = set()
        finally:
            self._rendering = False
        self._update_target()

    def _update_target(self):
        st = self.project.state()
        names = self.project.names
        if st.current is None:
            text = "all landmarks placed \u2014 drag to correct, Accept when done"
        else:
            k = st.current
            where = "replace" if st.placed[k] else "place"
            text = f"click to {where}: {names[k]}  ({k + 1}/{len(names)})"
        n_pin = int(st.pinned.sum())
        self.target_label.setText(text + f"\n{int(st.placed.sum())} placed, {n_pin} pinned/checked")

    def _on_points_data(self, event):
        if self._rendering or self.project is None:
            return
        action = str(getattr(event, "action", "changed"))
        if action not in ("added", "removed", "changed"):
            return  # 'adding', 'changing' ...: wait for the end of the edit
        layer = self.points_layer
        idx = np.asarray(layer.features["index"], int) if len(layer.features) == len(layer.data) \
            else np.full(len(layer.data), -1)
        if action == "added":
            new = np.asarray(event.data_indices, int) % max(len(layer.data), 1)
            idx = idx.copy()
            idx[new] = -1
        st = self.project.state()
        if st.apply_layer(idx, layer_to_points(layer.data)):
            self.project.autosave()
            self._refresh_list(only=self.project.index)
        self.render()
        if st.complete and layer.mode == "add":
            layer.mode = "select"

    def _apply_names_visible(self, on):
        if self.points_layer is not None:
            self.points_layer.text.visible = bool(on)

    # == actions (buttons and keys.py) ==================================================
    def _need_project(self):
        if self.project is None:
            raise ValueError("open a project folder first")

    def next_image(self):
        if self.project is not None:
            self.show_image(min(self.project.index + 1, len(self.project) - 1))

    def previous_image(self):
        if self.project is not None:
            self.show_image(max(self.project.index - 1, 0))

    def next_unannotated(self):
        if self.project is not None:
            i = self.project.next_unannotated()
            if i is None:
                self.set_status("every image is annotated")
            else:
                self.show_image(i)

    def skip_landmark(self):
        if self.project is not None:
            self.project.state().step_target(+1)
            self._update_target()

    def back_landmark(self):
        if self.project is not None:
            self.project.state().step_target(-1)
            self._update_target()

    def toggle_names(self):
        self.names_check.setChecked(not self.names_check.isChecked())

    @_guarded
    def undo(self):
        self._need_project()
        if self.project.state().undo():
            self._after_edit("undone")
        else:
            self.set_status("nothing to undo")

    @_guarded
    def redo(self):
        self._need_project()
        if self.project.state().redo():
            self._after_edit("redone")

    @_guarded
    def toggle_pin(self):
        self._need_project()
        sel = sorted(self.points_layer.selected_data)
        if not sel:
            raise ValueError("select landmarks (select mode, S) to pin or unpin them")
        ks = np.asarray(self.points_layer.features["index"], int)[sel]
        if self.project.state().toggle_pin(ks):
            self._after_edit(f"pins changed on {len(ks)} landmark(s)")

    def _after_edit(self, what):
        self.project.autosave()
        self.render()
        self._refresh_list(only=self.project.index)
        self.set_status(what)

    # -- fitting -----------------------------------------------------------------------
    def _need_model(self):
        self._need_project()
        if self.model is None:
            raise ValueError("no model yet: annotate a few images and Train")

    def current_box(self):
        """The last rectangle of the start-box Shapes layer as ``(x0, y0, x1, y1)``, or None."""
        layer = self.box_layer
        if layer is None or layer not in self.viewer.layers or not len(layer.data):
            return None
        xy = layer_to_points(np.asarray(layer.data[-1])[:, -2:])
        (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
        return (float(x0), float(y0), float(x1), float(y1))

    def draw_box(self):
        """Add (or select) the Shapes layer for a start box, in rectangle mode."""
        if self.box_layer is None or self.box_layer not in self.viewer.layers:
            self.box_layer = self.viewer.add_shapes(name="start box", edge_color="cyan",
                                                    face_color="transparent", edge_width=2)
        self.viewer.layers.selection.active = self.box_layer
        self.box_layer.mode = "add_rectangle"
        self.start_combo.setCurrentIndex([s[1] for s in START_SOURCES].index("box"))
        self.set_status("draw a rectangle around the object, then Fit (G)")

    @_guarded
    def fit(self):
        """Fit the current image from the chosen start; pinned landmarks are held."""
        self._need_model()
        init = self.start_combo.currentData()
        st = self.project.state()
        if init == "points":
            return self.refit()
        image = self.project.image()
        box = self.current_box() if init in ("box", "auto") else None
        if init == "box" and box is None:
            raise ValueError("draw a box first (Draw box), or choose another start")
        pinned = st.pinned
        if pinned.any():
            # Start from the chosen source, but keep what a person placed exactly there.
            start, used = self.model.start(to_grey(image), init, box=box)
            start[pinned] = st.points[pinned]
            result = self.model.fit(image, "points", points=start, pinned=pinned)
            result.init = used
        else:
            result = self.model.fit(image, init, box=box)
        st.set_fit(result.points, keep=pinned)
        self._after_edit(f"fitted from {result.init} in {result.fit_ms:.0f} ms "
                         f"({result.n_iter} iterations){'' if result.converged else ', not converged'}")
        return result

    @_guarded
    def refit(self):
        """Re-fit from the current points with pinned (and checked) landmarks held fixed."""
        self._need_model()
        st = self.project.state()
        if st.placed.sum() < 2:
            raise ValueError("place at least two landmarks (or Fit) before re-fitting")
        pinned = st.pinned
        result = self.model.fit(self.project.image(), "points", points=st.points, pinned=pinned)
        st.set_fit(result.points, keep=pinned)
        self._after_edit(f"re-fitted with {int(pinned.sum())} pinned in {result.fit_ms:.0f} ms")
        return result

    # -- accept ------------------------------------------------------------------------
    @_guarded
    def accept(self):
        """Save the current image's .pts, update the model, go to the next image and fit it."""
        self._need_project()
        p = self.project
        i = p.index
        path, was_new = p.accept()
        msg = f"saved {path.name}"
        if self.model is not None and was_new:
            self.model.update(p.image(i), p.items[i].points)
            p.save_model(self.model)
            self._set_model(self.model, "updated")
            msg += ", model updated"
        if self.train_worker is not None:
            self._accepted_while_training.append(i)
        nxt = p.next_unannotated(after=i)
        if nxt is None:
            self.render()
            self._refresh_list()
            self.set_status(msg + "; every image is annotated \u2014 Export when ready")
            return path
        self.show_image(nxt)
        if self.model is not None and not p.state().placed.any():
            self.fit()
        self.set_status(msg + f"; now {p.item.stem}")
        return path

    # -- training ----------------------------------------------------------------------
    def train_params(self):
        """(method, TrainParams, GSMParams) from the controls."""
        self._refresh_methods()
        params = TrainParams(features=self.features_combo.currentText(),
                             patch=self.patch_spin.value() or None,
                             sigma=self.sigma_spin.value() or None,
                             ref_size=self.ref_spin.value(), jitter=self.jitter_spin.value(),
                             face_detector=self.face_check.isChecked())
        gsm = replace(GSMParams(), lam=self.lam_spin.value() or None)
        return self.method_combo.currentText(), params, gsm

    @_guarded
    def train(self):
        """Train a model on the accepted annotations in a background thread."""
        from napari.qt.threading import create_worker

        self._need_project()
        if self.train_worker is not None:
            raise ValueError("training is already running")
        data = self.project.snapshot()
        if len(data.items) < 2:
            raise ValueError("accept at least two annotated images before training")
        method, params, gsm = self.train_params()
        self._cancel.clear()
        self._accepted_while_training = []
        bridge, cancel = self._bridge, self._cancel

        def job():
            def progress(done, total, what):
                if cancel.is_set():
                    raise TrainingCancelled
                bridge.progress.emit(int(done), int(total), str(what))

            try:
                return train(data, method, params=params, gsm_params=gsm,
                             landmark_names=self.project.names, progress=progress)
            except TrainingCancelled:
                return None

        worker = create_worker(job)
        worker.returned.connect(self._on_trained)
        worker.errored.connect(lambda exc: self.set_status(f"training failed: {exc}", error=True))
        worker.finished.connect(self._on_worker_finished)
        self.train_worker = worker
        self.progress_bar.setRange(0, len(data.items))
        self.progress_bar.setValue(0)
        self.progress_bar.setVisible(True)
        self.set_status(f"training {method} on {len(data.items)} images\u2026")
        self._update_controls()
        worker.start()
        return worker

    def _on_progress(self, done, total, what):
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
        self.progress_bar.setFormat(f"{what} %v/%m")

    def _on_trained(self, model):
        if model is None:
            self.set_status("training cancelled; the previous model is kept")
            return
        p = self.project
        # Images accepted while training ran are not in its snapshot: add them now.
        for i in self._accepted_while_training:
            model.update(p.image(i), p.items[i].points)
        p.save_model(model)
        self._set_model(model, f"trained in {model.summary.get('train_seconds', 0):.1f} s")
        self.set_status(f"model saved to {p.model_path}")

    def _on_worker_finished(self):
        self.train_worker = None
        self.progress_bar.setVisible(False)
        self._update_controls()

    def cancel(self):
        """Cancel training (the old model stays) or fitting all images."""
        if self.train_worker is not None:
            self._cancel.set()
        if self.fit_worker is not None:
            self.fit_worker.quit()
        self.set_status("cancelling\u2026")

    # -- fit all -----------------------------------------------------------------------
    @_guarded
    def fit_all(self):
        """Fit every unannotated, untouched image in a background thread (results as drafts)."""
        from napari.qt.threading import create_worker

        self._need_model()
        p = self.project
        todo = [(i, p.items[i].image_path) for i in p.fit_candidates()]
        if not todo:
            raise ValueError("no untouched unannotated images to fit")
        model_path = p.model_path
        if not model_path.exists():
            p.save_model(self.model)

        def job():
            # Its own copy of the model: accepting meanwhile updates the widget's one.
            model = load_model(model_path)
            for n, (i, path) in enumerate(todo):
                result = model.fit(read_image(path))
                yield i, result.points, n + 1, len(todo)

        worker = create_worker(job)
        worker.yielded.connect(self._on_fitted_one)
        worker.errored.connect(lambda exc: self.set_status(f"fitting failed: {exc}", error=True))
        worker.finished.connect(self._on_fit_all_finished)
        self.fit_worker = worker
        self.progress_bar.setRange(0, len(todo))
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("fitting %v/%m")
        self.progress_bar.setVisible(True)
        self._update_controls()
        worker.start()
        return worker

    def _on_fitted_one(self, value):
        i, points, done, total = value
        p = self.project
        st = p.state(i)
        if not st.placed.any():  # someone may have started on it meanwhile
            st.set_fit(points)
            p.autosave(i)
            if i == p.index:
                self.render()
        self.progress_bar.setValue(done)
        self._refresh_list(only=i)

    def _on_fit_all_finished(self):
        self.fit_worker = None
        self.progress_bar.setVisible(False)
        self._update_controls()
        self.set_status("fitted the unannotated images (~ in the list); check and Accept each")

    # -- export ------------------------------------------------------------------------
    @_guarded
    def export(self, folder=None):
        """Write every accepted annotation as .pts plus one .tps to ``folder`` (asks if None)."""
        self._need_project()
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Export annotations to")
            if not folder:
                return None
        written = self.project.export(folder)
        self.set_status(f"exported {len(written) - 1} .pts and {written[-1].name} to {folder}")
        return written
