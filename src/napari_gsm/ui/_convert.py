"""The one place where core landmark arrays and napari Points data are converted.

Core convention (all of napari-gsm outside ``ui/``): float arrays of shape ``(v, 2)`` in
``(x, y)`` order, 0-based, the centre of the top-left pixel being ``(0, 0)``.

napari convention: a 2D Points layer stores ``(row, col)`` = ``(y, x)``, and napari draws
the centre of pixel ``[r, c]`` of an Image layer at ``(r, c)``, so both are 0-based pixel
centres: the conversion is a pure axis swap, with no offset. (The 1-based ``.pts`` convention
is handled inside :mod:`napari_gsm.io`.)
"""

from __future__ import annotations

import numpy as np

__all__ = ["points_to_layer", "layer_to_points"]


def _as_v2(a, what: str) -> np.ndarray:
    arr = np.asarray(a, dtype=float)
    if arr.size == 0:
        return np.empty((0, 2), dtype=float)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{what} must have shape (v, 2), got {arr.shape}")
    return arr


def points_to_layer(points_xy) -> np.ndarray:
    """Core ``(v, 2)`` (x, y) landmarks -> napari Points data ``(v, 2)`` (row, col)."""
    return np.ascontiguousarray(_as_v2(points_xy, "landmarks (x, y)")[:, ::-1])


def layer_to_points(data_rc) -> np.ndarray:
    """napari 2D Points data ``(v, 2)`` (row, col) -> core ``(v, 2)`` (x, y) landmarks.

    Only 2D layers are supported: a landmark annotation lives on one image plane.
    """
    return np.ascontiguousarray(_as_v2(data_rc, "Points layer data (row, col)")[:, ::-1])
