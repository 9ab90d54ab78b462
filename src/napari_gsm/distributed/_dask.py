"""The parts that need Dask: the model on the workers, and a stream of tasks over a cluster.

Imported only when a client is used, so ``import napari_gsm`` and in-process jobs never
load Dask.
"""

from __future__ import annotations

import os
import time
import uuid
from contextlib import contextmanager
from concurrent.futures import CancelledError

from distributed import WorkerPlugin, as_completed, get_worker
from distributed.scheduler import KilledWorker

from ._client import OPENCV_THREADS_VAR, ClusterError, _reason
from ._fit import fit_file
from ._model import model_bytes

__all__ = ["ModelPlugin", "model_on_workers", "stream", "fit_on_cluster"]

#: Tasks kept in flight per worker thread: one running, the next ones already on the
#: worker (no idle gap while a result travels back), and few enough that the scheduler
#: never holds a whole 100,000-image batch.
TASKS_PER_THREAD = 3
#: How often (seconds) the window follows workers that join or leave.
RESIZE_EVERY = 5.0
#: Images fitted by one task at most. A task costs the scheduler, the worker and this
#: process a few milliseconds of their own (messages, state, the result's round trip):
#: as much as a tenth of a face's fit, paid once per chunk instead of once per image.
MAX_CHUNK = 8
#: Tasks per worker thread a batch is cut into at least, so the last ones finish together.
CHUNKS_PER_THREAD = 4


class ModelPlugin(WorkerPlugin):
    """A model file's bytes, loaded into a model once on every worker of the cluster.

    A worker plugin rather than scattered data: the scheduler hands it to every worker
    that joins later, so a worker restarted after a crash has the model again, whatever
    happened to the others. The bytes are read like any model file (no pickle). On the
    worker OpenCV runs on ``NAPARI_GSM_OPENCV_THREADS`` threads (default 1: the workers
    are the parallelism; a local cluster shares the computer's cores out among them).
    """

    def __init__(self, data, name):
        self.data, self.name = data, str(name)
        self.model = None

    def setup(self, worker):
        import cv2

        from ..model import load_model

        cv2.setNumThreads(opencv_threads())
        self.model = load_model(model_bytes(self.data, self.name))

    def teardown(self, worker):
        self.model = None


def opencv_threads():
    """OpenCV threads for a worker: ``NAPARI_GSM_OPENCV_THREADS`` if set, else 1."""
    try:
        return max(1, int(os.environ.get(OPENCV_THREADS_VAR, "1")))
    except ValueError:
        return 1


@contextmanager
def model_on_workers(client, model_file):
    """Register ``model_file`` on the cluster's workers; yields the plugin name tasks pass to
    :func:`worker_model`. Unregistered on exit."""
    name = f"napari-gsm-model-{model_file.digest[:16]}-{uuid.uuid4().hex[:8]}"
    try:
        client.register_plugin(ModelPlugin(model_file.data, model_file.path), name=name)
    except Exception as exc:  # whatever a worker raised while loading it
        raise ClusterError(f"{model_file.path}: the workers cannot load this model "
                           f"({_reason(exc)}); do they run this napari-gsm?") from None
    try:
        yield name
    finally:
        try:
            client.unregister_worker_plugin(name)
        except Exception:  # the cluster is gone already: nothing left to clean up
            pass


def worker_model(name):
    """The model registered as ``name`` on the worker this task runs on."""
    return get_worker().plugins[name].model


def _fit_task(name, jobs):
    """Fit a chunk of ``(path, start, index)`` jobs on this worker; a list of Fitted."""
    model = worker_model(name)
    return [fit_file(model, path, start, index) for path, start, index in jobs]


