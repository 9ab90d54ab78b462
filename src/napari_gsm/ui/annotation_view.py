"""The annotation dock's controls and their layout (no logic: see :mod:`.widget`).

Laid out for a 1366x768 laptop screen: everything but the status line sits in a scroll
area, the training options beyond method and features are in a collapsed section, and the
shortcut table opens from a button instead of taking the dock's height.
"""

from __future__ import annotations

from dataclasses import replace

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDialog, QDoubleSpinBox, QFormLayout, QFrame,
                            QGroupBox, QHBoxLayout, QLabel, QLineEdit, QListWidget, QProgressBar,
                            QPushButton, QScrollArea, QSizePolicy, QSpinBox, QVBoxLayout,
                            QWidget)
from superqt import QCollapsible

from ..methods import METHODS, GSMParams
from ..model import FEATURE_CHOICES, TrainParams, feature_choice
from .keys import shortcuts_html

__all__ = ["AnnotationView", "START_SOURCES"]

#: Start sources offered for a fit: (label, ``Model.start`` init name).
START_SOURCES = (("auto", "auto"), ("face detector", "detect"), ("box", "box"),
                 ("learned prior", "prior"), ("current points", "points"))

_ERROR_STYLE = "color: #ff6b6b"
_WARNING_STYLE = "color: #ffb347"


def _combo(items=()):
    """A combo box that does not widen the dock to its longest item."""
    combo = QComboBox()
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(6)
    combo.addItems(list(items))
    return combo


def _hbox(*items):
    """A row of widgets; an item ``(widget, stretch)`` gets that stretch factor."""
    row = QHBoxLayout()
    for item in items:
        widget, stretch = item if isinstance(item, tuple) else (item, 0)
        row.addWidget(widget, stretch)
    return row


class _ImageList(QListWidget):
    """The project's images; compact by default, taller when the dock has room."""

    def __init__(self):
        super().__init__()
        self.setMinimumHeight(80)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setToolTip("\u2713 accepted \u00b7 \u270e unsaved edits \u00b7 ~ fitted \u00b7 "
                        "\u2717 fit looks failed \u00b7 \u26a0 unreadable file")

    def sizeHint(self):
        return QSize(super().sizeHint().width(), 120)


