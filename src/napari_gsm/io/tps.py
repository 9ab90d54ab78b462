"""TPS landmark files (tpsDig / tpsUtil, read by geomorph, Momocs, MorphoJ).

A file holds one block per specimen::

    LM=3
    12.5 200
    40 180.25
    -1 -1
    IMAGE=wing01.jpg
    ID=0
    SCALE=0.0123

Conventions (documented because tools differ):

* **Axes.** tpsDig measures y upwards from the bottom of the image. With ``H`` the image
  height in pixels, the file holds ``x_tps = x`` and ``y_tps = H - y`` where ``(x, y)``
  are this project's 0-based, y-down coordinates. This is the flip used by tools that
  convert tpsDig files for image-based fitting (e.g. ``y = height - y`` in ml-morph); it
  maps the image's top edge row to ``y_tps = H`` and the bottom of the last row to 0.
* **Units.** Coordinates stay in pixels; ``SCALE=`` (units per pixel) is carried along
  in :class:`TpsSpecimen` but never applied.
* **Missing landmarks.** A row with a negative coordinate is missing (geomorph's
  ``negNA`` rule) and reads as a NaN row; missing rows are written as ``-1 -1``. A real
  point that would need a negative file coordinate (``x < 0`` or ``y > H``) cannot be
  stored and is refused when writing.
* **Round trip.** ``y_tps`` is written as the shortest decimal whose exact value flips
  back to the same float, so ``read_tps(write_tps(s))`` is exact bit for bit.
* ``CURVES=``/``POINTS=`` outline blocks are skipped; other ``KEY=value`` lines
  (``COMMENT=``, ...) are ignored. 3D files (``LM3=``) are refused.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

import numpy as np

from .atomic import atomic_write_text
from .errors import ImageFileError, LandmarkFileError
from .pts import _check_number, _decode_shifted, _encode_shifted, _last_line, _read_small_text, _split_lines

__all__ = ["TpsSpecimen", "read_tps", "write_tps", "parse_tps", "format_tps"]

#: What a missing landmark is written as (any negative coordinate reads as missing).
TPS_MISSING = "-1 -1"

_KEY = re.compile(r"([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*)")


@dataclass
class TpsSpecimen:
    """One specimen of a TPS file.

    Attributes
    ----------
    points : (v, 2) ndarray of float64
        0-based ``(x, y)`` image coordinates, y down; NaN rows are missing landmarks.
    image : str or None
        ``IMAGE=`` value, a file name relative to the ``.tps`` file's folder.
    id : str or None
        ``ID=`` value.
    scale : float or None
        ``SCALE=`` value (units per pixel); None when absent or empty.
    image_height : int or None
        Height in pixels used for the y flip.
    """

    points: np.ndarray
    image: str | None = None
    id: str | None = None
    scale: float | None = None
    image_height: int | None = None


@dataclass
class _RawSpecimen:
    tokens: list = field(default_factory=list)  # (x_token, y_token, line) or None if missing
    lm_line: int = 0
    image: str | None = None
    id: str | None = None
    scale: float | None = None


def _positive_int(value) -> int:
    if isinstance(value, bool):
        raise TypeError("image height must be an int, not bool")
    h = operator.index(value)
    if h < 1:
        raise ValueError(f"image height must be positive, got {h}")
    return h


def _parse_records(text: str, path) -> list[_RawSpecimen]:
    lines = _split_lines(text)
    specimens: list[_RawSpecimen] = []
    cur: _RawSpecimen | None = None
    pending = 0  # landmark lines still expected for `cur`
    skipping = 0  # curve point lines still expected (read, checked, discarded)
    curves_left = 0  # POINTS= blocks still expected after CURVES=
    seen: set[str] = set()

    for i, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        m = _KEY.fullmatch(line)
        if m is None:
            # A coordinate line.
            if pending == 0 and skipping == 0:
                raise LandmarkFileError(path, f"unexpected line {line[:60]!r} (no LM= or POINTS= block open)", i)
            tokens = line.split()
            if len(tokens) != 2:
                raise LandmarkFileError(
                    path, f"expected two numbers 'x y', got {len(tokens)} values: {line[:60]!r}", i
                )
            for tok in tokens:
                why = _check_number(tok)
                if why:
                    raise LandmarkFileError(path, why, i)
            if pending:
                missing = float(tokens[0]) < 0 or float(tokens[1]) < 0
                cur.tokens.append(None if missing else (tokens[0], tokens[1], i))
                pending -= 1
            else:
                skipping -= 1
            continue

        key, value = m.group(1).upper(), m.group(2).strip()
        if pending or skipping:
            what = "landmark" if pending else "curve point"
            raise LandmarkFileError(path, f"expected {pending or skipping} more {what} line(s) before {key}=", i)
        if key == "LM":
            if curves_left:
                raise LandmarkFileError(path, f"CURVES= announced {curves_left} more POINTS= block(s)", i)
            if not re.fullmatch(r"[0-9]{1,7}", value):
                raise LandmarkFileError(path, f"LM= must be a non-negative integer, got {value!r}", i)
            cur = _RawSpecimen(lm_line=i)
            specimens.append(cur)
            pending = int(value)
            seen = set()
            continue
        if key == "LM3":
            raise LandmarkFileError(path, "3D landmarks (LM3=) are not supported", i)
        if cur is None:
            raise LandmarkFileError(path, f"{key}= before the first LM= line", i)
        if key == "CURVES":
            if not re.fullmatch(r"[0-9]{1,7}", value):
                raise LandmarkFileError(path, f"CURVES= must be a non-negative integer, got {value!r}", i)
            curves_left = int(value)
        elif key == "POINTS":
            if not curves_left:
                raise LandmarkFileError(path, "POINTS= without a preceding CURVES=", i)
            if not re.fullmatch(r"[0-9]{1,7}", value):
                raise LandmarkFileError(path, f"POINTS= must be a non-negative integer, got {value!r}", i)
            curves_left -= 1
            skipping = int(value)
        elif key in ("IMAGE", "ID", "SCALE"):
            if key in seen:
                raise LandmarkFileError(path, f"second {key}= line for the specimen starting at line {cur.lm_line}", i)
            seen.add(key)
            if key == "IMAGE":
                cur.image = value or None
            elif key == "ID":
                cur.id = value or None
            elif value:
                why = _check_number(value)
                if why:
                    raise LandmarkFileError(path, f"SCALE= {why}", i)
                cur.scale = float(value)
        # Other keys (COMMENT=, VARIABLES=, ...) carry nothing we use.

    if pending or skipping:
        what = "landmark" if pending else "curve point"
        raise LandmarkFileError(path, f"file ends {pending or skipping} {what} line(s) early", _last_line(lines))
    if curves_left:
        raise LandmarkFileError(path, f"file ends with {curves_left} POINTS= block(s) missing", _last_line(lines))
    if not specimens:
        raise LandmarkFileError(path, "no specimens (no LM= line)" if text.strip() else "empty file")
    return specimens


def _height_from_image(name: str, folder: Path | None, path, line: int) -> int:
    from .images import read_image  # images pull in cv2; only needed on this path

    if folder is None:
        raise LandmarkFileError(
            path, f"the image height is needed to flip y; pass image_height= (IMAGE={name})", line
        )
    candidates = [folder / name, folder / PureWindowsPath(name).name]  # tpsDig may store C:\...\a.jpg
    for candidate in candidates:
        if candidate.is_file():
            try:
                return int(read_image(candidate).shape[0])
            except ImageFileError as e:
                raise LandmarkFileError(path, f"the image height is needed to flip y, but {e}", line) from None
    raise LandmarkFileError(
        path,
        f"the image height is needed to flip y, but IMAGE={name} was not found in {folder}; "
        "pass image_height=",
        line,
    )


def _resolve_height(rec: _RawSpecimen, image_height, folder, path, cache) -> int:
    if image_height is not None:
        try:
            h = image_height(rec.image) if callable(image_height) else image_height
            return _positive_int(h)
        except (LookupError, ValueError, TypeError, OSError) as e:
            raise LandmarkFileError(path, f"no usable image height for IMAGE={rec.image}: {e}", rec.lm_line) from None
    if not rec.image:
        raise LandmarkFileError(
            path, "the image height is needed to flip y, but the specimen has no IMAGE=; pass image_height=", rec.lm_line
        )
    if rec.image not in cache:
        cache[rec.image] = _height_from_image(rec.image, folder, path, rec.lm_line)
    return cache[rec.image]


def parse_tps(
    text: str, path="<string>", *, image_height: int | Callable[[str | None], int] | None = None, folder=None
) -> list[TpsSpecimen]:
    """Parse the text of a TPS file.

    Parameters
    ----------
    text : str
    path : str or os.PathLike, optional
        Name used in error messages.
    image_height : int or callable, optional
        Image height in pixels for the y flip, or a function ``image_name -> height``
        (called with the ``IMAGE=`` value, possibly None).
    folder : str or os.PathLike, optional
        Where ``IMAGE=`` files are looked up to get the height when `image_height` is
        not given.

    Returns
    -------
    list of TpsSpecimen

    Raises
    ------
    LandmarkFileError
        For malformed content, or when a specimen has landmarks and no height can be
        found; the message names `path` and the line.
    """
    folder = None if folder is None else Path(folder)
    cache: dict[str, int] = {}
    out = []
    for rec in _parse_records(text, path):
        pts = np.full((len(rec.tokens), 2), np.nan)
        height = None
        if any(t is not None for t in rec.tokens):
            height = _resolve_height(rec, image_height, folder, path, cache)
        elif image_height is not None and not callable(image_height):
            height = _resolve_height(rec, image_height, folder, path, cache)
        for k, tok in enumerate(rec.tokens):
            if tok is not None:
                pts[k, 0] = _decode_shifted(tok[0])
                pts[k, 1] = _decode_shifted(tok[1], height, -1)
        out.append(TpsSpecimen(points=pts, image=rec.image, id=rec.id, scale=rec.scale, image_height=height))
    return out


def read_tps(path, image_height: int | Callable[[str | None], int] | None = None) -> list[TpsSpecimen]:
    """Read a TPS landmark file.

    Parameters
    ----------
    path : str or os.PathLike
    image_height : int or callable, optional
        Height in pixels used to flip y, or ``image_name -> height``. When omitted, the
        image named by each specimen's ``IMAGE=`` is read from the ``.tps`` file's
        folder to get it.

    Returns
    -------
    list of TpsSpecimen
        Points in 0-based, y-down ``(x, y)`` image coordinates, NaN rows for missing.

    Raises
    ------
    LandmarkFileError
        Malformed file, file over 10 MB, not UTF-8, or no way to get the image height.
    """
    text = _read_small_text(path)
    return parse_tps(text, path, image_height=image_height, folder=Path(path).parent)


def format_tps(specimens, *, image_height: int | Callable[[str | None], int] | None = None) -> str:
    """Return TPS text for `specimens`.

    Parameters
    ----------
    specimens : sequence of TpsSpecimen
    image_height : int or callable, optional
        Used for specimens whose ``image_height`` is None.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        Wrong point shape, infinite values, no height for a specimen with landmarks,
        a point that would need a negative file coordinate, or text fields with line
        breaks.
    """
    lines = []
    for n, spec in enumerate(specimens):
        pts = np.asarray(spec.points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"specimen {n}: points must have shape (v, 2), got {pts.shape}")
        if np.isinf(pts).any():
            raise ValueError(f"specimen {n}: points contain infinite values")
        present = ~np.isnan(pts).any(axis=1)
        height = spec.image_height
        if height is None and image_height is not None:
            height = image_height(spec.image) if callable(image_height) else image_height
        if present.any():
            if height is None:
                raise ValueError(f"specimen {n} ({spec.image}): image_height is needed to flip y")
            height = _positive_int(height)
        lines.append(f"LM={len(pts)}")
        for k, (x, y) in enumerate(pts):
            if not present[k]:
                lines.append(TPS_MISSING)
                continue
            if x < 0 or y > height:
                raise ValueError(
                    f"specimen {n}, point {k} at ({x}, {y}) is outside the image's TPS range "
                    f"(x >= 0, y <= {height}); negative TPS coordinates mean 'missing'"
                )
            lines.append(f"{_encode_shifted(x)} {_encode_shifted(y, height, -1)}")
        for key, value in (("IMAGE", spec.image), ("ID", spec.id)):
            if value is not None:
                value = str(value)
                if "\n" in value or "\r" in value or value != value.strip():
                    raise ValueError(f"specimen {n}: {key} {value!r} has line breaks or edge spaces")
                lines.append(f"{key}={value}")
        if spec.scale is not None:
            scale = float(spec.scale)
            if not np.isfinite(scale):
                raise ValueError(f"specimen {n}: SCALE must be finite")
            lines.append(f"SCALE={scale!r}")
    return "\n".join(lines) + "\n"


def write_tps(
    path, specimens, *, backup: bool = True, image_height: int | Callable[[str | None], int] | None = None
) -> Path:
    """Write specimens to a TPS file atomically.

    Parameters
    ----------
    path : str or os.PathLike
    specimens : sequence of TpsSpecimen
        Each with ``image_height`` set, or give `image_height`.
    backup : bool, optional
        Keep an existing file as ``name.~N~`` (see :func:`atomic_write_text`).
    image_height : int or callable, optional
        Fallback height (or ``image_name -> height``) for specimens without one.

    Returns
    -------
    pathlib.Path
    """
    return atomic_write_text(path, format_tps(specimens, image_height=image_height), backup=backup)
