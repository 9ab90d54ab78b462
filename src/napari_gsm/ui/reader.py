"""napari reader: ``.pts`` / ``.tps`` landmark files and annotated image folders.

``get_reader(path)`` is the npe2 reader contribution. It returns ``None`` for anything it
does not take (other suffixes, missing/unreadable paths, folders without any image that has
a same-stem ``.pts``) and never raises for those. A file it does take but cannot parse raises
:class:`napari_gsm.io.LandmarkFileError` (naming file and line) when napari calls the returned
function: a broken landmark file is an error the user must see.

What is opened
--------------
``.pts``
    The same-stem image beside it (if any) as an Image layer, then one Points layer named
    after the file stem, on top.
``.tps``
    One Points layer per specimen (named by ``ID=``, else ``IMAGE=``, else its index), each
    preceded by its image when ``IMAGE=`` resolves next to the file. Only the first
    specimen's layers are visible.
dataset folder
    The first annotated image of the folder and its points. Both layers carry
    ``metadata["napari_gsm_dataset"]`` (the folder) and ``metadata["napari_gsm_stem"]``
    (the item's stem), for navigating through the folder.

Points layers get ``features`` ``landmark`` (0-based index) and ``name`` (from the
``landmarks.txt`` sidecar in the same folder, else ``"1".."v"``), one fixed colour per
landmark index (a categorical cycle), hidden text labels showing ``name``, and ``metadata``
``napari_gsm_source`` (the landmark file), ``landmark_names`` and, when the image is known,
``image_path`` and ``image_height``/``image_shape`` (the TPS writer needs the height to flip y).
A ``.tps`` specimen whose image cannot be found and that has no height raises the io's
LandmarkFileError (TPS y runs upwards from the image bottom; without the height the
landmarks cannot be placed on the image).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ._convert import points_to_layer
from .colours import LANDMARK_COLOR_CYCLE, landmark_colormap

__all__ = ["get_reader", "read_pts_layers", "read_tps_layers", "read_dataset_layers",
           "LANDMARK_COLOR_CYCLE", "points_layer_kwargs"]

LANDMARK_SUFFIXES = (".pts", ".tps")



# -- probing (must never raise) --------------------------------------------------------


def get_reader(path):
    """npe2 reader hook: a reader function for `path`, or ``None`` if we do not take it."""
    try:
        if isinstance(path, (list, tuple)):
            if not path:
                return None
            readers = [get_reader(p) for p in path]
            if any(r is None for r in readers):
                return None
            return lambda _paths: [layer for r, p in zip(readers, path) for layer in r(p)]
        p = Path(os.fspath(path))
        if p.is_dir():
            return read_dataset_layers if _looks_like_dataset(p) else None
        suffix = p.suffix.lower()
        if suffix in LANDMARK_SUFFIXES and p.is_file() and os.access(p, os.R_OK):
            return read_pts_layers if suffix == ".pts" else read_tps_layers
    except (OSError, TypeError, ValueError):
        return None
    return None


def _image_suffixes() -> tuple[str, ...]:
    from napari_gsm.io import IMAGE_SUFFIXES

    return tuple(s.lower() for s in IMAGE_SUFFIXES)


def _looks_like_dataset(folder: Path) -> bool:
    """True if `folder` holds at least one image with a same-stem ``.pts`` (no parsing)."""
    suffixes = _image_suffixes()
    names = {e.name for e in os.scandir(folder) if e.is_file()}
    stems_with_pts = {Path(n).stem for n in names if n.lower().endswith(".pts")}
    return any(Path(n).suffix.lower() in suffixes and Path(n).stem in stems_with_pts
               for n in names)


# -- layer construction -----------------------------------------------------------------


def _landmark_names(folder: Path, v: int) -> list[str]:
    """Names from the ``landmarks.txt`` sidecar in `folder`, else ``"1".."v"``."""
    from napari_gsm.io import NAMES_FILE, read_names

    sidecar = folder / NAMES_FILE
    default = [str(i + 1) for i in range(v)]
    if not sidecar.is_file():
        return default
    names = list(read_names(sidecar))
    if len(names) != v:
        warnings.warn(f"{sidecar}: {len(names)} names for {v} landmarks; using numbers "
                      "for the landmarks without a name", stacklevel=3)
        names = (names + default[len(names):])[:v]
    return names


def points_layer_kwargs(points_xy, *, name: str, names: list[str] | None = None,
                        image_shape: tuple[int, ...] | None = None,
                        metadata: dict | None = None) -> tuple:
    """A napari layer-data tuple ``(data_rc, kwargs, "points")`` for core landmarks."""
    data = points_to_layer(points_xy)
    v = len(data)
    names = [str(i + 1) for i in range(v)] if names is None else list(names)
    meta = {"landmark_names": names}
    size = 10.0
    if image_shape is not None:
        h, w = int(image_shape[0]), int(image_shape[1])
        meta.update(image_height=h, image_shape=(h, w))
        size = max(3.0, round(0.012 * max(h, w), 1))
    meta.update(metadata or {})
    kwargs = {
        "name": name,
        "features": {"landmark": np.arange(v, dtype=int), "name": np.asarray(names, dtype=object)},
        "face_color": {
            "color_properties": "landmark",
            "categorical_colormap": landmark_colormap(v),
            "color_mode": "cycle",
        },
        "border_color": "black",
        "border_width": 0.1,
        "size": size,
        "text": {"string": "{name}", "visible": False, "color": "white", "size": 8,
                 "anchor": "upper_left"},
        "metadata": meta,
    }
    return data, kwargs, "points"


def _image_layer(image: np.ndarray, name: str, metadata: dict | None = None, **extra) -> tuple:
    rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    kwargs = {"name": name, "rgb": rgb, "metadata": dict(metadata or {})}
    kwargs.update(extra)
    return image, kwargs, "image"


def _image_beside(landmark_file: Path) -> Path | None:
    for suffix in _image_suffixes():
        for candidate in (landmark_file.with_suffix(suffix), landmark_file.with_suffix(suffix.upper())):
            if candidate.is_file():
                return candidate
    return None


def _item_layers(points_xy, image_path: Path | None, *, source: Path, name: str,
                 names: list[str], metadata: dict | None = None) -> list[tuple]:
    from napari_gsm.io import read_image

    from .context_menu import add_layer_context_items

    add_layer_context_items()  # the plugin is in use: offer its right-click actions

    layers = []
    shape = None
    if image_path is not None:
        image = read_image(image_path)
        shape = image.shape[:2]
        layers.append(_image_layer(image, image_path.name,
                                   {"napari_gsm_source": str(image_path), **(metadata or {})}))
    pmeta = {"napari_gsm_source": str(source), **(metadata or {})}
    if image_path is not None:
        pmeta["image_path"] = str(image_path)
    layers.append(points_layer_kwargs(points_xy, name=name, names=names, image_shape=shape,
                                      metadata=pmeta))
    return layers


# -- reader functions (called by napari; they raise on malformed files) ---------------


def read_pts_layers(path) -> list[tuple]:
    """Layers for one ``.pts`` file (plus its same-stem image, when there is one)."""
    from napari_gsm.io import read_pts

    path = Path(os.fspath(path[0] if isinstance(path, (list, tuple)) else path))
    points = read_pts(path)
    return _item_layers(points, _image_beside(path), source=path, name=path.stem,
                        names=_landmark_names(path.parent, len(points)))


def read_tps_layers(path) -> list[tuple]:
    """Layers for a ``.tps`` file: one Points layer (and image, if found) per specimen."""
    from napari_gsm.io import read_image, read_tps

    path = Path(os.fspath(path[0] if isinstance(path, (list, tuple)) else path))
    specimens = read_tps(path)
    layers: list[tuple] = []
    for k, spec in enumerate(specimens):
        label = str(spec.id) if spec.id not in (None, "") else (
            Path(spec.image).stem if spec.image else f"{path.stem}[{k}]")
        visible = k == 0
        image_path = None
        if spec.image:
            candidate = Path(spec.image)
            if not candidate.is_absolute():
                candidate = path.parent / candidate
            image_path = candidate if candidate.is_file() else None
        meta = {"napari_gsm_source": str(path), "napari_gsm_tps_index": k}
        if spec.image:
            meta["tps_image"] = str(spec.image)
        if getattr(spec, "scale", None) is not None:
            meta["tps_scale"] = float(spec.scale)
        shape = None
        if image_path is not None:
            image = read_image(image_path)
            shape = image.shape[:2]
            meta["image_path"] = str(image_path)
            layers.append(_image_layer(image, image_path.name, {"napari_gsm_source": str(image_path)},
                                       visible=visible))
        elif getattr(spec, "image_height", None) is not None:
            meta["image_height"] = int(spec.image_height)
        pts = points_layer_kwargs(spec.points, name=label,
                                  names=_landmark_names(path.parent, len(spec.points)),
                                  image_shape=shape, metadata=meta)
        pts[1]["visible"] = visible
        layers.append(pts)
    return layers


def read_dataset_layers(path) -> list[tuple]:
    """Layers for a dataset folder: its first annotated image and that image's points."""
    from napari_gsm.io import LandmarkFileError, load_dataset

    folder = Path(os.fspath(path[0] if isinstance(path, (list, tuple)) else path))
    dataset = load_dataset(folder)
    annotated = list(dataset.annotated)
    if not annotated:
        raise LandmarkFileError(folder, "no image in this folder has a same-stem .pts file")
    item = annotated[0]
    names = list(dataset.landmark_names) if dataset.landmark_names else None
    points = np.asarray(item.points, dtype=float)
    if names is None or len(names) != len(points):
        names = _landmark_names(Path(dataset.root), len(points))
    meta = {"napari_gsm_dataset": str(dataset.root), "napari_gsm_stem": item.stem}
    return _item_layers(points, Path(item.image_path), source=Path(item.pts_path),
                        name=item.stem, names=names, metadata=meta)
