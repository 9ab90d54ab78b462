"""Shared pytest fixtures for napari-gsm.

napari's own pytest plugin (``make_napari_viewer``) is registered by napari itself; tests
that render Image layers use ``make_napari_viewer(show=True)`` under Xvfb (``bash test.sh``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO_ROOT / "sample_data"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a minute")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def sample_data_root() -> Path:
    """The repository's ``sample_data/`` (read-only: copy before writing)."""
    return SAMPLE_DATA


@pytest.fixture
def faces_copy(tmp_path) -> Path:
    """A writable copy of ``sample_data/faces`` (12 images + .pts + landmarks.txt)."""
    dest = tmp_path / "faces"
    shutil.copytree(SAMPLE_DATA / "faces", dest)
    return dest


@pytest.fixture
def wings_copy(tmp_path) -> Path:
    """A writable copy of ``sample_data/wings`` (10 images + .pts + landmarks.txt)."""
    dest = tmp_path / "wings"
    shutil.copytree(SAMPLE_DATA / "wings", dest)
    return dest
