"""Dock: train a model from Image + Points layers (2D images and (T, H, W) stacks).

Each frame with a complete set of landmarks is one training sample; frames with some
landmarks missing are skipped and counted. Training runs in the background with progress
and Cancel; the model joins the session's models (:mod:`.session`), where the fit dock
finds it.
"""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Container, ProgressBar, PushButton

from ..methods import METHODS
from ..model import FEATURE_CHOICES, TrainParams, feature_choice, train
from .context_menu import add_layer_context_items
from .background import ProgressRun
from .layer_data import frame_image
from .layers_common import (image_frames, layer_pair_choosers, landmark_names, landmarks_of,
                            pair_for, wrapped_label)
from .session import SESSION

__all__ = ["TrainLayersWidget", "training_samples"]


def training_samples(pairs):
    """Training samples from ``(image_layer, points_layer)`` pairs.

    Returns
    -------
    samples : list of (image, (v, 2) points)
    names : list of str
    note : str
        What was used and what was skipped, for the status line.

    Raises
    ------
    ValueError
        Naming the layer (and frame) when landmark counts disagree or nothing is complete.
    """
    samples, skipped, used, names, v = [], [], [], None, None
    for image_layer, points_layer in pairs:
        marks = landmarks_of(points_layer, image_layer, v)
        if v is None:
            v = marks.n_landmarks
            names = landmark_names(points_layer, v)
        elif marks.n_landmarks != v:
            raise ValueError(f"Points layer {points_layer.name!r} has {marks.n_landmarks} "
                             f"landmarks, the others {v}")
        data, rgb, n = image_frames(image_layer)
        for t in marks.complete:
            if not 0 <= t < n:
                raise ValueError(f"Points layer {points_layer.name!r}: frame {t} is not a "
                                 f"frame of {image_layer.name!r} (it has {n})")
            samples.append((frame_image(data, rgb, t), marks.frames[t]))
        used.append(f"{len(marks.complete)} from {points_layer.name!r}")
        skipped += [f"{points_layer.name!r} frame {t}" for t in marks.incomplete]
    if not samples:
        raise ValueError("no frame has all its landmarks placed yet"
                         + (f" ({len(skipped)} incomplete)" if skipped else ""))
    note = f"{len(samples)} frames ({', '.join(used)})"
    if skipped:
        note += (f"; {len(skipped)} incomplete frame(s) skipped: " + ", ".join(skipped[:5])
                 + (" ..." if len(skipped) > 5 else ""))
    return samples, names, note


class TrainLayersWidget(Container):
    """Pick Image + Points layers (or every annotated pair), train, see progress, cancel."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        add_layer_context_items()
        self.image, self.points = layer_pair_choosers(napari_viewer)
        self.all_pairs = CheckBox(text="all annotated pairs in the viewer")
        self.method = ComboBox(label="method", choices=list(METHODS), value="gsm")
        self.features = ComboBox(label="features", choices=list(FEATURE_CHOICES),
                                 value=feature_choice(TrainParams()))
        self.face = CheckBox(text="learn face-detector starts (faces)")
        self.train_btn = PushButton(text="Train")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(visible=False)
        self.status = wrapped_label()
        super().__init__(widgets=[self.image, self.points, self.all_pairs, self.method,
                                  self.features, self.face,
                                  Container(widgets=[self.train_btn, self.cancel_btn],
                                            layout="horizontal", labels=False),
                                  self.progress, self.status])
        self.run = None
        self.train_btn.changed.connect(self.train)
        self.cancel_btn.changed.connect(self.cancel)

    def pairs(self):
        """The (image, points) layer pairs to train on."""
        if not self.all_pairs.value:
            if self.image.value is None or self.points.value is None:
                raise ValueError("choose an Image layer and a Points layer")
            return [(self.image.value, self.points.value)]
        pairs = []
        for layer in self.viewer.layers:
            if type(layer).__name__ == "Points" and len(layer.data):
                image = pair_for(self.viewer, layer)
                if image is not None:
                    pairs.append((image, layer))
        if not pairs:
            raise ValueError("no Points layer with landmarks goes with an Image layer")
        return pairs

    def train(self, *_):
        if self.run is not None:
            return None
        try:
            samples, names, note = training_samples(self.pairs())
            if len(samples) < 2:
                raise ValueError(f"{note}: at least two complete frames are needed")
        except ValueError as exc:
            self.status.value = str(exc)
            return None
        method = self.method.value
        params = TrainParams(**FEATURE_CHOICES[self.features.value],
                             face_detector=self.face.value)
        self.status.value = f"training {method} on {note}\u2026"
        self.progress.visible, self.progress.max, self.progress.value = True, len(samples), 0
        self.train_btn.enabled, self.cancel_btn.enabled = False, True

        def done(model):
            if model is None:
                self.status.value = "training cancelled"
                return
            entry = SESSION.add(model)
            self.status.value = (f"trained {entry.label!r}: {method} on {note}, "
                                 f"{model.summary.get('train_seconds', 0):.1f} s")

        self.run = ProgressRun(
            lambda progress: train(samples, method, params=params, landmark_names=names,
                                   progress=progress),
            on_progress=self._on_progress, on_done=done,
            on_error=lambda exc: setattr(self.status, "value", f"training failed: {exc}"),
            on_finished=self._finished)
        return self.run

    def _on_progress(self, done, total, what):
        self.progress.max, self.progress.value = max(total, 1), done
        self.progress.label = what

    def _finished(self):
        self.run = None
        self.progress.visible = False
        self.train_btn.enabled, self.cancel_btn.enabled = True, False

    def cancel(self, *_):
        if self.run is not None:
            self.run.cancel()
            self.status.value = "cancelling\u2026"