class AnnotationView(QWidget):
    """The dock's widgets. Buttons call ``self.<action>()`` of the subclass when clicked."""

    def __init__(self):
        super().__init__()
        self._build()

    def _button(self, text, action, tip=""):
        """A push button that calls ``self.<action>()``, looked up when clicked (Qt's
        ``checked`` argument dropped)."""
        btn = QPushButton(text)
        btn.clicked.connect(lambda *_: getattr(self, action)())
        if tip:
            btn.setToolTip(tip)
        return btn

    # == layout =========================================================================
    def _build(self):
        outer = QVBoxLayout(self)
        outer.setContentsMargins(2, 2, 2, 2)
        content = QWidget()
        lay = QVBoxLayout(content)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self._project_box(), 1)
        lay.addWidget(self._landmarks_box())
        lay.addWidget(self._fit_box())
        self.accept_btn = self._button("Accept \u2713", "accept",
                                       "save this image's .pts, update the model, fit the next")
        self.accept_btn.setStyleSheet("font-weight: bold")
        self.export_btn = self._button("Export\u2026", "export")
        lay.addLayout(_hbox((self.accept_btn, 2), (self.export_btn, 1)))
        lay.addWidget(self._model_box())
        self.scroll = QScrollArea()
        self.scroll.setWidget(content)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer.addWidget(self.scroll, 1)

        # Always visible, below the scroll area: what just happened, and what to do next.
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        # A fixed height: a message of another length must not re-lay out the window (and
        # redraw the canvas) each time; the whole text is also the tooltip.
        self.status_label.setFixedHeight(4 * self.status_label.fontMetrics().lineSpacing() + 4)
        self.next_step_btn = QPushButton("")
        self.next_step_btn.setVisible(False)
        self.next_step_btn.clicked.connect(lambda *_: self._run_next_step())
        self._next_step = None
        self.help_btn = QPushButton("Shortcuts\u2026")
        self.help_btn.clicked.connect(lambda *_: self.show_shortcuts())
        outer.addWidget(self.status_label)
        outer.addLayout(_hbox(self.next_step_btn, (QWidget(), 1), self.help_btn))
        self.shortcuts_dialog = None
        self._refresh_methods()

    def _project_box(self):
        box = QGroupBox("Project")
        v = QVBoxLayout(box)
        self.open_btn = self._button("Open folder\u2026", "open_project")
        self.path_label = QLabel("no project")
        # A long path must not widen the dock: the label shows what fits, the tooltip all.
        self.path_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        v.addLayout(_hbox(self.open_btn, (self.path_label, 1)))
        self.image_list = _ImageList()
        v.addWidget(self.image_list, 1)
        self.count_label = QLabel("")
        self.count_label.setWordWrap(True)
        v.addWidget(self.count_label)
        self.worst_first_check = QCheckBox("worst predicted fit first")
        self.worst_first_check.setToolTip(
            "order the list by each fit's predicted error (failed fits first): check the "
            "worst first. The order is set when this is ticked and when Fit all ends.")
        v.addWidget(self.worst_first_check)
        return box

    def _landmarks_box(self):
        box = QGroupBox("Landmarks")
        v = QVBoxLayout(box)
        self.target_label = QLabel("")
        self.target_label.setStyleSheet("font-weight: bold")
        self.target_label.setWordWrap(True)
        self.names_check = QCheckBox("all names")
        self.names_check.setToolTip("show every landmark's name; otherwise only the selected "
                                    "and the hovered landmark's")
        v.addLayout(_hbox((self.target_label, 1), self.names_check))
        self.back_btn = self._button("\u25c0", "back_landmark",
                                     "back: the next click places the previous landmark ([)")
        self.skip_btn = self._button("\u25b6", "skip_landmark",
                                     "skip: the next click places the next landmark (])")
        self.undo_btn = self._button("Undo", "undo", "undo a landmark edit (Ctrl+Z)")
        self.pin_btn = self._button("Pin / unpin", "toggle_pin",
                                    "pin or unpin the selected landmarks (K)")
        v.addLayout(_hbox(self.back_btn, self.skip_btn, (self.undo_btn, 1), (self.pin_btn, 1)))
        return box

    def _fit_box(self):
        box = QGroupBox("Fit")
        v = QVBoxLayout(box)
        self.start_combo = _combo()
        for label, init in START_SOURCES:
            self.start_combo.addItem(label, init)
        self.box_btn = self._button("Draw box", "draw_box")
        v.addLayout(_hbox(QLabel("start"), (self.start_combo, 1), self.box_btn))
        self.fit_btn = self._button("Fit", "fit")
        self.refit_btn = self._button("Re-fit pins", "refit",
                                      "re-fit the free landmarks, pinned ones held (Shift+G)")
        self.fit_all_btn = self._button("Fit all", "fit_all",
                                        "fit every unannotated image nobody has touched")
        v.addLayout(_hbox(self.fit_btn, self.refit_btn, self.fit_all_btn))
        return box

    def _model_box(self):
        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.method_combo = _combo()
        self.features_combo = _combo(list(FEATURE_CHOICES))
        self.features_combo.setCurrentText(feature_choice(TrainParams()))
        self.face_check = QCheckBox("learn face-detector starts")
        self.face_check.setToolTip("faces only: learn where OpenCV's face detector puts the "
                                   "landmarks, to start fits from a detected face")
        form.addRow("method", self.method_combo)
        form.addRow("features", self.features_combo)
        form.addRow(self.face_check)
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
        self.jitter_spin = QSpinBox()
        self.jitter_spin.setRange(0, 20)
        self.scheduler_edit = QLineEdit()
        self.scheduler_edit.setPlaceholderText("empty: this computer")
        self.scheduler_edit.setToolTip("a Dask scheduler's address (tcp://host:8786): Fit all "
                                       "runs on its workers, which need napari-gsm and the "
                                       "images at the same paths")
        self.advanced = QCollapsible("More options")
        inner = QWidget()
        adv = QFormLayout(inner)
        adv.setContentsMargins(0, 0, 0, 0)
        adv.addRow("patch (px/cells)", self.patch_spin)
        adv.addRow("sigma (grid)", self.sigma_spin)
        adv.addRow("reference size", self.ref_spin)
        adv.addRow("shape weight \u03bb", self.lam_spin)
        adv.addRow("jitter copies", self.jitter_spin)
        adv.addRow("Dask scheduler", self.scheduler_edit)
        self.advanced.addWidget(inner)
        self.advanced.setDuration(0)
        form.addRow(self.advanced)
        self.validate_check = QCheckBox("cross-validate after training")
        self.validate_check.setChecked(True)
        self.validate_check.setToolTip("fit every accepted image with models trained without "
                                       "it, in the background: the Model quality dock shows "
                                       "the errors and whether more images would help")
        form.addRow(self.validate_check)
        self.train_btn = self._button("Train", "train")
        self.cancel_btn = self._button("Cancel", "cancel")
        self.cancel_btn.setEnabled(False)
        form.addRow(_hbox((self.train_btn, 1), (self.cancel_btn, 1)))
        self.progress_bar = QProgressBar()
        self.progress_bar.setVisible(False)
        form.addRow(self.progress_bar)
        self.model_label = QLabel("no model")
        self.model_label.setWordWrap(True)
        form.addRow(self.model_label)
        return box

    # == status and help ================================================================
    def show_path(self, path):
        """Show a project folder: its name, and the whole path as the tooltip."""
        self.path_label.setText(path.name or str(path))
        self.path_label.setToolTip(str(path))

    def set_status(self, text, error=False, *, warning=False, next_step=None):
        """Show ``text``; ``next_step=(label, callable)`` offers a button for what to do."""
        self.status_label.setText(text)
        self.status_label.setToolTip(text)
        self.status_label.setStyleSheet(_ERROR_STYLE if error else _WARNING_STYLE if warning
                                        else "")
        self._next_step = next_step
        self.next_step_btn.setVisible(next_step is not None)
        if next_step is not None:
            self.next_step_btn.setText(next_step[0])

    def _run_next_step(self):
        step, self._next_step = self._next_step, None
        self.next_step_btn.setVisible(False)
        if step is not None:
            step[1]()

    def show_shortcuts(self):
        """Open (or raise) the window listing every shortcut."""
        if self.shortcuts_dialog is None:
            dialog = QDialog(self)
            dialog.setWindowTitle("napari-gsm shortcuts")
            label = QLabel(shortcuts_html())
            label.setTextFormat(Qt.TextFormat.RichText)
            QVBoxLayout(dialog).addWidget(label)
            self.shortcuts_dialog, self.keys_label = dialog, label
        self.shortcuts_dialog.show()
        self.shortcuts_dialog.raise_()
        return self.shortcuts_dialog

    # == model settings =================================================================
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

    def train_settings(self):
        """``(method, TrainParams, GSMParams)`` from the controls."""
        self._refresh_methods()
        params = TrainParams(**FEATURE_CHOICES[self.features_combo.currentText()],
                             patch=self.patch_spin.value() or None,
                             sigma=self.sigma_spin.value() or None,
                             ref_size=self.ref_spin.value(), jitter=self.jitter_spin.value(),
                             face_detector=self.face_check.isChecked())
        gsm = replace(GSMParams(), lam=self.lam_spin.value() or None)
        return self.method_combo.currentText(), params, gsm

    def show_train_settings(self, method, params, lam):
        """Set the controls to a model's settings (``lam`` None: chosen automatically)."""
        self._refresh_methods()
        self.method_combo.setCurrentText(method)
        self.features_combo.setCurrentText(feature_choice(params))
        self.patch_spin.setValue(params.patch or 0)
        self.sigma_spin.setValue(params.sigma or 0.0)
        self.ref_spin.setValue(params.ref_size)
        self.lam_spin.setValue(lam or 0.0)
        self.jitter_spin.setValue(params.jitter)
        self.face_check.setChecked(params.face_detector)
