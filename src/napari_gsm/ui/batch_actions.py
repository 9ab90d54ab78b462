"""The annotation widget's long-running actions: train, validate, fit all, export.

A mixin of :class:`~.widget.AnnotationWidget` (which provides the project, the model, the
status line and the job runner): each of these runs in the background with a progress bar
and Cancel, through :mod:`.background`.

After every training the model is cross-validated on the project's own images in the
background (:func:`napari_gsm.validation.cross_validate`, with the same method and options)
and the *Model quality* dock shows the result.
"""

from __future__ import annotations

from qtpy.QtWidgets import QDockWidget, QFileDialog

from ..io import read_image
from ..model import train
from ..validation import cross_validate
from .background import ProgressRun
from .guard import guarded
from .quality_panel import QualityPanel

__all__ = ["BatchActions", "QUALITY_DOCK"]

#: Name of the model-quality dock.
QUALITY_DOCK = "Model quality (GSM)"


class BatchActions:
    """Training, validation, fitting every unannotated image, and export."""

    def _accepted_for(self, run, busy, minimum, too_few):
        """The accepted annotations (a snapshot) for a background job, which must not be
        running yet (``run`` None, else ``busy``) and needs ``minimum`` images (else
        ``too_few``)."""
        self._need_project()
        if run is not None:
            raise ValueError(busy)
        data = self.project.snapshot()
        if len(data.items) < minimum:
            raise ValueError(too_few)
        return data

    # -- training ----------------------------------------------------------------------
    @guarded
    def train(self):
        """Train a model on the accepted annotations in a background thread (on the Dask
        scheduler given under *More options*, if any: its workers read the images)."""
        data = self._accepted_for(self.training, "training is already running", 2,
                                  "accept at least two annotated images before training")
        method, params, gsm = self.train_settings()
        self._accepted_while_training = []
        names = self.project.names
        self._trained_with = (method, params, gsm)
        scheduler = self.scheduler_edit.text().strip() or None

        def work(progress):
            from ..distributed import connect

            with connect(scheduler=scheduler) as client:
                return train(data, method, params=params, gsm_params=gsm,
                             landmark_names=names, progress=progress, client=client)

        self.training = ProgressRun(
            work,
            on_progress=self._on_progress, on_done=self._on_trained,
            on_error=lambda exc: self.set_status(f"training failed: {exc}", error=True),
            on_finished=self._on_training_finished)
        self.progress_bar.setRange(0, len(data.items))
        self.progress_bar.setValue(0)
        self.progress_bar.setVisible(True)
        self.set_status(f"training {method} on {len(data.items)} images"
                        + (f" on {scheduler}" if scheduler else "") + "\u2026")
        self._update_controls()
        return self.training

    def _on_progress(self, done, total, what):
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
        self.progress_bar.setFormat(f"{what} %v/%m")

    def _on_trained(self, model):
        if model is None:
            self.set_status("training cancelled; the previous model is kept")
            return
        p = self.project
        # Images accepted while training ran are not in its snapshot: they are added to the
        # new model on the job thread, after the updates queued before (which went into the
        # old model); jobs queued later find the new model in self.model.
        late = [(p.items[i].image_path, p.items[i].points.copy())
                for i in self._accepted_while_training]

        def job():
            for image_path, points in late:
                model.update(read_image(image_path), points)
            p.save_model(model)
            self.model = model

        def done(_):
            self._set_model(model, f"trained in {model.summary.get('train_seconds', 0):.1f} s",
                            show_settings=True)
            self.set_status(f"model saved to {p.model_path}")
            if self.validate_check.isChecked() and p.n_annotated >= 4:
                self.validate()

        self.jobs.submit(job, done, self._job_failed)

    def _on_training_finished(self):
        self.training = None
        self.progress_bar.setVisible(False)
        self._update_controls()

    def cancel(self):
        """Cancel training (the old model stays), validation or fitting all images."""
        for run in (self.training, self.validation):
            if run is not None:
                run.cancel()
        if self.fit_worker is not None:
            self.fit_worker.quit()
        self.set_status("cancelling\u2026")

    # -- validation --------------------------------------------------------------------
    def quality_panel(self):
        """The *Model quality* dock (made and docked on first use)."""
        if self.quality is None:
            self.quality = QualityPanel(on_rerun=self.validate, on_cancel=self.cancel)
            self.viewer.window.add_dock_widget(self.quality, name=QUALITY_DOCK, area="right",
                                               tabify=True)
            # Docked behind the annotation dock: the person goes on annotating.
            dock = self.parentWidget()
            while dock is not None and not isinstance(dock, QDockWidget):
                dock = dock.parentWidget()
            if dock is not None:
                dock.raise_()
        return self.quality

    @guarded
    def validate(self):
        """Cross-validate the model's training settings on the accepted images (background).

        Uses the settings of the last training (else the controls'); the result goes to the
        *Model quality* dock.
        """
        data = self._accepted_for(self.validation, "validation is already running", 4,
                                  "cross-validation needs at least 4 accepted images")
        method, params, gsm = self._trained_with or self.train_settings()
        names = self.project.names
        items = [(it.image_path, it.points.copy()) for it in data.items]
        panel = self.quality_panel()

        def work(progress):
            samples = [(read_image(path), points) for path, points in items]
            return cross_validate(samples, lambda s: train(s, method, params=params,
                                                           gsm_params=gsm,
                                                           landmark_names=names),
                                  progress=progress)

        def done(cv):
            if cv is None:
                panel.verdict.setText("validation cancelled")
            else:
                panel.show_result(cv, names)

        def finished():
            self.validation = None
            panel.busy(False)
            self._update_controls()

        panel.busy(True)
        self.validation = ProgressRun(
            work, on_progress=panel.on_progress, on_done=done, on_finished=finished,
            on_error=lambda exc: panel.verdict.setText(f"validation failed: {exc}"))
        self._update_controls()
        return self.validation

    # -- fit all -----------------------------------------------------------------------
    @guarded
    def fit_all(self):
        """Fit every unannotated, untouched image in the background (results as drafts).

        In this process, or on the Dask scheduler given under *More options* (its workers
        read the images by path; :func:`napari_gsm.distributed.fit_paths`). An image that
        cannot be read or fitted is skipped and named; the others are fitted.
        """
        from napari.qt.threading import create_worker

        self._need_model()
        p = self.project
        todo = p.fit_candidates()
        if not todo:
            raise ValueError("no untouched unannotated images to fit")
        model_path = p.model_path
        if not model_path.exists():
            p.save_model(self.model)
        # The model file, not the widget's model: accepting meanwhile updates that one.
        paths = [p.items[i].image_path for i in todo]
        scheduler = self.scheduler_edit.text().strip() or None

        def job():
            from ..distributed import connect, fit_paths

            with connect(scheduler=scheduler) as client:
                results = fit_paths(model_path, paths, client=client)
                try:
                    for n, done in enumerate(results):
                        result = None if done.error else done.result
                        yield todo[done.index], result, done.error, n + 1, len(todo)
                finally:  # Cancel: the generator is closed, the cluster's tasks with it
                    results.close()

        failed = self._fit_all_failed = []
        self.fit_worker = create_worker(job)
        self.fit_worker.yielded.connect(self._on_fitted_one)
        self.fit_worker.finished.connect(lambda: self._on_fit_all_finished(len(todo), failed))
        self.fit_worker.errored.connect(
            lambda exc: self.set_status(f"fitting failed: {exc}", error=True))
        self.progress_bar.setRange(0, len(todo))
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("fitting %v/%m" + (f" on {scheduler}" if scheduler else ""))
        self.progress_bar.setVisible(True)
        self._update_controls()
        self.fit_worker.start()
        return self.fit_worker

    def _on_fitted_one(self, value):
        i, result, problem, done, total = value
        p = self.project
        if problem is not None:
            p.problems.setdefault(p.stems[i], problem)
            self._fit_all_failed.append(f"{p.stems[i]} ({problem})")
        else:
            st = p.state(i)
            if not st.placed.any():  # someone may have started on it meanwhile
                st.set_fit(result.points, confidence=result.confidence)
                p.autosave(i)
                if i == p.index:
                    self.render()
                    self.layers.select_mode(True)
        self.progress_bar.setValue(done)
        self._refresh_list(only=i)

    def _on_fit_all_finished(self, n_todo, failed):
        self.fit_worker = None
        if self.worst_first_check.isChecked():
            self._fill_list()  # the new fits take their places
        self.progress_bar.setVisible(False)
        self._update_controls()
        fitted = self.progress_bar.value() - len(failed)
        if failed:
            self.set_status(f"fitted {fitted} of {n_todo} images (~ in the list); "
                            f"{len(failed)} could not be fitted: " + "; ".join(failed),
                            error=True)
        else:
            self.set_status(f"fitted {fitted} of {n_todo} images (~ in the list); check and "
                            "Accept each")

    # -- export ------------------------------------------------------------------------
    @guarded
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
