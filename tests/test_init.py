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
