"""Issue #13 in napari: where to look. Uncertain landmarks drawn apart, the predicted error on
hover, a key to the next uncertain landmark, the list sorted by predicted error, failed fits
marked; the confidence kept in the draft.

The fits are real (a calibrated model trained on the sample wings); where a test needs
particular landmarks to be uncertain, the fit's confidence is replaced by a known one, so
that what the person sees can be checked against it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import hold_out
from gui import click_list_row, drag, hover, key, settle, wait_idle

from napari_gsm.ui.colours import UNCERTAIN_SCALE, uncertain_rgba
from napari_gsm.ui.image_list import display_order
from napari_gsm.ui.image_state import FITTED, PINNED, FitConfidence, ImageState
from napari_gsm.ui.project import Project


def _confidence(v, off=(), nme=0.01, failed=False):
    p_off = np.full(v, 0.02)
    p_off[list(off)] = 0.9
    return FitConfidence(p_off, np.where(p_off > 0.5, 9.0, 1.0), nme, failed)


# -- Qt-free ------------------------------------------------------------------------------

def test_uncertain_landmarks_are_the_likely_off_ones_still_as_fitted():
    st = ImageState.empty("a", 6)
    c = _confidence(6, off=(1, 4))
    c.p_off[4] = 0.95  # the least confident
    c.p_off[2] = 0.3
    st.set_fit(np.arange(12.0).reshape(6, 2), confidence=c)
    assert list(np.flatnonzero(st.uncertain)) == [1, 4]
    assert list(st.doubt_order()) == [4, 1, 2, 0, 3, 5]  # ties in landmark order
    assert st.next_to_check(-1) == 4 and st.next_to_check(4) == 1
    assert st.next_to_check(1) == 2 and st.next_to_check(5) == 4  # cyclic
    st.set_point(1, (50.0, 50.0))  # a person moved it: theirs now
    assert st.states[1] == PINNED and list(np.flatnonzero(st.uncertain)) == [4]
    assert 1 not in st.doubt_order() and st.next_to_check(4) == 2
    assert st.predicted_nme == 0.01
    st.set_fit(st.points, keep=np.ones(6, bool), confidence=None)  # a fit without confidence
    assert not st.uncertain.any() and st.predicted_nme is None


def test_undo_brings_back_the_confidence_of_the_fit_it_returns_to():
    st = ImageState.empty("a", 4)
    first, second = _confidence(4, off=(0,)), _confidence(4, off=(2, 3))
    st.set_fit(np.arange(8.0).reshape(4, 2), confidence=first)
    st.set_fit(np.arange(8.0).reshape(4, 2) + 1, confidence=second)
    assert st.confidence is second and list(np.flatnonzero(st.uncertain)) == [2, 3]
    st.undo()
    assert st.confidence is first and list(np.flatnonzero(st.uncertain)) == [0]
    st.redo()
    assert st.confidence is second
    st.set_fit(st.points, confidence=None)  # same points, a fit without confidence
    assert st.confidence is None and not st.uncertain.any()


def test_fit_confidence_json_round_trip_and_rejects_the_wrong_size():
    c = _confidence(5, off=(2,), nme=0.0375, failed=True)
    back = FitConfidence.from_json(c.to_json(), 5)
    np.testing.assert_array_equal(back.p_off, c.p_off)
    np.testing.assert_array_equal(back.error_px, c.error_px)
    assert (back.nme, back.failed) == (0.0375, True)
    assert FitConfidence.from_json(c.to_json(), 6) is None
    assert FitConfidence.from_json({"p_off": [0.1]}, 1) is None


def test_worst_predicted_first_puts_failed_fits_then_highest_error_first():
    predicted = [(None, False), (0.02, False), (0.08, True), (0.05, False), (None, False),
                 (0.01, True)]
    assert display_order(predicted, False) == [0, 1, 2, 3, 4, 5]
    assert display_order(predicted, True) == [2, 5, 3, 1, 0, 4]


def test_the_confidence_survives_in_the_draft(wings_copy):
    hold_out(wings_copy, 3)
    p = Project(wings_copy)
    i = next(k for k in range(len(p)) if not p.is_annotated(k))
    st = p.state(i)
    pts = np.random.default_rng(0).uniform(10, 100, (p.n_landmarks, 2))
    st.set_fit(pts, confidence=_confidence(p.n_landmarks, off=(3,), nme=0.042, failed=True))
    p.autosave(i)
    again = Project(wings_copy)
    assert again.fit_confidence(i) == (0.042, True)
    assert list(np.flatnonzero(again.state(i).uncertain)) == [3]


# -- in napari -----------------------------------------------------------------------------

@pytest.fixture
def trained(open_annotator, wings_copy, qtbot):
    """The annotation widget on 10 sample wings, 5 annotated, a calibrated GSM trained."""
    truth = hold_out(wings_copy, 5)
    w = open_annotator(wings_copy)
    w.train_btn.click()
    wait_idle(qtbot, w, timeout=120000)
    assert w.model is not None and w.model.confidence_note is None, w.status_label.text()
    return w, truth


def _with_known_confidence(w, off, nme=0.03, failed=False):
    """Fits go on as they are; their confidence says landmarks ``off`` are likely off."""
    real_fit = w.model.fit

    def fit(*args, **kwargs):
        res = real_fit(*args, **kwargs)
        assert res.confidence is not None  # the model's own, replaced by a known one
        known = _confidence(len(res.points), off, nme, failed)
        res.confidence = replace(res.confidence, p_off=known.p_off, error_px=known.error_px,
                                 nme=nme, failed=failed)
        return res

    w.model.fit = fit


def test_a_real_fit_carries_its_confidence_to_the_layer_and_the_list(trained, qtbot):
    w, _ = trained
    key(w.viewer, "G")
    wait_idle(qtbot, w)
    st, layer = w.project.state(), w.layers.points
    assert st.confidence is not None and (st.states == FITTED).all()
    f = layer.features
    np.testing.assert_allclose(f["p_off"], st.confidence.p_off[f["index"]])
    np.testing.assert_allclose(f["error_px"], st.confidence.error_px[f["index"]])
    row = w.image_list.currentItem()
    assert row.text().endswith(f"{100 * st.confidence.nme:.1f} %")
    assert "predicted NME" in row.toolTip()


def test_uncertain_landmarks_are_drawn_apart_and_named_with_their_error_on_hover(trained,
                                                                                 qtbot):
    w, _ = trained
    _with_known_confidence(w, off=(2, 7))
    viewer, layer = w.viewer, w.layers.points
    key(viewer, "G")
    wait_idle(qtbot, w)
    idx = np.asarray(layer.features["index"], int)
    odd = np.isin(idx, [2, 7])
    np.testing.assert_allclose(layer.border_color[odd], [uncertain_rgba()] * 2)
    assert not np.isclose(layer.border_color[~odd], uncertain_rgba()).all(1).any()
    base = layer.size[~odd][0]
    np.testing.assert_allclose(layer.size[odd], base * UNCERTAIN_SCALE)
    row = int(np.flatnonzero(idx == 7)[0])
    xy = layer.data[row][::-1]  # (row, col) -> (x, y)
    hover(viewer, xy)
    label = layer.features["label"].iloc[row]
    assert label.startswith(w.project.names[7]) and "\u00b19.0 px" in label
    assert "90 % likely off" in label


def _camera(viewer):
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera


def test_j_jumps_to_each_uncertain_landmark_and_a_drag_settles_it(trained, qtbot):
    w, _ = trained
    _with_known_confidence(w, off=(3, 9))
    viewer, layer = w.viewer, w.layers.points
    key(viewer, "G")
    wait_idle(qtbot, w)
    _camera(viewer).zoom *= 4  # zoomed in: the view has to move to show the landmark
    idx = np.asarray(layer.features["index"], int)
    # The two likely off first, then the next least confident (ties: landmark order), and
    # back: 3, 9, 0, 1, 2, 4, ... 11, 3.
    order = [3, 9] + [k for k in range(12) if k not in (3, 9)] + [3]
    for expected in order:
        key(viewer, "J")
        (row,) = layer.selected_data
        assert idx[row] == expected
        np.testing.assert_allclose(_camera(viewer).center[-2:], layer.data[row], atol=1e-6)
        assert w.project.names[expected] in w.status_label.text()
    # Dragging landmark 3 (centred on the canvas now) makes it the person's: J skips it.
    st = w.project.state()
    xy = st.points[3].copy()
    drag(viewer, xy, xy + 3.0)
    assert st.states[3] == PINNED and np.abs(st.points[3] - (xy + 3.0)).max() < 0.5
    assert list(np.flatnonzero(st.uncertain)) == [9]
    assert not np.isclose(layer.border_color[idx == 3], uncertain_rgba()).all()
    layer.selected_data = set()
    key(viewer, "J")
    (row,) = layer.selected_data
    assert np.asarray(layer.features["index"], int)[row] == 9
    assert "least confident #1" in w.status_label.text()


def test_the_list_sorts_worst_first_and_marks_failed_fits(trained, qtbot):
    w, _ = trained
    p = w.project
    todo = [i for i in range(len(p)) if not p.is_annotated(i)]
    w.fit_all()
    wait_idle(qtbot, w, timeout=120000)
    # A failed fit, as its confidence would say: the list marks it and puts it first.
    worst = todo[-1]
    st = p.state(worst)
    st.set_fit(st.points, confidence=_confidence(p.n_landmarks, off=range(8), nme=0.2,
                                                 failed=True))
    p.autosave(worst)
    w.worst_first_check.setChecked(True)
    settle()
    rows = [w._index_of_row(r) for r in range(w.image_list.count())]
    predicted = [p.fit_confidence(i)[0] for i in rows[:len(todo)]]
    assert rows[0] == worst and sorted(rows[:len(todo)]) == todo
    assert predicted[1:] == sorted(predicted[1:], reverse=True)
    assert all(not p.is_annotated(i) for i in rows[:len(todo)])
    first = w.image_list.item(0)
    assert first.text().startswith("\u2717 ") and "looks failed" in first.toolTip()
    click_list_row(w.image_list, 1)  # a click opens the image of that row, not row 1
    assert p.index == rows[1]
    w.worst_first_check.setChecked(False)
    assert [w._index_of_row(r) for r in range(w.image_list.count())] == list(range(len(p)))
    assert w.image_list.currentRow() == rows[1]


def test_the_fit_dock_gives_the_points_layer_the_confidence(make_napari_viewer, sample_data_root,
                                                          qtbot):
    """Fit an Image layer from the layer docks: the Points layer's features hold each
    landmark's p_off and error_px (what a fit of the calibrated model says), and the
    likely-off landmarks are larger magenta rings."""
    import napari_gsm as gsm
    from napari_gsm.io import load_dataset
    from napari_gsm.ui.layers_common import CONFIDENCE_KEY
    from napari_gsm.ui.menus import WIDGET_NAMES
    from napari_gsm.ui.session import SESSION

    wings = sample_data_root / "wings"
    data = load_dataset(wings)
    model = gsm.train([(it.load_image(), it.points) for it in data.annotated[:6]], "gsm",
                      params=gsm.TrainParams(features="grey"))
    assert model.confidence_note is None
    SESSION.entries.clear()
    entry = SESSION.add(model, label="six wings")
    viewer = make_napari_viewer(show=True)
    image_layer = viewer.open(data.annotated[7].image_path, plugin="napari")[0]
    fit = viewer.window.add_plugin_dock_widget("napari-gsm", WIDGET_NAMES["fit"])[1]
    fit.picker.reset_choices()
    assert fit.picker.entry is entry
    fit.image.value = image_layer
    fit.start.value = "learned prior"
    real_fit = model.fit
    calls = []

    def fit_with_two_off(*args, **kwargs):
        res = real_fit(*args, **kwargs)
        calls.append(res.confidence)
        p_off = res.confidence.p_off.copy()
        p_off[[1, 5]] = 0.95
        res.confidence = replace(res.confidence, p_off=p_off)
        return res

    model.fit = fit_with_two_off
    try:
        fit.fit_btn.native.click()
        qtbot.waitUntil(lambda: fit.worker is None and fit.run is None, timeout=60000)
        settle()
    finally:
        SESSION.entries.clear()
    layer = fit.output.value
    assert len(calls) == 1 and calls[0] is not None, fit.status.value
    f = layer.features
    ids = np.asarray(f["landmark"], int)
    expected = calls[0].p_off.copy()
    expected[[1, 5]] = 0.95
    np.testing.assert_allclose(f["p_off"], expected[ids], atol=1e-4)
    np.testing.assert_allclose(f["error_px"], calls[0].error_px[ids], atol=1e-3)
    odd = np.asarray(f["p_off"]) >= 0.5
    assert odd[np.isin(ids, [1, 5])].all()
    np.testing.assert_allclose(layer.border_color[odd], [uncertain_rgba()] * odd.sum())
    assert layer.size[odd].min() > layer.size[~odd].max()
    assert str(0) in layer.metadata[CONFIDENCE_KEY]
