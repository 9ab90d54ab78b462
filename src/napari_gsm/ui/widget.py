"""The annotation dock widget: open a project, place, train, fit, correct, accept, export.

The widget is the *actions* (fitting in :mod:`.fit_actions`, the image list in
:mod:`.image_list`, training and batch work in :mod:`.batch_actions`): what the project
holds (which images are done, edits, pins, undo, drafts) is
:class:`napari_gsm.ui.project.Project`; the controls are
:class:`~.annotation_view.AnnotationView`; what is drawn in napari is
:class:`~.landmark_layers.LandmarkLayers`; training and fitting are the core's
:func:`napari_gsm.train` and :meth:`napari_gsm.Model.fit`.

Nothing slow runs on the UI thread. Fits, re-fits and incremental model updates run one at
a time on the widget's :class:`~.jobs.JobRunner`, in the order they were asked for, so an
accepted image is in the model before the next image is fitted. A fit's result is applied
only if the person is still on that image and has not edited it meanwhile. Training and
"fit all" have their own workers with progress and Cancel.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QThreadPool
from qtpy.QtWidgets import QFileDialog, QInputDialog, QMessageBox

from ..io import ImageFileError, ModelFileError
from ..model import load_model
from .context_menu import add_layer_context_items
from .annotation_view import AnnotationView
from .batch_actions import BatchActions
from .fit_actions import FitActions
from .guard import guarded
from .image_list import ImageListActions
from .jobs import JobRunner
from .keys import bind_keys, unbind_keys
from .landmark_layers import LandmarkLayers
from .project import Project

__all__ = ["AnnotationWidget"]

#: Every name is drawn by default only up to this many landmarks (68 face names overlap).
NAMES_SHOWN_UP_TO = 20


class AnnotationWidget(FitActions, ImageListActions, BatchActions, AnnotationView):
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
        add_layer_context_items()
        self.project: Project | None = None
        self.model = None
        self.layers = LandmarkLayers(napari_viewer, self._on_points_edited)
        self.jobs = JobRunner(self)
        self.jobs.busy.connect(lambda busy: self._update_controls())
        self.training = self.validation = self.fit_worker = None
        self.quality = None
        self._trained_with = None
        self._accepted_while_training: list[int] = []
        self._connect_list()
        self.names_check.toggled.connect(self.layers.set_all_names)
        bound, viewer, layers, jobs = bind_keys(self.viewer, self), self.viewer, self.layers, self.jobs

        def on_destroyed(*_):  # keys and callbacks must not call into a closed widget
            unbind_keys(viewer, bound)
            layers.close()
            jobs.shutdown()
            for run in (self.training, self.validation):
                if run is not None:
                    run.cancel()
            if self.fit_worker is not None:
                self.fit_worker.quit()
            # A worker still running when Python exits signals through deleted Qt objects
            # (an abort): let the cancelled ones stop first.
            QThreadPool.globalInstance().waitForDone(10000)

        self.destroyed.connect(on_destroyed)
        self._update_controls()
        if project_dir is not None:
            self.open_project(project_dir, model_path)

    @property
    def points_layer(self):
        return self.layers.points

    @property
    def image_layer(self):
        return self.layers.image

    @property
    def box_layer(self):
        return self.layers.box

    def _update_controls(self):
        has_project = self.project is not None
        has_model = self.model is not None
        busy_train, busy_fit = self.training is not None, self.fit_worker is not None
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
    @guarded
    def open_project(self, path=None, model_path=None, n_landmarks=None):
        """Open a project folder (asks for one when ``path`` is None).

        A folder with no ``.pts`` and no ``landmarks.txt`` needs ``n_landmarks`` (asked for
        when the folder was chosen in the dialog); the first accepted image then fixes it.
        """
        ask = path is None
        if self.training is not None or self.fit_worker is not None or not self.jobs.idle:
            raise ValueError("wait for (or cancel) training and fitting before opening "
                             "another folder")
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
        if self.validation is not None:  # it was checking the other project's model
            self.validation.cancel()
        self.project = project
        self.model = None
        self.model_label.setText("no model: annotate a few images, then Train")
        # Until a model says otherwise, 68 landmarks are a face (the 300-W layout).
        self.face_check.setChecked(project.n_landmarks == 68)
        src = Path(model_path) if model_path is not None else project.model_path
        model_problem = ""
        if src.exists():
            # A bad model file must not keep the annotations from opening.
            try:
                self._set_model(load_model(src), f"loaded {src.name}", show_settings=True)
            except (ModelFileError, ValueError) as exc:
                model_problem = f"model not loaded ({exc})"
        self.show_path(project.root.resolve())
        self._fill_list()
        self.layers.setup_points(project.names)
        self.names_check.setChecked(project.n_landmarks <= NAMES_SHOWN_UP_TO)
        self.layers.set_all_names(self.names_check.isChecked())
        # The first image still to annotate that can be read, else the first readable one.
        order = self._unannotated_from(0) + list(range(len(project)))
        if self._show_first_readable(order)[0] is None:
            self.project = None
            self._update_controls()
            raise ValueError(f"no image in {project.root} can be read: "
                             + "; ".join(project.problems.values()))
        self._update_controls()
        problems = [f"{stem}: {why}" for stem, why in project.problems.items()]
        notes = ([f"{len(problems)} file(s) need attention (\u26a0 in the list): "
                  + "; ".join(problems)] if problems else []) + ([model_problem] if model_problem else [])
        self.set_status(f"opened {len(project)} images" + (" \u2014 " + " \u2014 ".join(notes)
                                                             if notes else ""),
                        error=bool(notes))
        return self.project

    def _set_model(self, model, how, show_settings=False):
        """Use ``model``; ``show_settings`` sets the training controls to the model's."""
        if model.n_landmarks != self.project.n_landmarks:
            raise ValueError(f"the model has {model.n_landmarks} landmarks, the project "
                             f"{self.project.n_landmarks}")
        self.model = model
        self._show_model_label(how)
        if show_settings:
            # lam: 'auto' when the model chose it on held-out images (it kept the scores).
            lam = None if "lam_validation" in model.summary else model.gsm_params.lam
            self.show_train_settings(model.method, model.train_params, lam)
        self._update_controls()

    def _show_model_label(self, how):
        s = self.model.summary
        self.model_label.setText(
            f"model: {self.model.method}, {self.model.features.kind}, "
            f"{s.get('n_images', '?')} images ({s.get('n_updates', 0)} incremental) \u2014 {how}")

    @guarded
    def show_image(self, i):
        """Show image ``i`` and its landmarks (the previous image's edits stay, autosaved).

        An image that cannot be read is marked in the list and the current one stays.
        """
        p = self.project
        try:
            st = p.go(i)
        except ImageFileError:
            self._refresh_list()  # marks it, and puts the selection back on the current one
            raise
        self.layers.show_image(p.image(), p.item.stem)
        self.layers.show_box_of(p.item.stem)
        self.render()
        self.layers.points.selected_data = set()
        self.layers.select_mode(st.complete)
        self._refresh_list()
        return st

    def _show_first_readable(self, order):
        """Show the first image in ``order`` that can be read.

        Returns ``(index or None, stems of the unreadable images passed over)``.
        """
        skipped = []
        for i in order:
            try:
                AnnotationWidget.show_image.__wrapped__(self, i)
                return i, skipped
            except ImageFileError:
                skipped.append(self.project.stems[i])
        return None, skipped

    def _step_image(self, delta):
        """Show the next readable image ``delta`` away (skipping unreadable ones)."""
        p = self.project
        if p is None:
            return
        order = range(p.index + delta, len(p) if delta > 0 else -1, 1 if delta > 0 else -1)
        shown, skipped = self._show_first_readable(order)
        if skipped:
            self.set_status(f"skipped unreadable {', '.join(skipped)}", warning=True)
        elif shown is None:
            self.set_status("no further image this way")

    def _unannotated_from(self, i):
        """Unannotated images from ``i`` on, cyclically."""
        n = len(self.project)
        return [(i + d) % n for d in range(n) if not self.project.is_annotated((i + d) % n)]

    # == drawing the landmarks and reading edits back ===================================
    def render(self):
        """Draw the current image's landmarks from the project state."""
        self.layers.draw(self.project.state())
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

    def _on_points_edited(self, added):
        if self.project is None:
            return
        idx, xy = self.layers.edits()
        if added is not None and len(added):
            idx = idx.copy()
            idx[added % max(len(idx), 1)] = -1
        st = self.project.state()
        if st.apply_layer(idx, xy):
            self.project.autosave()
            self._refresh_list(only=self.project.index)
        self.render()
        if st.complete and self.layers.points.mode == "add":
            self.layers.points.mode = "select"

    # == actions (buttons and keys.py) ==================================================
    def _need_project(self):
        if self.project is None:
            raise ValueError("open a project folder first")

    def next_image(self):
        self._step_image(+1)

    def previous_image(self):
        self._step_image(-1)

    def next_unannotated(self):
        if self.project is not None:
            i = self.project.next_unannotated()
            if i is None:
                self.set_status("every image is annotated")
            else:
                self._show_first_readable(self._unannotated_from(i))

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

    @guarded
    def undo(self):
        self._need_project()
        if self.project.state().undo():
            self._after_edit("undone")
        else:
            self.set_status("nothing to undo")

    @guarded
    def redo(self):
        self._need_project()
        if self.project.state().redo():
            self._after_edit("redone")

    @guarded
    def toggle_pin(self):
        self._need_project()
        ks = self.layers.selected_landmarks()
        if not len(ks):
            raise ValueError("select landmarks (select mode, S) to pin or unpin them")
        if self.project.state().toggle_pin(ks):
            self._after_edit(f"pins changed on {len(ks)} landmark(s)")

    def _after_edit(self, what, **status):
        self.project.autosave()
        self.render()
        self._refresh_list(only=self.project.index)
        self.set_status(what, **status)

    # -- accept ------------------------------------------------------------------------
    def _confirm(self, title, text):
        """Ask a yes/no question (tests replace this)."""
        answer = QMessageBox.question(self, title, text)
        return answer == QMessageBox.StandardButton.Yes

    @guarded
    def accept(self):
        """Save the current image's .pts, update the model, go to the next image and fit it."""
        self._need_project()
        p = self.project
        i = p.index
        broken = p.pts_unreadable(i)
        if broken and not self._confirm(
                "Replace an unreadable annotation?",
                f"{p.problem(i)}\n\nReplace it with these landmarks? The old file is kept "
                "as a numbered backup beside it."):
            raise ValueError(f"{p.problem(i)} \u2014 left as it is")
        path, was_new = p.accept(replace_broken=broken)
        msg = f"saved {path.name}"
        if self.model is not None and was_new:
            self._submit_update(i)
            msg += ", updating the model"
        if self.training is not None:
            self._accepted_while_training.append(i)
        self._refresh_list(only=i)
        nxt = p.next_unannotated(after=i)
        if nxt is None:
            self.render()
            self.set_status(msg + "; every image is annotated \u2014 Export when ready")
            return path
        shown = self._show_first_readable(self._unannotated_from(nxt))[0]
        self.set_status(msg + (f"; now {p.item.stem}" if shown is not None else ""))
        if self.model is not None and shown is not None and not p.state().placed.any():
            self.fit()
        return path

    def _submit_update(self, i):
        """Add accepted image ``i`` to the model in the background and save the model."""
        p = self.project
        image, points = p.image(i), p.items[i].points.copy()

        def job():
            self.model.update(image, points)
            p.save_model(self.model)

        self.jobs.submit(job, lambda _: self._show_model_label("updated"), self._job_failed)
