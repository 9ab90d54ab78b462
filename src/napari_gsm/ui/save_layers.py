"""Dock: save corrected landmarks back into a training set, and export a Points layer.

*Save to training set* writes the current frame (or every complete frame) as image +
same-stem 300-W ``.pts`` into a dataset folder (an existing annotation is kept as a numbered
backup) and adds it to the chosen model incrementally, so the next fit uses it. *Export .pts*
writes every frame of the Points layer as one ``.pts`` each, the frame index in the stem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, PushButton

from ..io import add_to_dataset, write_pts
from .context_menu import add_layer_context_items
from .background import start_frames
from .layer_data import frame_image
from .layers_common import (ModelPicker, current_frame, image_frames, layer_pair_choosers,
                            landmark_names, landmarks_of, model_lock, wrapped_label)
from .session import SESSION

__all__ = ["SaveLayersWidget", "frame_stem"]

FRAMES = ("current frame", "every complete frame")


def frame_stem(image_layer, t):
    """File stem for frame ``t`` of an image layer: its name, plus ``_t0007`` for a stack."""
    stem = Path(image_layer.name).stem.replace("/", "_").strip() or "image"
    return stem if image_layer.ndim == 2 else f"{stem}_t{t:04d}"


class SaveLayersWidget(Container):
    """Image + Points layers and a dataset folder; save to it, or export the layer."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        add_layer_context_items()
        self.image, self.points = layer_pair_choosers(napari_viewer)
        self.folder = FileEdit(label="folder", mode="d")
        self.frames = ComboBox(label="frames", choices=list(FRAMES), value=FRAMES[0])
        self.picker = ModelPicker()
        self.save_btn = PushButton(text="Save to training set")
        self.export_btn = PushButton(text="Export .pts (all frames)")
        self.status = wrapped_label()
        super().__init__(widgets=[self.image, self.points, self.folder, self.frames,
                                  self.picker, self.save_btn, self.export_btn, self.status])
        self.worker = None
        self.save_btn.changed.connect(self.save)
        self.export_btn.changed.connect(self.export)

    def _layers(self):
        image_layer, points_layer = self.image.value, self.points.value
        if image_layer is None or points_layer is None:
            raise ValueError("choose an Image layer and its Points layer")
        folder = Path(self.folder.value)
        if str(self.folder.value) in ("", "."):
            raise ValueError("choose a folder")
        return image_layer, points_layer, folder

    def save(self, *_):
        """Write the frame(s) into the folder; add them to the model in the background.

        Returns the written paths (image, ``.pts``) or None.
        """
        try:
            image_layer, points_layer, folder = self._layers()
            entry = self.picker.entry
            v = entry.model.n_landmarks if entry is not None else None
            marks = landmarks_of(points_layer, image_layer, v)
            data, rgb, n = image_frames(image_layer)
            if self.frames.value == FRAMES[0]:
                t = current_frame(self.viewer, image_layer)
                if t not in marks.complete:
                    have = marks.frames.get(t)
                    missing = marks.n_landmarks if have is None else int(
                        np.isnan(have).any(1).sum())
                    raise ValueError(f"frame {t} of {points_layer.name!r} is missing "
                                     f"{missing} landmark(s): place them all before saving")
                frames = [t]
            else:
                frames = marks.complete
                if not frames:
                    raise ValueError(f"{points_layer.name!r} has no frame with every landmark")
            names = landmark_names(points_layer, marks.n_landmarks)
            written, samples = [], []
            for t in frames:
                image = frame_image(data, rgb, t)
                written += add_to_dataset(folder, frame_stem(image_layer, t), image,
                                          marks.frames[t], names=names)
                samples.append((image, marks.frames[t]))
        except (ValueError, OSError) as exc:
            self.status.value = str(exc)
            return None
        note = f"saved {len(frames)} frame(s) to {folder}"
        if entry is None:
            self.status.value = note + " (no model to update)"
            return written
        self.status.value = note + f"; adding them to {entry.label!r}\u2026"
        model, lock = entry.model, model_lock(entry.model)

        def update(sample):
            with lock:
                model.update(*sample)

        def finished():
            self.worker = None
            SESSION.changed()  # the fit dock shows the new training size
            self.status.value = note + f"; {entry.label!r} updated (the next fit uses them)"

        self.worker = start_frames(samples, update, on_result=lambda _: None,
                                   on_finished=finished)
        return written

    def export(self, *_):
        """Write every frame of the Points layer as ``.pts`` (missing landmarks as -1 -1)."""
        try:
            image_layer, points_layer, folder = self._layers()
            marks = landmarks_of(points_layer, image_layer)
            if not marks.frames:
                raise ValueError(f"{points_layer.name!r} has no points")
            folder.mkdir(parents=True, exist_ok=True)
            written = [write_pts(folder / f"{frame_stem(image_layer, t)}.pts", marks.frames[t],
                                 backup=True, missing="negative") for t in sorted(marks.frames)]
        except (ValueError, OSError) as exc:
            self.status.value = str(exc)
            return None
        gaps = len(marks.incomplete)
        self.status.value = (f"exported {len(written)} .pts file(s) to {folder}"
                             + (f"; {gaps} with missing landmarks written as -1 -1" if gaps else ""))
        return written
