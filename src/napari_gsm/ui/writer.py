"""napari writers: one Points layer to ``.pts`` or to ``.tps``.

Single-layer npe2 writers, called as ``f(path, data, meta)`` with the layer's (row, col)
data and its attributes; they return the list of paths written. Writing is atomic and an
existing file is kept as a backup (both done by :mod:`napari_gsm.io`).

TPS stores y upwards from the bottom of the image, so writing it needs the image height,
which a single-layer writer cannot get from an Image layer: it is taken from the Points
layer's ``metadata["image_height"]`` (set by this plugin's reader and sample data); without
it the TPS writer raises :class:`LayerWriteError` saying so.

Errors are raised as :class:`LayerWriteError` (a :class:`RuntimeError`), not ``ValueError``:
napari 0.9 treats a ``ValueError`` from a writer as "no writer found" and only warns "not a
valid writer", which would hide the reason from the user.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._convert import layer_to_points

__all__ = ["write_pts_layer", "write_tps_layer", "LayerWriteError"]


class LayerWriteError(RuntimeError):
    """A Points layer cannot be written in the requested format (the message says why)."""


def _check_2d(data, meta) -> None:
    ndim = getattr(data, "ndim", None)
    shape = getattr(data, "shape", ())
    if ndim == 2 and len(shape) == 2 and shape[1] not in (2,) and shape[0] > 0:
        name = (meta or {}).get("name", "layer")
        raise LayerWriteError(f"Points layer {name!r} is {shape[1]}D; only 2D landmarks can be saved")


def write_pts_layer(path: str, data, meta: dict) -> list[str]:
    """Write one Points layer to an IBUG ``.pts`` file; returns ``[path]``."""
    from napari_gsm.io import write_pts

    _check_2d(data, meta)
    try:
        written = write_pts(Path(os.fspath(path)), layer_to_points(data), backup=True)
    except ValueError as err:
        raise LayerWriteError(f"Cannot save {(meta or {}).get('name', 'layer')!r} to {path}: {err}") from err
    return [str(written)]


def write_tps_layer(path: str, data, meta: dict) -> list[str]:
    """Write one Points layer as a one-specimen ``.tps`` file; returns ``[path]``."""
    from napari_gsm.io import TpsSpecimen, write_tps

    _check_2d(data, meta)
    meta = meta or {}
    metadata = meta.get("metadata") or {}
    height = metadata.get("image_height")
    name = meta.get("name") or Path(os.fspath(path)).stem
    if height is None:
        raise LayerWriteError(
            f"Cannot save Points layer {name!r} as TPS: TPS measures y upwards from the image "
            "bottom, so the image height is needed, and this layer has no "
            "metadata['image_height']. Set it (layer.metadata['image_height'] = "
            "image.shape[0]) or save as .pts instead.")
    image = metadata.get("tps_image")
    if image is None and metadata.get("image_path"):
        image = Path(metadata["image_path"]).name
    spec = TpsSpecimen(points=layer_to_points(data), image=image, id=name,
                       scale=metadata.get("tps_scale"), image_height=int(height))
    try:
        written = write_tps(Path(os.fspath(path)), [spec], backup=True)
    except ValueError as err:
        raise LayerWriteError(f"Cannot save {name!r} to {path}: {err}") from err
    return [str(written)]
