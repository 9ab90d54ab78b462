"""One BLAS thread for the small linear systems of fitting.

A fit's matrices are at most a few hundred wide: a threaded BLAS gains nothing on them and,
when anything else runs on the same cores (a second fit, the napari window, another job),
its spinning threads cost a lot (measured: a GSM 2D+3D fit beside the napari event loop took
1.9 s with the default threads and 45 ms with one).
"""

from __future__ import annotations

import functools

__all__ = ["single_blas_thread"]


@functools.lru_cache(maxsize=1)
def _controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # inspects the loaded libraries once


def single_blas_thread():
    """A context manager in which BLAS (OpenBLAS, MKL, ...) uses one thread."""
    return _controller().limit(limits=1, user_api="blas")
