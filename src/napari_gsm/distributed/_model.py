"""A model file read once: the bytes that travel to the workers, their digest, the model."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

__all__ = ["ModelFile"]


class ModelFile:
    """A model file's bytes, read once, and the model they hold.

    Everything a job does with the model comes from these bytes: the model fitted here,
    the copies the workers load, and the digest ``fit`` records beside its outputs, so a
    model file replaced while a job runs changes none of them.

    Parameters
    ----------
    path : str or os.PathLike

    Attributes
    ----------
    path : pathlib.Path
    data : bytes
    digest : str
        SHA-256 of ``data``, hexadecimal.
    model : napari_gsm.model.Model

    Raises
    ------
    napari_gsm.io.ModelFileError
        For a missing, unreadable or damaged file; the message names it.
    """

    def __init__(self, path):
        from ..model import load_model

        self.path = Path(path)
        try:
            data = self.path.read_bytes()
        except OSError:
            load_model(self.path)  # raises the ModelFileError that says what is wrong
            raise
        self.data = data
        self.digest = hashlib.sha256(data).hexdigest()
        self.model = self.load()

    def load(self):
        """A new :class:`~napari_gsm.model.Model` from the bytes (what each worker does)."""
        from ..model import load_model

        return load_model(model_bytes(self.data, self.path))


def model_bytes(data, name):
    """A model file's bytes as a file object; errors about it name ``name``."""
    stream = io.BytesIO(data)
    stream.name = str(name)
    return stream
