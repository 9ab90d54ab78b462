"""Training on a Dask cluster: the runner that sends training's parts to the workers.

:func:`napari_gsm.model.train` (``client=...``) splits the training images into parts and
runs its per-part steps (:mod:`napari_gsm.training`, :mod:`napari_gsm.crossfit`,
:mod:`napari_gsm.methods.cascade_parts`) through a runner; :class:`OnCluster` is the one
for a cluster. Only the images' file names travel to the workers (a part is a slice of a
:class:`~napari_gsm.listing.Listing`; a dataset in memory sends its landmarks too), which
read the pixels and the ``.pts`` files; the parts' sums come back one part at a time and
are added on this side, so this process never holds more than a part's result besides the
model. What a step keeps for the next one (a part's landmarks while the shape and start
models are summed, GSM-CR's virtual samples) stays on the worker as a Dask future; when a
worker dies, Dask computes its lost parts again from their inputs (every step leaves its inputs
unchanged), and after ``distributed.scheduler.allowed-failures`` deaths on one part the
training stops with :class:`~napari_gsm.distributed.ClusterError`.
"""

from __future__ import annotations

import uuid
from concurrent.futures import CancelledError

from ._client import ClusterError

__all__ = ["OnCluster", "PARTS_PER_THREAD"]

#: Parts per worker thread: a few, so a slow part does not leave the other workers idle,
#: and few enough that the parts' sums (the detectors' are large) do not pile up.
PARTS_PER_THREAD = 2


class _Batch(list):
    """The futures of one :meth:`OnCluster.map`, with what its progress reports need."""

    what = None
    total = None
    done = 0
    items = 0
    labels = ()


class OnCluster:
    """Runs training's per-part steps on the workers of a ``distributed.Client``.

    The same interface as :class:`napari_gsm.training.InProcess`; the handles are futures.

    Parameters
    ----------
    client : distributed.Client
    progress : callable ``(done, total, what)``, optional
        Called as parts finish.
    """

    def __init__(self, client, progress=None):
        self.client = client
        self.progress = progress
        self._batch = uuid.uuid4().hex[:8]
        self._n = 0
        self._put = []

    def parts(self, samples):
        """``samples`` in contiguous parts, :data:`PARTS_PER_THREAD` per worker thread."""
        threads = max(sum(self.client.nthreads().values()), 1)
        k = min(len(samples), threads * PARTS_PER_THREAD)
        if k == 0:
            return []
        bounds = [round(i * len(samples) / k) for i in range(k + 1)]
        return [samples[a:b] for a, b in zip(bounds, bounds[1:])]

    def put(self, obj, sums=False):
        """``obj`` for the workers' tasks, sent once to each worker that uses it (a model
        without the detectors' statistics unless ``sums``: fits need the filters only).

        A task that returns ``obj``, not scattered data: Dask cannot recompute scattered
        data, so a worker killed while holding the only copy would end the training; a
        task's result is computed again elsewhere.
        """
        from ..model import Model

        if isinstance(obj, Model):
            obj = obj.for_workers(sums)
        self._n += 1
        future = self.client.submit(_given, obj, key=f"napari-gsm-train-put-{self._batch}-"
                                    f"{self._n}", pure=False)
        self._put.append(future)
        return future

    def close(self):
        """Release what :meth:`put` sent, so a long-lived cluster does not keep it."""
        for future in self._put:
            try:
                future.release()
            except Exception:  # the client or the cluster is already gone
                pass
        self._put = []

    def map(self, func, jobs, what=None, total=None, done=0, items=None):
        """Submit ``func(*job)`` for every job; returns their futures (``items``: how many
        images the jobs cover, for the progress, default: the lengths of their parts)."""
        out = _Batch()
        for job in jobs:
            self._n += 1
            out.append(self.client.submit(
                func, *job, key=f"napari-gsm-train-{func.__name__}-{self._batch}-{self._n}",
                pure=False))
        out.what, out.total, out.done = what, total, done
        out.labels = [_label(job) for job in jobs]
        out.items = items if items is not None else sum(
            len(job[0]) if _is_part(job[0]) else 1 for job in jobs)
        return out

    def results(self, futures):
        """The futures' results in order, each released once it is here.

        Raises
        ------
        ClusterError
            When Dask gave up on a part (its workers kept dying) or the cluster dropped it.
        """
        from distributed.scheduler import KilledWorker

        n = len(futures)
        for i, future in enumerate(futures):
            label = futures.labels[i] if getattr(futures, "labels", None) else "a part"
            try:
                result = future.result()
            except KilledWorker as exc:
                raise ClusterError(
                    f"training stopped: {exc.allowed_failures + 1} workers died while working "
                    f"on {label}; one of its images may need more memory than a worker "
                    "has (the model file was not written)") from None
            except CancelledError:
                raise ClusterError(f"training stopped: the cluster dropped the work on {label} "
                                   "(was the scheduler stopped or restarted?)") from None
            future.release()
            if self.progress is not None and getattr(futures, "what", None) is not None:
                self.progress(futures.done + round(futures.items * (i + 1) / n),
                              futures.total, futures.what)
            yield result


def _given(obj):
    return obj


def _is_part(obj):
    """Whether a job's first argument is a part of the training images (a list of
    samples or a :class:`~napari_gsm.listing.Listing`)."""
    from ..listing import Listing

    return isinstance(obj, (list, Listing))


def _label(job):
    """What a job works on, for an error message: its part's first image, or "a part"."""
    part = job[0] if job else None
    if _is_part(part) and len(part) and hasattr(part[0], "name"):
        more = len(part) - 1
        return f"{part[0].name}" + (f" and {more} other image(s)" if more else "")
    return "a part of the training images"
