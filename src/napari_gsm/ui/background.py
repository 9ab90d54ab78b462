"""Long work off the UI thread, with progress and Cancel: training, and fitting many frames.

Both docks (the folder project and the layers) train and fit through these, so a Cancel and
a progress bar mean the same everywhere. Fitting runs with one BLAS thread
(:mod:`napari_gsm._threads`): threaded BLAS on these small systems only fights the UI for the
cores.
"""

from __future__ import annotations

import threading

from qtpy.QtCore import QObject, Signal

from .._threads import one_blas_thread

__all__ = ["ProgressRun", "Cancelled", "start_frames"]


class Cancelled(Exception):
    """Raised from a progress callback to stop the work."""


class _Bridge(QObject):
    # Emitted from the worker thread; Qt queues it to the receiver's (main) thread.
    progress = Signal(int, int, str)


class ProgressRun:
    """Run ``work(progress)`` in a thread (training, tracking); ``progress(done, total,
    what)`` raises :class:`Cancelled` after :meth:`cancel`.

    Parameters
    ----------
    work : callable
        ``work(progress) -> result``.
    on_progress : callable
        ``(done, total, what)``, on the UI thread.
    on_done : callable
        ``(result)``, on the UI thread; ``result`` is None when cancelled.
    on_error : callable
        ``(exception)``, on the UI thread.
    on_finished : callable
        ``()``, on the UI thread, after ``on_done`` or ``on_error``.
    blas_threads : {None, 1}
        1 for fitting (see the module's note); None leaves BLAS as it is (training's large
        filter solves use the threads).
    """

    def __init__(self, work, *, on_progress, on_done, on_error, on_finished, blas_threads=None):
        from napari.qt.threading import create_worker

        self._cancel = threading.Event()
        self._bridge = _Bridge()
        self._bridge.progress.connect(on_progress)
        bridge, cancel = self._bridge, self._cancel

        def job():
            def progress(done, total, what):
                if cancel.is_set():
                    raise Cancelled
                bridge.progress.emit(int(done), int(total), str(what))

            try:
                if blas_threads == 1:
                    with one_blas_thread():
                        return work(progress)
                return work(progress)
            except Cancelled:
                return None

        self.worker = create_worker(job)
        self.worker.returned.connect(on_done)
        self.worker.errored.connect(on_error)
        self.worker.finished.connect(on_finished)
        self.worker.start()

    def cancel(self):
        self._cancel.set()


def start_frames(items, fit_one, *, on_result, on_finished, on_error=None):
    """Fit ``items`` one by one in a thread: ``fit_one(item)`` for each.

    ``on_result((item, value, problem, done, total))`` is called on the UI thread after each
    item: ``value`` is what ``fit_one`` returned, or None with ``problem`` the message of a
    ``ValueError``/``OSError`` it raised (the other items go on). ``worker.quit()`` stops
    after the current item. Returns the worker.
    """
    from napari.qt.threading import create_worker

    items = list(items)

    def job():
        with one_blas_thread():
            for n, item in enumerate(items):
                try:
                    value, problem = fit_one(item), None
                except (ValueError, LookupError, OSError) as exc:
                    value, problem = None, str(exc)
                yield item, value, problem, n + 1, len(items)

    worker = create_worker(job)
    worker.yielded.connect(on_result)
    worker.finished.connect(on_finished)
    if on_error is not None:
        worker.errored.connect(on_error)
    worker.start()
    return worker
