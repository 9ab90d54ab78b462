"""One BLAS thread while fitting, whatever the user's environment says.

A fit's linear algebra is small (a ``2v + 4`` Cholesky, a few ``6 x 2025`` products per
landmark): a second BLAS thread never pays for its hand-over, and when other work shares the
cores (several fits side by side, a busy desktop) the threads wait on each other. Measured
on the faces benchmark's images under load: see ``benchmarks/README.md``.

The limit is process-wide (it is BLAS's own setting), so overlapping fits from several
threads (napari's background fitting next to a fit of the current image) share it: the
first one in sets it, the last one out restores what was there before.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

__all__ = ["one_blas_thread"]

_lock = threading.Lock()
_state = {"depth": 0, "libs": None, "restore": None}


def _blas_libraries():
    """threadpoolctl's controllers of the loaded BLAS libraries (numpy's, scipy's, OpenCV's;
    all loaded by the time anything fits), listed once."""
    from threadpoolctl import ThreadpoolController

    return [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]


def _take_control():
    """Let this thread set OpenBLAS's (process-wide) limit.

    threadpoolctl lets only the first thread that set OpenBLAS's limit change it again
    (others are silently ignored), so napari's background fits could not pin it after a fit
    of the current image. Our own lock and count keep the limit consistent instead.
    """
    try:
        from threadpoolctl import OpenBLASController
    except ImportError:  # pragma: no cover - threadpoolctl without that guard
        return
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


def _set(libs, counts):
    _take_control()
    for lib, n in zip(libs, counts):
        if n is not None:
            lib.set_num_threads(n)
    _take_control()


@contextmanager
def one_blas_thread():
    """Context in which every loaded BLAS library runs on one thread."""
    with _lock:
        if _state["depth"] == 0:
            if _state["libs"] is None:
                _state["libs"] = _blas_libraries()
            libs = _state["libs"]
            _state["restore"] = [lib.get_num_threads() for lib in libs]
            _set(libs, [1] * len(libs))
        _state["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                _set(_state["libs"], _state["restore"])
