"""Dock: fit an Image layer (2D or a (T, H, W) stack) into a Points layer.

The current frame, every frame, or *tracked* from the current frame on (each frame starts
from the previous frame's fit; :func:`napari_gsm.track`). Starts: auto, the face detector,
the last rectangle of a Shapes layer, the learned prior, or the output layer's own points
(the ones a person placed or moved since the last fit are held as pins). Fitting runs in the
background with progress per frame and Cancel; the fitted landmarks go to a new Points layer
or update the chosen one (frames not fitted keep their points).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from magicgui.widgets import ComboBox, Container, ProgressBar, PushButton

from ..quality import fit_warnings
from ..track import track
from ._convert import layer_to_points
from .context_menu import add_layer_context_items
from .background import ProgressRun, start_frames
from .layer_data import frame_image
from .layers_common import (ModelPicker, current_frame, image_frames, landmark_names,
                            landmarks_of, model_lock, moved_points, wrapped_label, write_fits)
from .session import SESSION

__all__ = ["FitLayersWidget", "SCOPES", "STARTS"]

SCOPES = ("current frame", "all frames", "track from current frame")
#: Start labels and their ``Model.fit`` init names.
STARTS = {"auto": "auto", "face detector": "detect", "box (Shapes layer)": "box",
          "learned prior": "prior", "output layer's points": "points"}


class _Frames(Sequence):
    """Frames of an image layer, read one at a time (a long stack stays on disk)."""

    def __init__(self, data, rgb, frames):
        self.data, self.rgb, self.frames = data, rgb, list(frames)

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, k):
        return frame_image(self.data, self.rgb, self.frames[k])


def box_of(shapes_layer, image_layer):
    """The last rectangle of a Shapes layer as ``(x0, y0, x1, y1)`` image pixels, or None."""
    if shapes_layer is None or not len(shapes_layer.data):
        return None
    corners = np.asarray(shapes_layer.data[-1], float)
    pixels = np.array([image_layer.world_to_data(shapes_layer.data_to_world(c)[-image_layer.ndim:])
                       for c in corners])
    xy = layer_to_points(pixels[:, -2:])
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    return (float(x0), float(y0), float(x1), float(y1))


class FitLayersWidget(Container):
    """Model, image, output layer, frames and start; Fit and Cancel."""

    def __init__(self, napari_viewer):
        from typing import Optional

        from magicgui.widgets import create_widget
        from napari.layers import Image, Points, Shapes

        self.viewer = napari_viewer
        add_layer_context_items()
        self.picker = ModelPicker()
        self.image = create_widget(annotation=Image, label="image")
        self.output = create_widget(annotation=Optional[Points], label="into",
                                    options={"nullable": True})
        self.scope = ComboBox(label="frames", choices=list(SCOPES), value=SCOPES[0])
        self.start = ComboBox(label="start", choices=list(STARTS), value="auto")
        self.box = create_widget(annotation=Optional[Shapes], label="box layer",
                                 options={"nullable": True})
        self.fit_btn = PushButton(text="Fit")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(visible=False)
        self.status = wrapped_label()
        super().__init__(widgets=[self.picker, self.image, self.output, self.scope, self.start,
                                  self.box,
                                  Container(widgets=[self.fit_btn, self.cancel_btn],
                                            layout="horizontal", labels=False),
                                  self.progress, self.status])
        self.worker = self.run = None
        self.fit_btn.changed.connect(self.fit)
        self.cancel_btn.changed.connect(self.cancel)

    @property
    def busy(self):
        return self.worker is not None or self.run is not None

    def _busy(self, on, total=0):
        self.fit_btn.enabled, self.cancel_btn.enabled = not on, on
        self.progress.visible = on
        if on:
            self.progress.max, self.progress.value = max(total, 1), 0
        else:
            self.worker = self.run = None

    def fit(self, *_):
        """Fit the chosen frames in the background; returns the worker, or None."""
        if self.busy:
            return None
        try:
            return self._start()
        except (ValueError, LookupError) as exc:
            self.status.value = str(exc)
            return None

    def _start(self):
        entry, image_layer = self.picker.entry, self.image.value
        if entry is None:
            raise ValueError("no model: train one from layers, or load a model file")
        if image_layer is None:
            raise ValueError("choose an Image layer to fit")
        model, lock = entry.model, model_lock(entry.model)
        data, rgb, n = image_frames(image_layer)
        t0 = current_frame(self.viewer, image_layer)
        scope = self.scope.value
        frames = [t0] if scope == SCOPES[0] else list(range(n)) if scope == SCOPES[1] \
            else list(range(t0, n))
        init = STARTS[self.start.value]
        box = box_of(self.box.value, image_layer)
        if init == "box" and box is None:
            raise ValueError("draw a rectangle in a Shapes layer and choose it as the box layer")
        output = self.output.value
        names = landmark_names(output, model.n_landmarks)
        starts = {}
        if init == "points":
            if output is None or not len(output.data):
                raise ValueError("'output layer's points' starts from the points of the layer "
                                 "chosen under 'into': choose one that has points")
            starts = landmarks_of(output, image_layer, model.n_landmarks).frames
        fits = {}

        def finish(note):
            layer = write_fits(self.viewer, image_layer, fits, names, output)
            self.output.reset_choices()
            self.output.value = layer
            self.status.value = note
            self._busy(False)

        if scope == SCOPES[2]:
            first = starts.get(frames[0])

            def work(progress):
                with lock:
                    return track(model, _Frames(data, rgb, frames), init=init, box=box,
                                 points=first, progress=lambda d, t: progress(d, t, "tracking"))

            def done(result):
                if result is None:
                    self.status.value = "tracking cancelled"
                    self._busy(False)
                    return
                fits.update(zip(frames, result.fits))
                restarts = [frames[k] for k in result.restarted]
                finish(f"tracked {len(frames)} frames from frame {frames[0]} with "
                       f"{entry.label!r}; re-started from scratch on {len(restarts)}"
                       + (f" (frames {', '.join(map(str, restarts[:10]))})" if restarts else ""))

            self._busy(True, len(frames))
            self.status.value = f"tracking {len(frames)} frames\u2026"
            self.run = ProgressRun(work, on_progress=self._on_progress, on_done=done,
                                   on_error=self._failed, on_finished=lambda: self._busy(False),
                                   blas_threads=1)
            return self.run

        doubtful, failed = [], []

        def fit_one(t):
            image = frame_image(data, rgb, t)
            points = starts.get(t)
            pinned = moved_points(output, t, points) if points is not None else None
            with lock:
                result = model.fit(image, init, box=box, points=points,
                                   pinned=pinned if pinned is not None and pinned.any() else None)
                return result, fit_warnings(model, result, image)

        def on_result(value):
            t, out, problem, done, total = value
            self.progress.value = done
            if problem is not None:
                failed.append(f"frame {t}: {problem}")
                return
            fits[t], warnings = out
            if warnings:
                doubtful.append(t)

        def on_finished():
            note = f"fitted {len(fits)} of {len(frames)} frame(s) with {entry.label!r}"
            if doubtful:
                note += f"; check frame(s) {', '.join(map(str, doubtful[:10]))} (doubtful fit)"
            if failed:
                note += f"; {len(failed)} failed: " + "; ".join(failed[:3])
            finish(note)

        self._busy(True, len(frames))
        self.status.value = f"fitting {len(frames)} frame(s)\u2026"
        self.worker = start_frames(frames, fit_one, on_result=on_result,
                                   on_finished=on_finished, on_error=self._failed)
        return self.worker

    def _on_progress(self, done, total, what):
        self.progress.max, self.progress.value = max(total, 1), done

    def _failed(self, exc):
        self.status.value = f"fitting failed: {exc}"
        self._busy(False)

    def cancel(self, *_):
        if self.worker is not None:
            self.worker.quit()
        if self.run is not None:
            self.run.cancel()
        self.status.value = "cancelling\u2026"

    def select(self, image_layer=None, scope=None):
        """Preselect an image layer and the frames (menu commands use this)."""
        if image_layer is not None:
            self.image.reset_choices()
            self.image.value = image_layer
        if scope is not None:
            self.scope.value = scope
        return self

    def ready(self):
        """True when a model and an image are chosen."""
        return SESSION.latest is not None and self.image.value is not None
