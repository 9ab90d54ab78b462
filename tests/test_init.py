"""Starts: box, points, prior, face detector and the choice among its detections."""

import numpy as np
import pytest

from napari_gsm.geometry import apply_similarity, shape_size
from napari_gsm.init import FaceDetector, StartModel, place_mean, start_from_box, start_from_points
from synthetic import TEMPLATE


def test_start_from_box_fills_the_box():
    box = (10.0, 20.0, 90.0, 70.0)
    start = start_from_box(TEMPLATE, box)
    lo, hi = start.min(0), start.max(0)
    np.testing.assert_allclose((lo + hi) / 2, [50, 45])
    # the mean of the width and height ratios: an aspect-ratio mismatch is split evenly
    w0, h0 = np.ptp(TEMPLATE, 0)
    k = 0.5 * (80 / w0 + 50 / h0)
    np.testing.assert_allclose(hi - lo, [k * w0, k * h0])
    with pytest.raises(ValueError):
        start_from_box(TEMPLATE, (5, 5, 1, 9))


def test_start_from_points_fills_missing_rows_by_similarity():
    A = 1.3 * np.array([[np.cos(0.2), -np.sin(0.2)], [np.sin(0.2), np.cos(0.2)]])
    truth = apply_similarity(TEMPLATE, A, [40, 60])
    given = truth.copy()
    given[[1, 4, 6]] = np.nan
    np.testing.assert_allclose(start_from_points(TEMPLATE, given), truth, atol=1e-9)
    only_one = np.full_like(truth, np.nan)
    only_one[0] = truth[0]
    with pytest.raises(ValueError):
        start_from_points(TEMPLATE, only_one)


def _start_model():
    rng = np.random.default_rng(0)
    shapes, sizes = [], []
    for _ in range(30):  # shapes near the centre of 200 x 200 images, size ~ 30
        shapes.append(place_mean(TEMPLATE, rng.normal(100, 3, 2), rng.normal(30, 1)))
        sizes.append((200, 200))
    # a face box 2 sizes wide whose top-left sits 1 size up-left of the centroid
    boxes = [np.r_[s.mean(0) - shape_size(s), s.mean(0) + shape_size(s)] for s in shapes]
    return StartModel.train(TEMPLATE, np.array(shapes), sizes, np.array(boxes))


def test_prior_and_face_regression_are_learned():
    sm = _start_model()
    np.testing.assert_allclose(sm.face, [0.5, 0.5, 0.5], atol=1e-9)
    start = sm.from_prior(TEMPLATE, (200, 200))
    np.testing.assert_allclose(start.mean(0), [100, 100], atol=2)
    assert shape_size(start) == pytest.approx(30, rel=0.05)


def test_choose_face_prefers_the_detection_the_prior_expects():
    sm = _start_model()
    good = np.array([70.0, 70.0, 130.0, 130.0])   # centred, the usual size
    decoy = np.array([0.0, 120.0, 80.0, 200.0])   # larger, in a corner
    np.testing.assert_array_equal(sm.choose_face([decoy, good], (200, 200)), good)
    np.testing.assert_array_equal(sm.choose_face([decoy], (200, 200)), decoy)
    assert sm.choose_face(np.zeros((0, 4)), (200, 200)) is None


def test_face_detector_finds_the_astronaut():
    skimage_data = pytest.importorskip("skimage.data")
    from napari_gsm.io import to_grey

    boxes = FaceDetector().detect(to_grey(skimage_data.astronaut()))
    assert len(boxes) >= 1
    x0, y0, x1, y1 = boxes[0]
    # her face is around x 170-260, y 40-140 in the 512 x 512 image
    assert 150 < (x0 + x1) / 2 < 280 and 30 < (y0 + y1) / 2 < 160


