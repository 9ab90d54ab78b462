"""One background thread for the annotation widget's model work, in submission order.

Fits, re-fits and incremental model updates all read or change the one model the widget
holds, so they run one after the other on a single worker thread (never two at once, and an
update submitted before a fit is in the model that fit uses), while the window stays
responsive (with one BLAS thread: see :mod:`napari_gsm._threads`). Each job's outcome comes back on the Qt main thread through a queued signal, to
the callbacks given with the job.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from qtpy.QtCore import QObject, Signal

from .._threads import one_blas_thread

__all__ = ["JobRunner"]


class JobRunner(QObject):
    """Runs callables on one worker thread; delivers results on the main thread.

    Attributes
    ----------
    pending : int
        Jobs submitted whose outcome has not been delivered yet.
    """

    #: Emitted from the worker thread, received on the main thread (queued connection).
    _finished = Signal(object, object, object)
    #: ``busy(bool)`` when the runner goes from idle to busy and back.
    busy = Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-gsm-job")
        self._finished.connect(self._deliver)
        self.pending = 0

    @property
    def idle(self):
        return self.pending == 0

    def submit(self, job, on_result=None, on_error=None):
        """Run ``job()`` in the background.

        ``on_result(value)`` or ``on_error(exception)`` is then called on the main thread;
        an error without ``on_error`` is re-raised there.
        """
        self.pending += 1
        if self.pending == 1:
            self.busy.emit(True)

        def run():
            try:
                with one_blas_thread():  # BLAS threads would fight the UI for the cores
                    value, error = job(), None
            except Exception as exc:  # delivered to on_error on the main thread
                value, error = None, exc
            self._finished.emit((on_result, on_error), value, error)

        self._pool.submit(run)

    def _deliver(self, callbacks, value, error):
        on_result, on_error = callbacks
        self.pending -= 1
        try:
            if error is not None:
                if on_error is None:
                    raise error
                on_error(error)
            elif on_result is not None:
                on_result(value)
        finally:
            if self.pending == 0:
                self.busy.emit(False)

    def shutdown(self):
        """Stop taking jobs; a running one finishes in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)
