"""300-W / iBUG ``.pts`` landmark files.

The format::

    version: 1
    n_points: 68
    {
    97.056692 144.579738
    ...
    }

File coordinates are ``x y`` and **1-based** (the centre of the top-left pixel is
``1 1``); in memory they are 0-based ``(x, y)``, so reading subtracts 1 and writing adds
1. This module is the only place that conversion happens.

Exact round trip: ``read_pts(write_pts(p))`` returns `p` bit for bit. Writing the float
``x + 1`` would lose the low bits of small `x`, so each number is written as the
shortest decimal ``t`` whose *exact* value satisfies ``float(t - 1) == x``, and reading
subtracts exactly (rational arithmetic) before rounding once.
"""

from __future__ import annotations

import os
import re
from decimal import ROUND_HALF_EVEN, Context, Decimal, Inexact, InvalidOperation, Overflow, localcontext
from fractions import Fraction

import numpy as np

from .atomic import atomic_write_text
from .errors import LandmarkFileError

__all__ = ["read_pts", "write_pts", "format_pts", "parse_pts", "MAX_LANDMARK_FILE_BYTES"]

#: Landmark files larger than this are refused before being read (a real .pts is a few kB).
MAX_LANDMARK_FILE_BYTES = 10 * 1024 * 1024

# Plain decimals only: float() would also take "1_000", "infinity" or Arabic-Indic
# digits, which no landmark tool writes. The exponent is bounded so exact rational
# arithmetic on a hostile file stays cheap.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")
_MAX_TOKEN_CHARS = 2000
_NONFINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


# -- exact decimal <-> float with an offset ------------------------------------------
# A file value t and an in-memory value v are related by t = a + s*v (s = +1 or -1),
# i.e. v = s*(t - a): a = 1, s = +1 for .pts; a = height, s = -1 for TPS y.


def _check_number(token: str) -> str | None:
    """Return None when `token` is an acceptable number, else the reason why not."""
    shown = token if len(token) <= 40 else token[:37] + "..."
    if len(token) > _MAX_TOKEN_CHARS:
        return f"number too long ({len(token)} characters)"
    if _NONFINITE.fullmatch(token):
        return f"non-finite value {shown!r}"
    if not _NUMBER.fullmatch(token):
        return f"not a number: {shown!r}"
    if not np.isfinite(float(token)):
        return f"non-finite value {shown!r} (overflows a float)"
    return None


# Enough digits that subtracting within the accepted token range (|t| < 1e309, at most
# _MAX_TOKEN_CHARS digits, exponent >= -9999) is exact; Inexact is trapped to prove it.
_EXACT = Context(prec=13000, Emax=99999, Emin=-99999, traps=[Inexact, Overflow, InvalidOperation])


def _decode_shifted(token: str, offset: int = 0, sign: int = 1) -> float:
    """Exact ``sign * (token - offset)`` rounded once to float; `token` already checked."""
    if offset == 0 and sign == 1:
        return float(token)  # correctly rounded already
    # Decimal, not Fraction: same exactness, about 6x faster on 300-W sized datasets.
    diff = _EXACT.subtract(Decimal(token), offset)
    return float(diff if sign == 1 else _EXACT.minus(diff))


def _encode_shifted(value: float, offset: int = 0, sign: int = 1) -> str:
    """Shortest decimal ``t`` with ``_decode_shifted(t, offset, sign) == value``."""
    value = float(value)
    if offset == 0 and sign == 1:
        return repr(value)  # repr is the shortest round-tripping decimal
    exact = Fraction(offset) + sign * Fraction(value)
    guess = repr(float(exact))
    if _decode_shifted(guess, offset, sign) == value:
        return guess
    # Rare (|value| tiny next to offset): search fixed-point decimals of increasing
    # length. The exact dyadic value has a finite decimal expansion, so this ends.
    with localcontext() as ctx:
        ctx.prec = 4000
        dec = Decimal(offset) + sign * Decimal(value)  # exact at this precision
        places = max(0, -dec.as_tuple().exponent)
        for k in range(1, places + 1):
            text = format(dec.quantize(Decimal(1).scaleb(-k), rounding=ROUND_HALF_EVEN), "f")
            if _decode_shifted(text, offset, sign) == value:
                return text
        return format(dec, "f")