def test_detector_placement_of_non_square_boxes_round_trips():
    """Any detector's boxes: centroid from the box's width and height, size from sqrt(w h)."""
    rng = np.random.default_rng(3)
    shapes = [place_mean(TEMPLATE, rng.normal(100, 5, 2), rng.normal(30, 3)) for _ in range(20)]
    # a box 2.5 sizes wide, 3 sizes tall, its top-left 1 size left of / 2 sizes above the centroid
    boxes = [np.r_[s.mean(0) - shape_size(s) * np.array([1.0, 2.0]),
                   s.mean(0) + shape_size(s) * np.array([1.5, 1.0])] for s in shapes]
    sm = StartModel.train(TEMPLATE, np.array(shapes), [(200, 200)] * 20, np.array(boxes),
                          face_source="boxes")
    k = 1 / np.sqrt(2.5 * 3.0)
    np.testing.assert_allclose(sm.face, [1 / 2.5, 2 / 3, k], atol=1e-9)
    np.testing.assert_allclose(sm.face_std, 0, atol=1e-9)
    for s, b in zip(shapes, boxes):
        np.testing.assert_allclose(sm.from_face_box(TEMPLATE, b).mean(0), s.mean(0), atol=1e-9)
        assert shape_size(sm.from_face_box(TEMPLATE, b)) == pytest.approx(shape_size(s))
    again = StartModel.from_arrays(sm.to_arrays())
    assert again.face_source == "boxes"
    np.testing.assert_allclose(again.face, sm.face)
    old = {k: v for k, v in sm.to_arrays().items() if k != "start_face_source"}
    assert StartModel.from_arrays(old).face_source == "viola-jones"  # files from before


def _detector_world(n, seed):
    """Shapes at random placements, and a noisy synthetic face detector's (non-square) boxes.

    The box is 2.5 shape sizes wide and 3 tall around a point 0.3 sizes above the centroid,
    its centre off by 6 % of its size per axis and its size by 8 % (log).
    """
    rng = np.random.default_rng(seed)
    shapes, boxes = [], []
    for _ in range(n):
        s = place_mean(TEMPLATE, rng.uniform(150, 250, 2), rng.uniform(20, 60),
                       rng.normal(0, 0.1))
        size = shape_size(s) * np.exp(rng.normal(0, 0.08))
        half = 0.5 * size * np.array([2.5, 3.0])
        c = s.mean(0) + [0, -0.3 * size] + rng.normal(0, 0.06, 2) * size * np.sqrt(7.5)
        shapes.append(s)
        boxes.append(np.r_[c - half, c + half])
    return np.array(shapes), np.array(boxes)


def _start_errors(starts, truths):
    """Mean point error of each start, in true shape sizes."""
    return np.array([np.linalg.norm(st - t, axis=1).mean() / shape_size(t)
                     for st, t in zip(starts, truths)])


def test_simulated_detector_starts_err_like_measured_ones():
    """Placement learned on training shapes; on held-out ones, the starts the model
    simulates (for GSM-CR and for choosing GSM's prior weight) err like the real starts
    from the detector's boxes."""
    shapes, boxes = _detector_world(1500, seed=4)
    train, held = slice(0, 1200), slice(1200, None)
    sm = StartModel.train(TEMPLATE, shapes[train], [(400, 400)] * 1200, boxes[train],
                          face_source="boxes")
    real = _start_errors([sm.from_face_box(TEMPLATE, b) for b in boxes[held]], shapes[held])
    rng = np.random.default_rng(0)
    sim = _start_errors([sm.simulate(TEMPLATE, t, (400, 400), "face", 1, rng)[0]
                         for t in shapes[held]], shapes[held])
    assert np.mean(sim) == pytest.approx(np.mean(real), rel=0.12)
    assert np.median(sim) == pytest.approx(np.median(real), rel=0.15)
    assert np.percentile(sim, 90) == pytest.approx(np.percentile(real, 90), rel=0.15)


