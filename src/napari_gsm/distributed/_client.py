"""A Dask client for a batch job: none, a cluster on this computer's cores, or a scheduler's."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

__all__ = ["ClusterError", "connect", "describe", "OPENCV_THREADS_VAR"]

#: Environment variable: how many threads OpenCV uses in a worker that fits (default 1).
OPENCV_THREADS_VAR = "NAPARI_GSM_OPENCV_THREADS"

#: Dask's setting for the environment variable its nannies give worker processes that
#: trims glibc's heap (see :func:`connect`); also what a cluster's workers should unset.
TRIM_VAR = "MALLOC_TRIM_THRESHOLD_"
NANNY_TRIM = f"distributed.nanny.pre-spawn-environ.{TRIM_VAR}"

#: Seconds to reach a scheduler, and then to wait for its first worker.
CONNECT_TIMEOUT = 30.0
WORKERS_TIMEOUT = 60.0


class ClusterError(RuntimeError):
    """Dask cannot run or finish the job; the message says why, for people (the command
    line prints it as its one-line error)."""


@contextmanager
def connect(workers=None, scheduler=None):
    """A ``distributed.Client`` for the job, closed (with its cluster) on exit.

    Parameters
    ----------
    workers : int, optional
        Start a cluster on this computer: that many worker processes of one task thread
        each (processes, because fitting holds Python's GIL). The computer's cores are
        shared out: OpenCV (the face detector, warps) in each worker gets
        ``cores // workers`` threads, so one worker uses the cores as this process would.
    scheduler : str, optional
        Connect to the running ``distributed`` scheduler at this address
        (``tcp://host:8786``). Its workers need napari-gsm, the same version as here,
        and must see the images at the same paths.

    Yields
    ------
    distributed.Client or None
        None when neither is given: the job runs in this process, without Dask.

    Raises
    ------
    ClusterError
        No scheduler at that address, no worker joined it in time, or workers that run
        another napari-gsm (or none).
    """
    if workers is not None and scheduler is not None:
        raise ValueError("give workers or a scheduler address, not both")
    if workers is None and scheduler is None:
        yield None
        return
    import dask
    from distributed import Client, LocalCluster

    cluster = None
    if workers is not None:
        if int(workers) < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        # Worker processes start with one BLAS/OpenMP thread (the nanny's default
        # environment); fits pin BLAS to one thread anyway. The dashboard (if bokeh is
        # installed) on any free port: the default 8787 may belong to another cluster.
        share = max(1, _cores() // int(workers))
        # The nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 (Dask's default, to
        # hand memory back to the system). A fixed threshold turns off glibc's adaptive
        # mmap threshold, so every array over 128 KB is a fresh mmap and page faults: a
        # face fit took 2.5x as long in such a worker (19.6 vs 7.9 ms). None unsets it;
        # a nanny started earlier in this process (a cluster of the user's) left Dask's
        # value in our environment, which the workers would inherit.
        if os.environ.get(TRIM_VAR) == str(dask.config.get(NANNY_TRIM, None)):
            del os.environ[TRIM_VAR]
        with dask.config.set({NANNY_TRIM: None}):
            cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1,
                                   processes=True, dashboard_address=":0",
                                   silence_logs=logging.ERROR,
                                   env={OPENCV_THREADS_VAR: str(share)})
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(f"--scheduler {scheduler}: cannot reach a Dask scheduler "
                               f"there ({_reason(exc)})") from None
    try:
        if cluster is None:
            _check_workers(client, scheduler)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _cores():
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _reason(exc):
    return str(exc) or exc.__class__.__name__


def _check_workers(client, scheduler):
    """At least one worker, and every worker runs this napari-gsm."""
    from .. import __version__

    try:
        client.wait_for_workers(1, timeout=WORKERS_TIMEOUT)
    except TimeoutError:
        raise ClusterError(f"--scheduler {scheduler}: no worker joined that scheduler in "
                           f"{WORKERS_TIMEOUT:g} s (start some with `dask worker "
                           f"{scheduler}`)") from None
    try:
        versions = client.run(_napari_gsm_version)
    except Exception as exc:  # unpickling our function fails where napari-gsm is missing
        raise ClusterError(f"--scheduler {scheduler}: the workers cannot run napari-gsm "
                           f"({_reason(exc)}); install napari-gsm {__version__} on every "
                           "worker") from None
    wrong = {addr: v for addr, v in versions.items() if v != __version__}
    if wrong:
        addr, v = next(iter(wrong.items()))
        raise ClusterError(f"--scheduler {scheduler}: worker {addr} runs napari-gsm {v}, this "
                           f"computer {__version__} ({len(wrong)} of {len(versions)} workers "
                           "differ); install the same version on every worker")


def _napari_gsm_version():
    from napari_gsm import __version__

    return __version__


def describe(client):
    """``{'scheduler': address, 'workers': n, 'threads': n}`` of a client, or None."""
    if client is None:
        return None
    info = client.scheduler_info()
    workers = info.get("workers", {})
    return {"scheduler": info.get("address"), "workers": len(workers),
            "threads": int(sum(w.get("nthreads", 0) for w in workers.values()))}
