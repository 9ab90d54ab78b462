"""What every command shares on the way out: the user-error type, output folders, the JSON
printer."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

PROG = "napari-gsm"


class CLIError(Exception):
    """A user-caused problem, reported as one line ``napari-gsm: error: ...`` and exit
    status 2; the message names the file (or option) and what is wrong."""


def output_folder(path):
    """``path`` made a folder (with its parents) for the outputs."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CLIError(f"{path}: exists and is not a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def warn(message):
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def percent(fraction):
    """A normalised error or a rate as the percentage people read (NaN stays NaN)."""
    return 100.0 * float(fraction)


def jsonable(obj):
    """``obj`` with numpy scalars/arrays made plain and NaN/inf turned into None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def print_json(doc):
    """Print one JSON document on stdout (progress and warnings go to stderr)."""
    json.dump(jsonable(doc), sys.stdout, indent=1, allow_nan=False)
    sys.stdout.write("\n")