def test_choose_lam_fits_from_starts_that_err_like_measured_ones(monkeypatch):
    """choose_lam fits the held-out images from the simulated detector starts (it used to
    read the residuals in box widths as shape sizes: starts 2.5x too easy)."""
    from types import SimpleNamespace

    import napari_gsm.methods.gsm as G
    import napari_gsm.model as M
    from napari_gsm.methods import GSMParams
    from napari_gsm.result import FitResult

    shapes, boxes = _detector_world(1500, seed=5)
    sm = StartModel.train(TEMPLATE, shapes[:1200], [(400, 400)] * 1200, boxes[:1200],
                          face_source="viola-jones")
    used = []

    def record(model, pyramid, start, params=None, history=False):
        used.append(np.array(start))
        return FitResult(points=np.array(start), n_iter=0, converged=True, fit_ms=0.0)

    monkeypatch.setattr(G, "fit_gsm", record)  # the held-out fits (training.lam_errors)
    model = SimpleNamespace(shape=SimpleNamespace(s0=TEMPLATE), starts=sm,
                            gsm_params=GSMParams(), summary={})
    held = [M.Sample(str(k), np.zeros((8, 8), np.float32), s) for k, s in
            enumerate(shapes[1200:])]
    M.choose_lam(model, held, np.random.default_rng(0), grid=(0.1,))
    real = _start_errors([sm.from_face_box(TEMPLATE, b) for b in boxes[1200:]], shapes[1200:])
    sim = _start_errors(used, shapes[1200:])
    assert np.mean(sim) == pytest.approx(np.mean(real), rel=0.12)
    assert np.median(sim) == pytest.approx(np.median(real), rel=0.15)


def test_a_simulated_start_has_the_measured_error_it_drew():
    """start_error and simulate are inverse: one stored error gives back that error."""
    from dataclasses import replace

    from napari_gsm.init import start_error

    sm = replace(_start_model(), face_errors=np.array([[0.12, -0.05, 0.2, -0.15]]))
    truth = place_mean(TEMPLATE, (90, 120), 33.0, 0.3)
    start = sm.simulate(TEMPLATE, truth, (200, 200), "face", 3, np.random.default_rng(0))
    for st in start:
        np.testing.assert_allclose(start_error(st, truth), [0.12, -0.05, 0.2, -0.15],
                                   atol=1e-9)
    # measured on the training shapes: the errors of their own detector starts
    model = _start_model()
    assert model.face_errors.shape == (30, 4)
    np.testing.assert_allclose(model.face_errors[:, 2:], 0, atol=1e-9)  # exact boxes


def test_placement_sums_add_over_parts_and_give_the_spreads():
    from napari_gsm.init import placement_sums

    rng = np.random.default_rng(2)
    shapes = np.stack([place_mean(TEMPLATE, rng.normal(100, 5, 2), rng.normal(30, 2),
                                  rng.normal(0, 0.1)) for _ in range(12)])
    sizes = [(200, 300 + 10 * i) for i in range(12)]
    whole = placement_sums(TEMPLATE, shapes, sizes)
    np.testing.assert_allclose(placement_sums(TEMPLATE, shapes[:5], sizes[:5])
                               + placement_sums(TEMPLATE, shapes[5:], sizes[5:]), whole)
    sm = StartModel.from_sums(whole)
    # known answer: the spreads of the placements computed directly
    cx = np.array([s.mean(0)[0] / W for s, (H, W) in zip(shapes, sizes)])
    assert sm.prior[0] == pytest.approx(cx.mean()) and sm.prior_std[0] == pytest.approx(cx.std())
    ang = np.array([np.arctan2(*np.linalg.lstsq(np.c_[TEMPLATE - TEMPLATE.mean(0)],
                                                s - s.mean(0), rcond=None)[0][0, ::-1])
                    for s in shapes])
    assert sm.prior_std[3] == pytest.approx(np.std(ang), rel=1e-6)


def test_a_folds_start_model_is_the_one_learned_without_it():
    from dataclasses import dataclass

    from napari_gsm.crossfit import fold_starts

    rng = np.random.default_rng(3)
    shapes = np.stack([place_mean(TEMPLATE, rng.normal(100, 5, 2), rng.normal(30, 2))
                       for _ in range(10)])
    sizes = [(200 + i, 220) for i in range(10)]

    @dataclass
    class Smp:
        points: np.ndarray
        size: tuple

    class Shape:
        s0 = TEMPLATE

    class Model:
        shape = Shape()
        starts = StartModel.train(TEMPLATE, shapes, sizes)

    fold = [2, 7]
    got = fold_starts(Model(), [Smp(shapes[k], sizes[k]) for k in fold])
    others = [k for k in range(10) if k not in fold]
    want = StartModel.train(TEMPLATE, shapes[others], [sizes[k] for k in others])
    for name in ("prior", "prior_std", "box_std"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-9,
                                   err_msg=name)
