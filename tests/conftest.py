"""Shared pytest fixtures for napari-gsm.

napari's own pytest plugin (``make_napari_viewer``) is registered by napari itself; tests
that render Image layers use ``make_napari_viewer(show=True)`` under Xvfb (``bash test.sh``).
"""

from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager
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


@contextmanager
def _local_cluster():
    """A Dask client of a LocalCluster with 2 worker processes x 1 thread; a task fails
    once 2 workers died running it (instead of Dask's 4), to keep the tests short."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        lc = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=":0", silence_logs=logging.ERROR)
        client = Client(lc)
    try:
        yield client
    finally:
        client.close()
        lc.close()


@pytest.fixture(scope="session")
def cluster():
    """The cluster the distributed tests share (:func:`_local_cluster`); tests that kill
    workers use :func:`fresh_cluster` instead."""
    with _local_cluster() as client:
        yield client


@pytest.fixture
def fresh_cluster():
    """A cluster of this test's own, for a test that kills workers: a nanny may give up
    restarting a worker killed again and again (seen in CI: the shared cluster was left
    with one worker and the next tests waited for the second)."""
    with _local_cluster() as client:
        yield client
