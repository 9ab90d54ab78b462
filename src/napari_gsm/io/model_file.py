"""Trained-model files: a versioned ``.npz`` of arrays plus JSON metadata.

Never pickle: a model file may come from anyone, and unpickling runs code. Arrays are
loaded with ``allow_pickle=False`` and the metadata is plain JSON stored as UTF-8 bytes
in a ``uint8`` array under ``__meta__``::

    {"format": "napari-gsm-model", "format_version": 1,
     "napari_gsm_version": "0.1.0", "meta": {...caller's metadata...}}
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes
from .errors import ModelFileError

__all__ = ["MODEL_FORMAT", "MODEL_FORMAT_VERSION", "save_model_file", "load_model_file", "read_model_header"]

#: Value of the ``format`` field; tells a model file from any other npz.
MODEL_FORMAT = "napari-gsm-model"
#: Newest format version this code writes and reads. Bump when the layout changes.
MODEL_FORMAT_VERSION = 1
_META_KEY = "__meta__"


def _package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("napari-gsm")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def save_model_file(path, arrays: dict[str, np.ndarray], meta: dict, *, backup: bool = True) -> Path:
    """Save arrays and JSON metadata to a model file atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file (conventionally ``*.npz``; the name is used as given).
    arrays : dict of str to ndarray
        Numeric/bool/string arrays. Keys must not start with ``__`` (reserved).
    meta : dict
        JSON-serialisable metadata (no NaN/inf: strict JSON).
    backup : bool, optional
        Keep an existing file as ``name.~N~``.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        Object arrays, reserved keys, or metadata that is not strict JSON.
    """
    clean = {}
    for key, value in arrays.items():
        if not isinstance(key, str) or not key or key.startswith("__"):
            raise ValueError(f"array key {key!r} is empty, not a string, or reserved ('__' prefix)")
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise ValueError(f"array {key!r} has dtype object; model files never hold pickled objects")
        clean[key] = arr
    header = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "napari_gsm_version": _package_version(),
        "meta": meta,
    }
    try:
        text = json.dumps(header, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta is not JSON-serialisable: {e}") from None
    clean[_META_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    buf = io.BytesIO()  # in memory, so np.savez cannot append ".npz" to the name
    np.savez_compressed(buf, **clean)
    return atomic_write_bytes(path, buf.getvalue(), backup=backup)


#: How every "this file is no model" message starts, whatever the file turned out to be.
_NOT_A_MODEL = "not a napari-gsm model file"


def _open(path):
    # numpy's own messages are left out: they name Python exceptions and advise loading
    # with allow_pickle, which would run code from the file.
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ModelFileError(path, "no such model file") from None
    except IsADirectoryError:
        raise ModelFileError(path, "is a folder, not a model file") from None
    except PermissionError as e:
        raise ModelFileError(path, f"cannot be read ({e.strerror})") from None
    except (zipfile.BadZipFile, EOFError):
        raise ModelFileError(path, f"{_NOT_A_MODEL}, or a damaged one (corrupt or truncated "
                             "archive)") from None
    except (ValueError, OSError):
        # np.load raises ValueError for pickles and unknown content, OSError for the rest.
        raise ModelFileError(path, f"{_NOT_A_MODEL} (not an .npz archive)") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ModelFileError(path, f"{_NOT_A_MODEL} (a single .npy array, not an .npz archive)")
    return npz


def _header(npz, path) -> dict:
    if _META_KEY not in npz.files:
        raise ModelFileError(path, f"{_NOT_A_MODEL} (an .npz archive with no {_META_KEY} "
                             "entry)")
    raw = _member(npz, _META_KEY, path)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelFileError(path, f"{_NOT_A_MODEL} ({_META_KEY} is not UTF-8 JSON bytes)")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(path, f"metadata is not valid JSON: {e}") from None
    if not isinstance(header, dict) or header.get("format") != MODEL_FORMAT:
        got = header.get("format") if isinstance(header, dict) else None
        raise ModelFileError(path, f"{_NOT_A_MODEL} (wrong format {got!r}, expected "
                             f"{MODEL_FORMAT!r})")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(path, f"invalid format_version {version!r}")
    if version > MODEL_FORMAT_VERSION:
        raise ModelFileError(
            path,
            f"format version {version} was written by a newer napari-gsm "
            f"({header.get('napari_gsm_version', '?')}); this one reads up to version "
            f"{MODEL_FORMAT_VERSION}: upgrade napari-gsm",
        )
    if not isinstance(header.get("meta"), dict):
        raise ModelFileError(path, "metadata has no 'meta' object")
    return header


def _member(npz, key, path) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise ModelFileError(path, f"{_NOT_A_MODEL}: its array {key!r} holds Python objects, "
                                 "which model files never do (refused: loading them could run "
                                 "code)") from None
        raise ModelFileError(path, f"array {key!r} is corrupt") from None
    except Exception:  # zlib.error, BadZipFile (CRC), EOFError, OSError: all mean "damaged file"
        raise ModelFileError(path, f"array {key!r} is corrupt or truncated") from None


def read_model_header(path) -> dict:
    """Return the header (``format``, ``format_version``, ``napari_gsm_version``, ``meta``)."""
    with _open(path) as npz:
        return _header(npz, path)


def load_model_file(path) -> tuple[dict[str, np.ndarray], dict]:
    """Load a model file written by :func:`save_model_file`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    arrays : dict of str to ndarray
    meta : dict
        The caller's metadata exactly as saved.

    Raises
    ------
    ModelFileError
        Missing file, not an npz, corrupt/truncated, no or invalid metadata, wrong
        format, a newer format version, or object arrays. The message names the file.
    """
    with _open(path) as npz:
        header = _header(npz, path)
        arrays = {key: _member(npz, key, path) for key in npz.files if key != _META_KEY}
    return arrays, header["meta"]
