"""The model's starts from a detector's boxes, and fits pinned to one BLAS thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_gsm import TrainParams, load_model, train
from napari_gsm.geometry import shape_size
from napari_gsm.init import start_from_box
from synthetic import make_set

#: A synthetic face detector's box: 2.2 shape sizes wide, 2.6 tall, centred 0.4 sizes above
#: the landmarks' centroid (a detector's box is not the landmarks' bounding box).
BOX_W, BOX_H, BOX_UP = 2.2, 2.6, 0.4


def _detector_box(points, rng):
    size = shape_size(points) * np.exp(rng.normal(0, 0.03))
    c = points.mean(0) + [0, -BOX_UP * size] + rng.normal(0, 0.5, 2)
    half = 0.5 * size * np.array([BOX_W, BOX_H])
    return np.r_[c - half, c + half]


@pytest.fixture(scope="module")
def detector_data():
    data = make_set(26, seed=7)
    rng = np.random.default_rng(1)
    return data, [_detector_box(p, rng) for _, p in data]


@pytest.fixture(scope="module")
def boxes_model(detector_data):
    data, boxes = detector_data
    return train(data[:22], "gsm", params=TrainParams(features="grey"), boxes=boxes[:22])


def test_train_learns_where_given_detector_boxes_put_the_shape(boxes_model, detector_data,
                                                               tmp_path):
    data, boxes = detector_data
    st = boxes_model.starts
    assert st.face_source == "boxes"
    k = 1 / np.sqrt(BOX_W * BOX_H)
    np.testing.assert_allclose(st.face, [0.5, 0.5 + BOX_UP / BOX_H, k], atol=0.02)
    s0 = boxes_model.shape.s0
    for (img, pts), box in zip(data[22:], boxes[22:]):
        start, used = boxes_model.start(img, "box", box=box, box_kind="detector")
        assert used == "detector box"
        assert np.linalg.norm(start.mean(0) - pts.mean(0)) < 0.1 * shape_size(pts)
        assert shape_size(start) == pytest.approx(shape_size(pts), rel=0.1)
        # The same box read as the landmarks' bounding box: a start centred on the box.
        off = start_from_box(s0, box).mean(0) - pts.mean(0)
        assert np.linalg.norm(off) > 0.3 * shape_size(pts)
        res = boxes_model.fit(img, "box", box=box, box_kind="detector")
        assert res.init == "detector box"
        assert np.linalg.norm(res.points - pts, axis=1).mean() < 0.05 * shape_size(pts)
    again = load_model(boxes_model.save(tmp_path / "m.npz"))
    assert again.starts.face_source == "boxes"
    np.testing.assert_allclose(again.starts.face, st.face)


def test_a_given_boxes_model_never_runs_the_face_detector(boxes_model, detector_data):
    img = detector_data[0][23][0]
    assert boxes_model.start(img)[1] == "prior"  # auto without a box: the prior
    with pytest.raises(ValueError, match="detector boxes"):
        boxes_model.start(img, "detect")
    with pytest.raises(ValueError, match="box_kind"):
        boxes_model.start(img, "box", box=(1, 1, 50, 50), box_kind="face")


def test_given_boxes_by_name_and_their_errors(detector_data):
    data, boxes = detector_data
    named = {f"image {k}": boxes[k] for k in range(0, 12, 2)}  # names of (image, points) pairs
    m = train(data[:12], "gsm", params=TrainParams(features="grey"), boxes=named)
    assert m.summary["face_boxes_matched"] == 6 and m.starts.face_source == "boxes"
    with pytest.raises(ValueError, match="not both"):
        train(data[:12], "gsm", params=TrainParams(features="grey", face_detector=True),
              boxes=boxes[:12])
    with pytest.raises(ValueError, match="11 boxes for 12"):
        train(data[:12], "gsm", params=TrainParams(features="grey"), boxes=boxes[:11])
    bad = list(boxes[:12])
    bad[3] = [10, 10, 5, 20]
    with pytest.raises(ValueError, match="image 3.*x1 > x0"):
        train(data[:12], "gsm", params=TrainParams(features="grey"), boxes=bad)
    with pytest.raises(ValueError, match="names a training image"):
        train(data[:12], "gsm", params=TrainParams(features="grey"), boxes={"nope": boxes[0]})


def _blas_threads():
    from threadpoolctl import threadpool_info

    return {d["filepath"]: d["num_threads"] for d in threadpool_info()
            if d["user_api"] == "blas"}


def test_fits_run_on_one_blas_thread_and_restore_the_setting(boxes_model, detector_data,
                                                             monkeypatch):
    from threadpoolctl import threadpool_limits

    from napari_gsm import methods

    seen = []
    real = methods.METHODS["gsm"]

    def fit(*args, **kw):
        seen.append(_blas_threads())
        return real.fit(*args, **kw)

    monkeypatch.setitem(methods.METHODS, "gsm", methods.Method("gsm", fit))
    img = detector_data[0][22][0]
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        assert set(before.values()) == {2}
        boxes_model.fit(img, "prior")
        assert _blas_threads() == before
    assert seen and set(seen[0].values()) == {1} and seen[0].keys() == before.keys()


def test_training_runs_on_one_blas_thread_and_restores_the_setting(detector_data):
    from threadpoolctl import threadpool_limits

    seen = []
    data = detector_data[0][:12]
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        train(data, "gsm", params=TrainParams(features="grey"), calibrate=False,
              progress=lambda done, total, what: seen.append(_blas_threads()))
        assert _blas_threads() == before
    assert seen and all(set(s.values()) == {1} for s in seen)


def test_overlapping_fits_from_threads_keep_one_thread_until_the_last_ends():
    from threadpoolctl import threadpool_limits

    from napari_gsm._threads import one_blas_thread

    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    inside_b = []

    def a():
        with one_blas_thread():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with one_blas_thread():
            b_in.set()
            a_out.wait(5)
            inside_b.append(_blas_threads())  # A has left; B is still fitting

    with threadpool_limits(limits=2, user_api="blas"):
        ts = [threading.Thread(target=f) for f in (a, b)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
        after = _blas_threads()
    assert set(inside_b[0].values()) == {1}
    assert set(after.values()) == {2}


def test_a_signed_hog_model_trains_fits_and_reads_back(detector_data, tmp_path):
    """Signed HoG (the default): 12-channel detectors; saved and loaded, the model
    fits every image exactly as before saving; the same images' landmarks are found.
    A file from before the option existed reads as the unsigned HoG it holds."""
    from napari_gsm.evaluate import nme
    from napari_gsm.io.model_file import load_model_file, save_model_file

    data, _ = detector_data
    assert TrainParams().signed and not TrainParams(features="grey").signed
    # 6 signed bins of 30 degrees (12 channels) by default, 9 unsigned ones of 20.
    assert (TrainParams().n_bins, TrainParams(signed=False).n_bins) == (6, 9)
    assert TrainParams(n_bins=9).feature_spec().channels == 18
    model = train(data[:22], "gsm", params=TrainParams(), calibrate=False)
    assert model.features.signed and model.features.channels == 12
    assert model.detectors.filters.shape[-1] == 12
    back = load_model(model.save(tmp_path / "signed.npz"))
    assert back.features == model.features and back.train_params.signed
    for grey, truth in data[22:]:
        start = truth + 1.5
        a = model.fit(grey, init="points", points=start)
        np.testing.assert_array_equal(back.fit(grey, init="points", points=start).points,
                                      a.points)
        assert nme(a.points, truth, "diagonal") < 0.03
    # A model file written before the option existed (no "signed" anywhere) reads as the
    # unsigned HoG it was trained with.
    plain = train(data[:22], "gsm", params=TrainParams(signed=False), calibrate=False)
    arrays, meta = load_model_file(plain.save(tmp_path / "plain.npz"))
    del meta["features"]["signed"], meta["train_params"]["signed"]
    del meta["train_params"]["n_bins"]
    save_model_file(tmp_path / "old.npz", arrays, meta)
    old = load_model(tmp_path / "old.npz")
    assert not old.features.signed and old.features.channels == 9
    assert old.train_params.n_bins == 9
    grey, truth = data[23]
    np.testing.assert_array_equal(old.fit(grey, init="points", points=truth + 1.5).points,
                                  plain.fit(grey, init="points", points=truth + 1.5).points)
