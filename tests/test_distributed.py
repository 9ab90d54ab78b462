"""Batch fitting on a Dask cluster: a LocalCluster of two worker processes on this machine.

What these show: the cluster fits every image exactly as this process does (the same
bytes in the .pts files); a worker killed in the middle of a job loses nothing (Dask runs
its images again, every image gets one valid .pts, no temporary file is left); an image
on which every worker dies ends the job with a message naming it, and costs none of the
images that travelled in its task; a client killed in the
middle resumes where it stopped; and nothing of Dask is imported when it is not used.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from distributed import WorkerPlugin

from napari_gsm.cli import main
from napari_gsm.distributed import ClusterError, ModelFile, Start, connect, fit_paths
from napari_gsm.io import read_image, read_pts
from napari_gsm.io.fits_log import FITS_LOG_NAME
from napari_gsm.model import train

REPO = Path(__file__).resolve().parent.parent
WINGS = REPO / "sample_data" / "wings"
#: Seconds a stream of 12 tiny tasks may take even with workers killed and restarted
#: (about 10 s on a quiet machine).
STREAM_DEADLINE = 180

pytestmark = pytest.mark.skipif(not WINGS.is_dir(), reason="sample_data/wings not present")


@pytest.fixture(scope="module")
def wings(tmp_path_factory):
    """images/ (the 10 sample wings, each under 4 names: 40 images) and model.npz (GSM
    trained on 8 of the wings)."""
    root = tmp_path_factory.mktemp("dwings")
    images = root / "images"
    images.mkdir()
    jpgs = sorted(WINGS.glob("*.jpg"))
    for k in range(4):
        for p in jpgs:
            shutil.copy(p, images / f"{p.stem}_{k}.jpg")
    from napari_gsm.io import load_dataset

    items = load_dataset(WINGS).annotated[:8]
    model = train([(it.load_image(), it.points) for it in items], "gsm")
    model.save(root / "model.npz")
    paths = sorted(images.glob("*.jpg"))
    return {"root": root, "images": images, "model": root / "model.npz", "paths": paths}


def _in_process(wings):
    return {d.index: d.result.points for d in fit_paths(wings["model"], wings["paths"])}


def _alive(client, n=2):
    """Wait until the cluster has ``n`` workers again (a killed one is restarted)."""
    client.wait_for_workers(n, timeout=120)


def test_cluster_fits_every_image_as_this_process_does(cluster, wings):
    here = _in_process(wings)
    there = list(fit_paths(wings["model"], wings["paths"], client=cluster))
    assert sorted(d.index for d in there) == list(range(len(wings["paths"])))
    for d in there:
        assert d.error is None and d.path == wings["paths"][d.index].absolute()
        np.testing.assert_array_equal(d.result.points, here[d.index])
    # both workers took part, each loading the model once (the plugin is gone after the job)
    assert not any(name.startswith("napari-gsm-model")
                   for plugins in cluster.run(lambda dask_worker: list(dask_worker.plugins))
                   .values() for name in plugins)
    # starts travel with the paths: a box per image
    box = np.array([100.0, 50.0, 700.0, 450.0])
    starts = [Start("box", box=box) if i % 2 else Start("prior") for i in range(5)]
    mf = ModelFile(wings["model"])
    there = {d.index: d for d in fit_paths(mf, wings["paths"][:5], starts, client=cluster)}
    for i, s in enumerate(starts):
        res, label = s.fit(mf.model, read_image(wings["paths"][i]))
        np.testing.assert_array_equal(there[i].result.points, res.points)
        assert there[i].label == label == ("box" if i % 2 else "prior")


def test_leaving_early_cancels_the_rest_and_unloads_the_model(cluster, wings):
    """What the widget's Cancel relies on: closing the generator cancels the images still
    queued and unregisters the model from the workers."""
    gen = fit_paths(wings["model"], wings["paths"], client=cluster)
    first = next(gen)
    assert first.error is None
    gen.close()

    def ours(dask_scheduler):
        return ([str(k) for k in dask_scheduler.tasks if str(k).startswith("napari-gsm")],
                [n for n in dask_scheduler.worker_plugins if n.startswith("napari-gsm")])

    deadline = time.monotonic() + 30
    while cluster.run_on_scheduler(ours) != ([], []) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cluster.run_on_scheduler(ours) == ([], [])


def test_cli_on_a_scheduler_writes_the_same_files(cluster, wings, tmp_path, capsys):
    here, there = tmp_path / "here", tmp_path / "there"
    assert main(["fit", str(wings["model"]), str(wings["images"]), "-o", str(here)]) == 0
    capsys.readouterr()
    addr = cluster.scheduler.address
    assert main(["fit", str(wings["model"]), str(wings["images"]), "-o", str(there),
                 "--scheduler", addr, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cluster"]["workers"] == 2 and doc["totals"]["n_images"] == 40
    assert [r["image"] for r in doc["images"]] == [str(p) for p in wings["paths"]]
    names = sorted(p.name for p in here.glob("*.pts"))
    assert len(names) == 40 and names == sorted(p.name for p in there.glob("*.pts"))
    for n in names:
        assert (here / n).read_bytes() == (there / n).read_bytes()
    # evaluate on the cluster gives the in-process numbers
    data = tmp_path / "data"
    data.mkdir()
    for p in sorted(WINGS.iterdir()):
        shutil.copy(p, data)
    docs = []
    for extra in ([], ["--scheduler", addr]):
        assert main(["evaluate", str(wings["model"]), str(data), "--json", *extra]) == 0
        docs.append(json.loads(capsys.readouterr().out))
    assert [r["nme_pct"] for r in docs[0]["images"]] == [r["nme_pct"] for r in docs[1]["images"]]
    assert docs[0]["mean_nme_pct"] == docs[1]["mean_nme_pct"]


def test_a_killed_worker_loses_nothing(fresh_cluster, wings, tmp_path, capsys):
    """A worker process is killed as soon as the first .pts is written: Dask runs its
    images again on the other worker (and on the restarted one), and the job still ends
    with exactly one valid .pts per image, equal to the in-process fit, and no temporary
    file."""
    cluster = fresh_cluster
    _alive(cluster)
    out = tmp_path / "out"
    pids = cluster.run(os.getpid)
    victim = sorted(pids)[0]
    written_at_kill = []

    def kill_when_first_written():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if out.is_dir() and any(out.glob("*.pts")):
                os.kill(pids[victim], signal.SIGKILL)
                written_at_kill.append(len(list(out.glob("*.pts"))))
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=kill_when_first_written)
    watcher.start()
    rc = main(["fit", str(wings["model"]), str(wings["images"]), "-o", str(out),
               "--scheduler", cluster.scheduler.address, "--json"])
    watcher.join()
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and written_at_kill and written_at_kill[0] < 30  # killed mid-job
    assert doc["totals"]["n_images"] == 40 and doc["failed"] == []
    here = _in_process(wings)
    for i, p in enumerate(wings["paths"]):
        np.testing.assert_array_equal(read_pts(out / f"{p.stem}.pts"), here[i])
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"{p.stem}.pts" for p in wings["paths"]] + [FITS_LOG_NAME])
    lines = (out / FITS_LOG_NAME).read_text().splitlines()
    assert sorted(json.loads(line)["file"] for line in lines) == names[1:]  # one each
    _alive(cluster)
    assert pids[victim] not in cluster.run(os.getpid).values()  # it was restarted


def test_an_image_every_worker_dies_on_is_named(fresh_cluster, wings, monkeypatch):
    """A task whose worker dies each time ends the job with a message naming the image
    (allowed-failures + 1 workers), not a traceback or a hang, after the other images.
    (Dask may also give up on an image that shared the dying workers: it is named too.)"""
    cluster = fresh_cluster
    # The local scheduler runs in this process, and pytest's log capture re-raises a log
    # record that fails to format: distributed 2026.11's "Couldn't gather keys" record did
    # (a TypeError), which killed the scheduler's gather and hung the stream (seen once).
    # Outside pytest, logging prints such an error and goes on; so must the test.
    monkeypatch.setattr(logging, "raiseExceptions", False)
    from napari_gsm.distributed._dask import stream

    _alive(cluster)

    def dies_on_the_third(path):
        if path.name.startswith("63004_0"):
            os.kill(os.getpid(), signal.SIGKILL)
        return path.name

    jobs = [(p,) for p in wings["paths"][:12]]
    seen, raised = [], []

    def consume():
        try:
            for name in stream(cluster, dies_on_the_third, jobs,
                               names=[str(p) for p in wings["paths"][:12]]):
                seen.append(name)
        except Exception as exc:  # checked below
            raised.append(exc)

    # In a thread with a deadline: a stream that never ends fails this test, not CI's clock.
    runner = threading.Thread(target=consume, daemon=True)
    runner.start()
    runner.join(STREAM_DEADLINE)
    assert not runner.is_alive(), f"the stream hung ({len(seen)} of 12 results after " \
        f"{STREAM_DEADLINE} s): {cluster.scheduler_info()['workers'].keys()}"
    assert len(raised) == 1 and isinstance(raised[0], ClusterError), raised
    err = raised[0]
    assert re.search(r"2 workers died while running th", str(err)), err
    assert "63004_0.jpg" in str(err) and "63004_0.jpg" not in seen
    n_killed = int(re.search(r"\((\d+) in all", str(err)).group(1))
    assert len(seen) + n_killed == 12  # every other image was done
    _alive(cluster)


class _DiesOn(WorkerPlugin):
    """On every worker, also one restarted after a crash: fitting the image named
    ``name`` kills the worker process."""

    def __init__(self, name):
        self.name = name

    def setup(self, worker):
        from napari_gsm.distributed import _dask

        real, name = _dask.fit_file, self.name

        def fit_file(model, path, start=None, index=0):
            if path.name == name:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(model, path, start, index)

        _dask.fit_file = fit_file


def test_an_image_that_kills_its_worker_costs_only_itself(fresh_cluster, wings,
                                                          monkeypatch):
    """Images travel a few to a task (40 images on 2 workers: 5 a task). When the workers
    keep dying on one image, the images that shared its task are fitted one by one: all
    39 others come back, equal to the in-process fits, and the error names that image."""
    from napari_gsm.distributed._dask import chunk_size

    monkeypatch.setattr(logging, "raiseExceptions", False)  # as in the test above
    cluster = fresh_cluster
    _alive(cluster)
    assert chunk_size(len(wings["paths"]), 2) == 5
    cluster.register_plugin(_DiesOn("63004_2.jpg"), name="dies-on")
    done, raised = {}, []

    def consume():
        try:
            for d in fit_paths(wings["model"], wings["paths"], client=cluster):
                done[d.index] = d.result.points
        except Exception as exc:  # checked below
            raised.append(exc)

    runner = threading.Thread(target=consume, daemon=True)
    runner.start()
    runner.join(STREAM_DEADLINE)
    assert not runner.is_alive(), f"the fit hung ({len(done)} of 40 images back)"
    assert len(raised) == 1 and isinstance(raised[0], ClusterError), raised
    assert re.match(r"\S*63004_2\.jpg: 2 workers died while running this \(1 in all",
                    str(raised[0])), raised[0]
    here = _in_process(wings)
    poison = [p.name for p in wings["paths"]].index("63004_2.jpg")
    assert sorted(done) == [i for i in range(40) if i != poison]
    for i, points in done.items():
        np.testing.assert_array_equal(points, here[i])


def test_unreachable_scheduler_is_one_clear_line(wings, tmp_path, capsys, monkeypatch):
    from napari_gsm.distributed import _client

    monkeypatch.setattr(_client, "CONNECT_TIMEOUT", 1.0)
    rc = main(["fit", str(wings["model"]), str(wings["images"]), "-o", str(tmp_path / "o"),
               "--scheduler", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("napari-gsm: error: --scheduler tcp://127.0.0.1:9: cannot reach a "
                          "Dask scheduler there")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.pts"))
    with pytest.raises(ValueError, match="not both"):
        with connect(workers=1, scheduler="tcp://127.0.0.1:9"):
            pass


def test_a_client_killed_mid_job_resumes(wings, tmp_path):
    """The command is killed (SIGKILL) after a few images: every .pts it left is whole,
    and a re-run fits only the others, listing the first ones as done."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "napari_gsm.cli", "fit", str(wings["model"]),
           str(wings["images"]), "-o", str(out)]
    env = dict(os.environ, NAPARI_GSM_PROGRESS_SECONDS="0", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=env)
    for line in proc.stderr:  # a progress line after each written image
        if " 3/40 " in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the job ended before it could be killed"
    written = sorted(out.glob("*.pts"))
    assert 3 <= len(written) < 40
    for p in written:  # atomic writes: whole files only
        assert read_pts(p).shape == (12, 2)
    proc = subprocess.run(cmd + ["--json"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    done = {Path(s["file"]).name for s in doc["skipped"] if s["reason"] == "done"}
    # the files the journal names are done; one the kill may have cut from the journal
    # (written, not yet recorded) is left alone as not fit's own
    assert done and done <= {p.name for p in written}
    assert len(doc["skipped"]) - len(done) <= 1
    assert len(doc["images"]) + len(doc["skipped"]) == 40
    here = _in_process(wings)
    for i, p in enumerate(wings["paths"]):
        np.testing.assert_array_equal(read_pts(out / f"{p.stem}.pts"), here[i])


def test_nothing_of_dask_is_imported_without_a_client(wings, tmp_path):
    code = ("import sys; from napari_gsm.cli import main; "
            f"rc = main(['fit', {str(wings['model'])!r}, {str(wings['paths'][0])!r}, '-o', "
            f"{str(tmp_path / 'o')!r}, '--json']); "
            "print([m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]); "
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_a_local_cluster_shares_the_cores_out_to_opencv(cluster, wings):
    """One worker on this computer runs OpenCV (the face detector, warps) on every core,
    as a fit in this process does; two workers share the cores; workers started without
    napari-gsm's setting (a scheduler's) run OpenCV on one thread each."""
    import cv2

    from napari_gsm.distributed._client import _cores
    from napari_gsm.distributed._dask import model_on_workers

    def threads(client):
        with model_on_workers(client, ModelFile(wings["model"])):
            return sorted(client.run(cv2.getNumThreads).values())

    assert threads(cluster) == [1, 1]
    cores = _cores()
    with connect(workers=1) as client:
        assert threads(client) == [cores]
        # and glibc's heap as in this process: no fixed trim threshold (Dask's nanny
        # default), which made every fit on a worker 2.5x slower
        assert list(client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == [None]
    with connect(workers=2) as client:
        assert threads(client) == [max(1, cores // 2)] * 2
