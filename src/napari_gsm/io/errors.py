"""Exceptions raised by :mod:`napari_gsm.io`.

All of them subclass :class:`ValueError`, so callers that only care about "this file
is bad" can catch one thing; the attributes carry what a user needs to fix the file.
"""

from __future__ import annotations

import os

__all__ = ["LandmarkFileError", "ImageFileError", "ModelFileError"]


class LandmarkFileError(ValueError):
    """A landmark file (``.pts``, ``.tps``, names sidecar) cannot be used.

    Parameters
    ----------
    path : str or os.PathLike
        The offending file (``"<string>"`` for in-memory text).
    reason : str
        What is wrong, phrased for the user.
    line : int, optional
        1-based line number of the problem, when it has one.

    Attributes
    ----------
    path : str
    line : int or None
    reason : str

    Notes
    -----
    ``str(err)`` is ``"{path}:{line}: {reason}"``, or ``"{path}: {reason}"`` when
    there is no line, the format compilers use, so editors can jump to it.
    """

    def __init__(self, path, reason: str, line: int | None = None):
        # args holds all three so the exception pickles (multiprocessing) intact.
        super().__init__(path, reason, line)
        self.path = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
        self.reason = str(reason)
        self.line = None if line is None else int(line)

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.reason}"
        return f"{self.path}:{self.line}: {self.reason}"


class ImageFileError(LandmarkFileError):
    """An image file is missing, empty or cannot be decoded."""


class ModelFileError(ValueError):
    """A model file (``.npz`` + JSON) cannot be loaded.

    Parameters
    ----------
    path : str, os.PathLike or file object
        A file object (a model read into memory) is named by its ``name`` attribute.
    reason : str

    Attributes
    ----------
    path : str
    reason : str
    """

    def __init__(self, path, reason: str):
        if not isinstance(path, (str, os.PathLike)):
            path = getattr(path, "name", path)
        path = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
        super().__init__(path, reason)
        self.path = path
        self.reason = str(reason)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"