def stream(client, func, jobs, *, names, given_up=None, one_at_a_time=False):
    """Run ``func(*job)`` for every job on the cluster; yield the results as they finish.

    At most :data:`TASKS_PER_THREAD` tasks per worker thread are in flight; each result
    lets the next job in. A task whose worker died is run again by Dask elsewhere. Dask
    gives up on a task once ``distributed.scheduler.allowed-failures`` + 1 workers died
    while it was on them, which can also catch a task that only shared those workers with
    the culprit: the other jobs still run, and :class:`ClusterError` naming those tasks
    (``names[i]``) is raised at the end, unless ``given_up`` is a list: then the indices of
    those jobs are appended to it instead. ``one_at_a_time`` keeps a single task in flight,
    so that only the task that kills a worker is blamed. Leaving early cancels what is in
    flight.
    """
    jobs = iter(enumerate(jobs))
    batch = uuid.uuid4().hex[:8]
    pending = {}  # future -> job index
    ac = as_completed(loop=client.loop, with_results=True, raise_errors=False)
    window = (lambda: 1) if one_at_a_time else (lambda: _window(client))
    size, resized = window(), time.monotonic()
    killed, tries = [], None

    def submit_next():
        try:
            i, job = next(jobs)
        except StopIteration:
            return
        future = client.submit(func, *job, key=f"napari-gsm-{batch}-{i}", pure=False)
        pending[future] = i
        ac.add(future)

    try:
        for _ in range(size):
            submit_next()
        for future, result in ac:
            i = pending.pop(future)
            killed_here = future.status == "error" and isinstance(result[1], KilledWorker)
            if future.status == "error" and not killed_here:
                raise result[1].with_traceback(result[2])
            if isinstance(result, CancelledError) or future.status == "cancelled":
                raise ClusterError(f"{names[i]}: the cluster dropped this task (was the "
                                   "scheduler stopped or restarted?)") from None
            future.release()
            if time.monotonic() - resized > RESIZE_EVERY:
                size, resized = window(), time.monotonic()
            while len(pending) < size and _more(submit_next, pending):
                pass
            if killed_here:
                killed.append(names[i])
                tries = result[1].allowed_failures + 1
                if given_up is not None:
                    given_up.append(i)
                continue
            yield result
        if killed and given_up is None:
            raise ClusterError(
                f"{', '.join(killed[:3])}{' and others' if len(killed) > 3 else ''}: "
                f"{tries} workers died while running {'this' if len(killed) == 1 else 'these'}"
                f" ({len(killed)} in all; the other images were done); one of them may need "
                "more memory than a worker has")
    finally:
        if pending:
            try:
                client.cancel(list(pending))
            except Exception:  # the client or the cluster is already gone
                pass


def _more(submit_next, pending):
    """Submit one more job; False when there was none left."""
    n = len(pending)
    submit_next()
    return len(pending) > n


def _window(client):
    threads = sum(client.nthreads().values())
    return max(TASKS_PER_THREAD * threads, TASKS_PER_THREAD)


def chunk_size(n_images, threads):
    """Images per task: up to :data:`MAX_CHUNK`, while every worker thread still gets
    :data:`CHUNKS_PER_THREAD` tasks (so none idles at the end of a batch)."""
    return int(min(MAX_CHUNK, max(1, n_images // (CHUNKS_PER_THREAD * max(threads, 1)))))


def fit_on_cluster(client, model_file, paths, starts):
    """:func:`~napari_gsm.distributed.fit_paths` on a cluster, a few images per task."""
    jobs = [(p, s, i) for i, (p, s) in enumerate(zip(paths, starts))]
    k = chunk_size(len(jobs), sum(client.nthreads().values()))
    chunks = [jobs[i:i + k] for i in range(0, len(jobs), k)]
    given_up = [] if k > 1 else None
    with model_on_workers(client, model_file) as name:
        for fitted in stream(client, _fit_task, [(name, chunk) for chunk in chunks],
                             names=[", ".join(str(p) for p, _, _ in c) for c in chunks],
                             given_up=given_up):
            yield from fitted
        # Chunks on which workers kept dying: their images one at a time (Dask blames
        # every task on a worker that dies, also those only queued there), so that only an
        # image that kills a worker is lost, and it is named.
        alone = [job for c in given_up or () for job in chunks[c]]
        for [fitted] in stream(client, _fit_task, [(name, [job]) for job in alone],
                               names=[str(p) for p, _, _ in alone], one_at_a_time=True):
            yield fitted
