"""Sample data for napari (File > Open Sample > napari-gsm) and a locator for the folder.

The annotated sample lives in ``sample_data/`` at the repository root; the package holds a
symlink ``napari_gsm/sample_data`` to it, which setuptools turns into a real folder in the
wheel. :func:`sample_data_dir` therefore finds it in a checkout/editable install and in an
installed wheel alike. Sources and licences: ``sample_data/README.md``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["sample_data_dir", "sample_face", "sample_wing", "first_item_pts"]


def sample_data_dir() -> Path:
    """The ``sample_data`` folder (with ``faces/`` and ``wings/``)."""
    package = Path(__file__).resolve().parent.parent  # .../napari_gsm
    for candidate in (package / "sample_data", package.parent.parent / "sample_data"):
        if (candidate / "faces").is_dir():
            return candidate
    raise FileNotFoundError(f"napari-gsm sample data not found next to {package}")


def first_item_pts(subset: str) -> Path:
    """The ``.pts`` of the first (by name) annotated image in ``sample_data/<subset>``."""
    folder = sample_data_dir() / subset
    pts = sorted(folder.glob("*.pts"))
    if not pts:
        raise FileNotFoundError(f"no .pts files in {folder}")
    return pts[0]


def _sample(subset: str) -> list[tuple]:
    from .reader import read_pts_layers

    return read_pts_layers(first_item_pts(subset))


def sample_face() -> list[tuple]:
    """The first sample face (300-W, 68 landmarks): an Image and a Points layer."""
    return _sample("faces")


def sample_wing() -> list[tuple]:
    """The first sample *Drosophila* wing (12 landmarks): an Image and a Points layer."""
    return _sample("wings")
