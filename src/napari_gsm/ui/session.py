"""The models of this napari session: trained from layers, or loaded from files.

The layer widgets share them through :data:`SESSION`: a model trained in the "Train from
layers" dock is offered at once in the "Fit image layers" dock, and so is one loaded from a
file. Qt-free; listeners are called on the thread that changes the list (the UI thread).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["SessionModels", "SessionEntry", "SESSION", "describe_model"]


def describe_model(model):
    """One line a person reads: method, features, landmarks, training size."""
    s = model.summary
    n = s.get("n_images", "?")
    updates = s.get("n_updates", 0)
    return (f"{model.method}, {model.features.kind} features, {model.n_landmarks} landmarks, "
            f"trained on {n} images" + (f" ({updates} added since)" if updates else ""))


@dataclass
class SessionEntry:
    """A model of the session and where it came from (``path`` None: trained here)."""

    model: object
    label: str
    path: Path | None = None


class SessionModels:
    """The session's models, newest last, and who wants to hear about changes."""

    def __init__(self):
        self.entries: list[SessionEntry] = []
        self._listeners = []

    def add(self, model, *, path=None, label=None):
        """Add a model (trained, or loaded from ``path``); returns its entry.

        Loading the same file again replaces its entry.
        """
        if path is not None:
            path = Path(path).resolve()
            self.entries = [e for e in self.entries if e.path != path]
        n_trained = sum(e.path is None for e in self.entries)
        label = label or (f"{path.name}" if path is not None
                          else f"trained in this session #{n_trained + 1}")
        entry = SessionEntry(model, label, path)
        self.entries.append(entry)
        self.changed()
        return entry

    def load(self, path):
        """Load a model file and add it (see :func:`napari_gsm.load_model`)."""
        from ..model import load_model

        return self.add(load_model(path), path=path)

    @property
    def latest(self):
        return self.entries[-1] if self.entries else None

    def find(self, label):
        return next((e for e in self.entries if e.label == label), None)

    def connect(self, callback):
        self._listeners.append(callback)

    def disconnect(self, callback):
        if callback in self._listeners:
            self._listeners.remove(callback)

    def changed(self):
        """Tell the listeners (a model was added, or updated in place)."""
        for callback in list(self._listeners):
            callback()


#: The process's one session (napari runs one session per process).
SESSION = SessionModels()
