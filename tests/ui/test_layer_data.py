"""Points layer data sorted into frames of landmarks, and back (no viewer needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_gsm.ui.layer_data import frame_count, frame_image, frames_to_layer, group_by_frame


def _rc(xy):
    return np.asarray(xy, float)[:, ::-1]


def test_identity_from_features_any_order_and_frames():
    xy = np.array([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]])
    # frame 2 has all three landmarks in shuffled order; frame 5 misses landmark 1
    data = np.vstack([np.column_stack([np.full(3, 2.0), _rc(xy[[2, 0, 1]])]),
                      np.column_stack([np.full(2, 5.0), _rc(xy[[0, 2]])])])
    features = pd.DataFrame({"landmark": [2, 0, 1, 0, 2]})
    marks = group_by_frame(data, features)
    assert marks.n_landmarks == 3 and marks.complete == [2] and marks.incomplete == [5]
    np.testing.assert_array_equal(marks.frames[2], xy)
    assert np.isnan(marks.frames[5][1]).all()
    np.testing.assert_array_equal(marks.frames[5][[0, 2]], xy[[0, 2]])
    # Back to layer rows: the same points, each with its landmark.
    back, ids = frames_to_layer(marks.frames, stacked=True)
    again = group_by_frame(back, {"landmark": ids})
    for t in (2, 5):
        np.testing.assert_array_equal(again.frames[t], marks.frames[t])


def test_the_annotation_widgets_index_feature_is_an_identity_too():
    xy = np.array([[1.0, 2.0], [3.0, 4.0]])
    marks = group_by_frame(_rc(xy[::-1]), pd.DataFrame({"index": [1, 0]}), n_landmarks=3)
    np.testing.assert_array_equal(marks.frames[0][:2], xy)
    assert marks.incomplete == [0]


def test_order_within_a_frame_without_features():
    xy = np.arange(8.0).reshape(4, 2)
    data = np.vstack([np.column_stack([np.zeros(4), _rc(xy)]),
                      np.column_stack([np.ones(2), _rc(xy[:2])])])
    marks = group_by_frame(data)
    assert marks.n_landmarks == 4 and marks.complete == [0] and marks.incomplete == [1]
    np.testing.assert_array_equal(marks.frames[0], xy)


def test_errors_name_the_layer_and_the_frame():
    data = np.column_stack([np.zeros(3), _rc(np.arange(6.0).reshape(3, 2))])
    with pytest.raises(ValueError, match=r"'wing 3'.*frame 0 has landmark 2 more than once"):
        group_by_frame(data, {"landmark": [0, 1, 1]}, layer_name="'wing 3'")
    with pytest.raises(ValueError, match="frame 0 has 3 points, but there are 2 landmarks"):
        group_by_frame(data, n_landmarks=2)
    with pytest.raises(ValueError, match="landmark 3, but there are only 2"):
        group_by_frame(data, {"landmark": [0, 1, 2]}, n_landmarks=2)
    with pytest.raises(ValueError, match="4 coordinates"):
        group_by_frame(np.zeros((2, 4)))


def test_frames_of_images_and_stacks():
    assert frame_count((20, 30), False) == 1 and frame_count((20, 30, 3), True) == 1
    assert frame_count((7, 20, 30), False) == 7 and frame_count((7, 20, 30, 3), True) == 7
    with pytest.raises(ValueError, match="2D images and"):
        frame_count((2, 7, 20, 30), False)
    stack = np.arange(7 * 4 * 5).reshape(7, 4, 5)
    np.testing.assert_array_equal(frame_image(stack, False, 3), stack[3])
    np.testing.assert_array_equal(frame_image(stack[0], False, 0), stack[0])