# -- parsing -------------------------------------------------------------------------


def _decode_file_bytes(data: bytes, path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise LandmarkFileError(path, f"not UTF-8 text (byte 0x{data[e.start]:02x})", line) from None


def _read_small_text(path) -> str:
    """Read a landmark text file, refusing huge files before reading them."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise LandmarkFileError(path, "no such file") from None
    except OSError as e:
        raise LandmarkFileError(path, f"cannot read: {e.strerror or e}") from None
    if size > MAX_LANDMARK_FILE_BYTES:
        raise LandmarkFileError(
            path, f"file too large ({size} bytes; landmark files are limited to {MAX_LANDMARK_FILE_BYTES})"
        )
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_LANDMARK_FILE_BYTES + 1)  # bound even if it grew meanwhile
    except IsADirectoryError:
        raise LandmarkFileError(path, "is a folder, not a file") from None
    except OSError as e:
        raise LandmarkFileError(path, f"cannot read: {e.strerror or e}") from None
    if len(data) > MAX_LANDMARK_FILE_BYTES:
        raise LandmarkFileError(path, "file too large")
    return _decode_file_bytes(data, path)


def _last_line(lines) -> int:
    """1-based number of the last non-blank line: where an "ends early" error points."""
    for k in range(len(lines) - 1, -1, -1):
        if lines[k].strip():
            return k + 1
    return max(len(lines), 1)


def _split_lines(text: str) -> list[str]:
    # Accept CRLF (Windows) and lone CR (classic Mac); a BOM left in a str is dropped.
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


_HEADER = re.compile(r"([A-Za-z_]+)\s*:\s*(.*)")


def _header_value(lines, i, key, path) -> tuple[str, int]:
    """Find the next non-blank line at or after `i`, require ``key: value``."""
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i >= len(lines):
        raise LandmarkFileError(path, f"missing '{key}:' header line", _last_line(lines))
    m = _HEADER.fullmatch(lines[i].strip())
    if not m or m.group(1).lower() != key:
        raise LandmarkFileError(path, f"expected '{key}: ...' header, got {lines[i].strip()[:60]!r}", i + 1)
    return m.group(2).strip(), i


def _validate_missing(missing):
    if missing not in (None, "negative"):
        raise ValueError(f"missing must be None or 'negative', not {missing!r}")


def parse_pts(text: str, path="<string>", *, missing=None) -> np.ndarray:
    """Parse the text of a 300-W ``.pts`` file.

    Parameters
    ----------
    text : str
        File content. CRLF line endings, a leading BOM, blank lines and extra spaces
        or tabs around values are tolerated.
    path : str or os.PathLike, optional
        Name used in error messages.
    missing : {None, 'negative'}, optional
        With ``'negative'``, file rows that are exactly ``-1 -1`` are missing landmarks
        and become NaN rows. By default every row is a point and no NaN is produced.

    Returns
    -------
    points : (v, 2) ndarray of float64
        0-based ``(x, y)`` coordinates.

    Raises
    ------
    LandmarkFileError
        For any malformed content; the message names `path` and the line.
    """
    _validate_missing(missing)
    lines = _split_lines(text)
    if not any(line.strip() for line in lines):
        raise LandmarkFileError(path, "empty file")

    version, i = _header_value(lines, 0, "version", path)
    if version != "1":
        raise LandmarkFileError(path, f"unsupported version {version!r} (only 'version: 1' is known)", i + 1)
    count, i = _header_value(lines, i + 1, "n_points", path)
    if not re.fullmatch(r"[0-9]{1,9}", count) or int(count) < 1:
        raise LandmarkFileError(path, f"n_points must be a positive integer, got {count!r}", i + 1)
    n = int(count)

    i += 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i >= len(lines) or lines[i].strip() != "{":
        got = "end of file" if i >= len(lines) else repr(lines[i].strip()[:60])
        raise LandmarkFileError(path, f"expected '{{' to open the point list, got {got}", min(i + 1, _last_line(lines)))

    rows: list[tuple[float, float]] = []
    i += 1
    while True:
        if i >= len(lines):
            raise LandmarkFileError(
                path, f"missing closing '}}' (read {len(rows)} of {n} points)", _last_line(lines)
            )
        stripped = lines[i].strip()
        if stripped == "}":
            if len(rows) != n:
                raise LandmarkFileError(
                    path, f"n_points is {n} but the file lists {len(rows)} point lines", i + 1
                )
            break
        if stripped:
            if len(rows) == n:
                raise LandmarkFileError(
                    path, f"more point lines than n_points ({n}), or missing closing '}}'", i + 1
                )
            tokens = stripped.split()
            if len(tokens) != 2:
                raise LandmarkFileError(
                    path, f"expected two numbers 'x y', got {len(tokens)} values: {stripped[:60]!r}", i + 1
                )
            for tok in tokens:
                why = _check_number(tok)
                if why:
                    raise LandmarkFileError(path, why, i + 1)
            if missing == "negative" and all(float(t) == -1.0 for t in tokens):
                rows.append((np.nan, np.nan))
            else:
                rows.append((_decode_shifted(tokens[0], 1, 1), _decode_shifted(tokens[1], 1, 1)))
        i += 1

    for j in range(i + 1, len(lines)):
        if lines[j].strip():
            raise LandmarkFileError(path, f"unexpected text after '}}': {lines[j].strip()[:60]!r}", j + 1)
    return np.array(rows, dtype=np.float64).reshape(n, 2)


def read_pts(path, *, missing=None) -> np.ndarray:
    """Read a 300-W ``.pts`` landmark file.

    Parameters
    ----------
    path : str or os.PathLike
    missing : {None, 'negative'}, optional
        See :func:`parse_pts`.

    Returns
    -------
    points : (v, 2) ndarray of float64
        0-based ``(x, y)``; the centre of the top-left pixel is ``(0, 0)``.

    Raises
    ------
    LandmarkFileError
        If the file is missing, larger than 10 MB, not UTF-8 or malformed.
    """
    return parse_pts(_read_small_text(path), path, missing=missing)


def format_pts(points, *, missing=None) -> str:
    """Return the ``.pts`` text for `points`.

    Parameters
    ----------
    points : (v, 2) array_like
        0-based ``(x, y)``, ``v >= 1``; written 1-based.
    missing : {None, 'negative'}, optional
        The format has no missing-landmark marker. By default a NaN row is an error;
        with ``'negative'`` it is written as ``-1 -1`` (read back as NaN by
        ``read_pts(..., missing='negative')``).

    Returns
    -------
    str
        Text with ``\\n`` line endings and a final newline.

    Raises
    ------
    ValueError
        For a wrong shape, infinite values, NaN without ``missing='negative'``, or a
        point at ``(-2, -2)`` that ``'negative'`` could not tell from a missing one.
    """
    _validate_missing(missing)
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 1:
        raise ValueError(f"points must have shape (v, 2) with v >= 1, got {pts.shape}")
    if np.isinf(pts).any():
        raise ValueError("points contain infinite values")
    nan_rows = np.isnan(pts).any(axis=1)
    if nan_rows.any() and missing != "negative":
        raise ValueError(
            f"points {np.flatnonzero(nan_rows).tolist()} are missing (NaN); the .pts format cannot "
            "store them. Pass missing='negative' to write them as '-1 -1'."
        )
    lines = ["version: 1", f"n_points: {len(pts)}", "{"]
    for k, (x, y) in enumerate(pts):
        if nan_rows[k]:
            lines.append("-1 -1")
            continue
        if missing == "negative" and x == -2.0 and y == -2.0:
            raise ValueError(f"point {k} at (-2, -2) would be written as '-1 -1', the missing marker")
        lines.append(f"{_encode_shifted(x, 1, 1)} {_encode_shifted(y, 1, 1)}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_pts(path, points, *, backup: bool = True, missing=None):
    """Write `points` to a 300-W ``.pts`` file atomically.

    Parameters
    ----------
    path : str or os.PathLike
    points : (v, 2) array_like
        0-based ``(x, y)``.
    backup : bool, optional
        Keep an existing file as ``name.~N~`` (see :func:`atomic_write_text`).
    missing : {None, 'negative'}, optional
        See :func:`format_pts`.

    Returns
    -------
    pathlib.Path
    """
    return atomic_write_text(path, format_pts(points, missing=missing), backup=backup)
