"""The whole annotation loop driven through the widget on a small wing project.

Open, place landmarks by clicking (Points.add, what a click in add mode calls), train in
the background, fit, move a point, re-fit with it pinned, undo, accept (+ backup), retrain,
cancel a training, fit all, export; files on disk are checked at each step.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from gui import wait_idle
from qtpy.QtCore import Qt

from napari_gsm.io import read_pts, read_tps
from napari_gsm.model import load_model
from napari_gsm.ui import batch_actions
from napari_gsm.ui._convert import layer_to_points, points_to_layer
from napari_gsm.ui.keys import SHORTCUTS
from napari_gsm.ui.project import CHECKED, FITTED, PINNED
from napari_gsm.ui.widget import AnnotationWidget

N_ANNOTATED = 3


def press(viewer, key):
    """Call what ``key`` is bound to on the viewer (as napari's key handler does)."""
    from napari.utils.key_bindings import coerce_keybinding

    viewer.keymap[coerce_keybinding(key)](viewer)


def key_of(action):
    return next(s.key for s in SHORTCUTS if s.action == action)


def _place_all(w, truth_xy, order):
    """Click the landmarks in ``order`` (guided: the widget decides which one each is)."""
    layer = w.points_layer
    for k in order:
        assert w.project.state().current == k
        layer.add(points_to_layer(truth_xy[[k]]))


def test_annotation_loop(widget, wing_project, tmp_path, qtbot, monkeypatch):
    w, (root, truth) = widget, wing_project
    viewer, p, layer = w.viewer, w.project, w.points_layer
    stems = p.stems
    v = p.n_landmarks
    assert v == 12 and w.image_list.count() == 10

    # -- open: first unannotated image shown, markers in the list --------------------
    assert p.index == N_ANNOTATED
    assert w.image_layer.data.shape[:2] == p.image().shape[:2]
    assert [w.image_list.item(i).checkState() == Qt.CheckState.Checked
            for i in range(10)] == [True] * N_ANNOTATED + [False] * 7
    assert "lm1" in w.target_label.text()
    assert layer.mode == "add"

    # -- annotate from scratch: skip landmark 2 (index 1), come back to it ------------
    stem = stems[3]
    t = truth[stem]
    _place_all(w, t, [0])
    press(viewer, key_of("skip_landmark"))
    _place_all(w, t, range(2, v))
    assert np.isnan(p.state().points[1]).all()
    np.testing.assert_array_equal(layer.features["index"], [k for k in range(v) if k != 1])
    np.testing.assert_array_equal(layer.features["name"], [f"lm{k + 1}" for k in range(v) if k != 1])
    draft = root / ".napari-gsm" / "drafts" / f"{stem}.pts"
    assert draft.exists()
    assert w.project.state().current == 1  # wraps round to the skipped one
    press(viewer, key_of("accept"))  # refused: lm2 is missing
    assert "lm2" in w.status_label.text() and not (root / f"{stem}.pts").exists()
    _place_all(w, t, [1])
    assert (layer.features["state"] == PINNED).all()
    assert layer.mode == "select"  # everything placed: ready to correct

    # Switching images keeps the edits (memory + draft); nothing is lost.
    press(viewer, key_of("next_image"))
    assert p.index == 4
    press(viewer, key_of("previous_image"))
    np.testing.assert_array_equal(layer_to_points(layer.data)[np.argsort(layer.features["index"])], t)

    press(viewer, key_of("accept"))
    np.testing.assert_array_equal(read_pts(root / f"{stem}.pts"), t)  # exact round trip
    assert not draft.exists()
    assert w.image_list.item(3).checkState() == Qt.CheckState.Checked
    assert p.index == 4 and len(layer.data) == 0  # no model yet: nothing fitted

    stem4 = stems[4]
    _place_all(w, truth[stem4], range(v))
    w.accept_btn.click()
    np.testing.assert_array_equal(read_pts(root / f"{stem4}.pts"), truth[stem4])
    assert p.n_annotated == 5 and p.index == 5

    # -- train in the background ----------------------------------------------------
    model_path = root / ".napari-gsm" / "model.npz"
    assert not model_path.exists()
    w.method_combo.setCurrentText("gsm")
    w.train()
    wait_idle(qtbot, w)
    assert model_path.exists() and w.model is not None, w.status_label.text()
    assert load_model(model_path).summary["n_images"] == 5
    assert w.model.features.kind == "grey"

    # -- fit the current image (learned prior start) --------------------------------
    stem5 = stems[5]
    w.start_combo.setCurrentIndex(3)  # learned prior
    assert w.start_combo.currentData() == "prior"
    assert not w.start_combo.model().item(1).isEnabled()  # no face detector in a wing model
    press(viewer, key_of("fit"))
    wait_idle(qtbot, w)
    assert len(layer.data) == v and (layer.features["state"] == FITTED).all()
    fitted = p.state().points.copy()
    assert np.isfinite(fitted).all()
    assert (layer.face_color[:, 3] == 0).all()  # fitted points are hollow
    assert (root / ".napari-gsm" / "drafts" / f"{stem5}.pts").exists()
    assert w.image_list.item(5).text().startswith("~")

    # -- move a point: it becomes pinned; re-fit holds it exactly ---------------------
    j = 4
    row = int(np.flatnonzero(layer.features["index"] == j)[0])
    moved_xy = truth[stem5][j] + [0.25, -0.5]
    data = layer.data.copy()
    data[row] = points_to_layer(moved_xy[None])[0]
    layer.data = data
    st = p.state()
    assert st.states[j] == PINNED and (st.states[np.arange(v) != j] == FITTED).all()
    assert layer.face_color[row, 3] == 1  # pinned: filled
    press(viewer, key_of("refit"))
    wait_idle(qtbot, w)
    np.testing.assert_array_equal(p.state().points[j], moved_xy)
    assert p.state().states[j] == PINNED
    refitted = p.state().points.copy()

    # -- undo / redo the re-fit and the move -----------------------------------------
    press(viewer, key_of("undo"))
    np.testing.assert_array_equal(p.state().points[np.arange(v) != j], fitted[np.arange(v) != j])
    press(viewer, key_of("undo"))
    np.testing.assert_array_equal(p.state().points, fitted)
    np.testing.assert_array_equal(layer_to_points(layer.data)[np.argsort(layer.features["index"])],
                                  fitted)
    press(viewer, key_of("redo"))
    press(viewer, key_of("redo"))
    np.testing.assert_array_equal(p.state().points, refitted)

    # -- accept: .pts on disk, model updated incrementally, next image fitted ----------
    w.accept_btn.click()
    wait_idle(qtbot, w)
    np.testing.assert_array_equal(read_pts(root / f"{stem5}.pts"), refitted)
    saved = load_model(model_path)
    assert saved.summary["n_updates"] == 1 and saved.summary["n_images"] == 6
    assert p.index == 6 and (p.state().states == FITTED).all()  # fitted on arrival
    assert (root / ".napari-gsm" / "drafts" / f"{stems[6]}.pts").exists()

    # Re-accepting a corrected annotation keeps the previous one as a backup.
    press(viewer, key_of("previous_image"))
    assert p.index == 5 and (layer.features["state"] == CHECKED).all()
    data = layer.data.copy()
    data[0] += 1.5
    layer.data = data
    press(viewer, key_of("accept"))
    wait_idle(qtbot, w)
    np.testing.assert_array_equal(read_pts(root / f"{stem5}.pts.~1~"), refitted)
    assert read_pts(root / f"{stem5}.pts")[0, 1] == refitted[0, 1] + 1.5
    assert load_model(model_path).summary["n_updates"] == 1  # not counted twice

    # -- retrain on 6 images; then a cancelled training leaves the model intact -------
    w.train()
    wait_idle(qtbot, w)
    assert load_model(model_path).summary["n_images"] == 6
    before = model_path.read_bytes()
    gate, real_train = threading.Event(), batch_actions.train

    def gated_train(*args, progress, **kw):
        def slow(*a):
            gate.wait(10)  # hold the first progress call until the test has cancelled
            progress(*a)
        return real_train(*args, progress=slow, **kw)

    monkeypatch.setattr(batch_actions, "train", gated_train)
    worker = w.train()
    w.cancel_btn.click()
    gate.set()
    wait_idle(qtbot, w)
    assert "cancelled" in w.status_label.text()
    assert model_path.read_bytes() == before
    assert not list((root / ".napari-gsm").glob("*.tmp*"))

    # -- fit all untouched unannotated images in the background -----------------------
    todo = p.fit_candidates()
    assert todo == [7, 8, 9]
    w.fit_all()
    wait_idle(qtbot, w)
    for i in todo:
        assert (root / ".napari-gsm" / "drafts" / f"{stems[i]}.pts").exists()
        assert p.status(i) == "fitted"

    # -- export ------------------------------------------------------------------------
    out = tmp_path / "export"
    written = w.export(out)
    assert len(written) == 7 and written[-1].suffix == ".tps"
    for f in written[:-1]:
        np.testing.assert_array_equal(read_pts(f), read_pts(root / f.name))
    heights = {s: p.image(i).shape[0] for i, s in enumerate(stems)}
    specs = read_tps(written[-1], image_height=lambda name: heights[name.rsplit(".", 1)[0]])
    assert [s.id for s in specs] == stems[:6]
    np.testing.assert_array_equal(specs[3].points, truth[stems[3]])


def test_new_project_without_any_annotation(make_napari_viewer, wings_copy):
    for pts in wings_copy.glob("*.pts"):
        pts.unlink()
    (wings_copy / "landmarks.txt").unlink(missing_ok=True)
    viewer = make_napari_viewer()
    w = AnnotationWidget(viewer)
    assert w.open_project(wings_copy) is None  # shown in the status line, not raised
    assert "number of landmarks is unknown" in w.status_label.text()
    assert w.open_project(wings_copy, n_landmarks=5) is not None
    assert w.project.n_landmarks == 5 and w.project.names == ["1", "2", "3", "4", "5"]


def test_box_start_names_toggle_and_restore(widget, wing_project, qtbot):
    w, (root, truth) = widget, wing_project
    viewer, p, layer = w.viewer, w.project, w.points_layer
    w.train()
    wait_idle(qtbot, w)
    # A box drawn in the Shapes layer around the true landmarks starts the fit.
    t = truth[p.item.stem]
    (x0, y0), (x1, y1) = t.min(0), t.max(0)
    w.draw_box()
    assert viewer.layers.selection.active is w.box_layer and w.box_layer.mode == "add_rectangle"
    rect = points_to_layer(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
    w.box_layer.add_rectangles(rect)  # drawn: the fit starts by itself
    assert w.current_box() == pytest.approx((x0, y0, x1, y1))
    wait_idle(qtbot, w)
    assert "from box" in w.status_label.text()
    err_box = np.sqrt(((p.state().points - t) ** 2).sum(1)).mean()
    assert err_box < 0.1 * (x1 - x0)  # a sensible fit, not a stray shape
    # Names are toggled by the key; the pin key pins the selected landmark.
    assert w.names_check.isChecked() and all(layer.features["label"] == layer.features["name"])
    press(viewer, key_of("toggle_names"))
    assert not w.names_check.isChecked() and not any(layer.features["label"])
    layer.selected_data = {2}
    k = int(layer.features["index"][2])
    press(viewer, key_of("toggle_pin"))
    assert p.state().states[k] == PINNED
    # A new widget on the same folder (as after a crash) restores the fitted draft.
    w2 = AnnotationWidget(viewer, project_dir=root)
    st2 = w2.project.state(p.index)
    np.testing.assert_array_equal(st2.points, p.state().points)
    assert st2.states[k] == PINNED
    assert w2.model is not None and w2.model.n_landmarks == 12


def test_shortcuts_bound_and_listed_and_plugin_menu(make_napari_viewer, wings_copy, qtbot):
    from napari.layers import Points, Shapes
    from napari.utils.key_bindings import coerce_keybinding

    viewer = make_napari_viewer()
    # Reached from the Plugins menu through the npe2 manifest, without a project yet.
    dock, w = viewer.window.add_plugin_dock_widget("napari-gsm", "Landmark annotation (GSM)")
    assert isinstance(w, AnnotationWidget) and w.project is None
    assert not w.accept_btn.isEnabled()
    layer_keys = {coerce_keybinding(k) for cls in (Points, Shapes) for k in cls.class_keymap}
    w.help_btn.click()
    assert w.shortcuts_dialog.isVisible()
    for s in SHORTCUTS:
        kb = coerce_keybinding(s.key)
        assert kb in viewer.keymap and kb not in layer_keys
        assert s.label in w.keys_label.text() and s.description in w.keys_label.text()
    assert len({coerce_keybinding(s.key) for s in SHORTCUTS}) == len(SHORTCUTS)
    press(viewer, key_of("next_image"))  # harmless without a project
    (wings_copy / ".napari-gsm").mkdir()
    (wings_copy / ".napari-gsm" / "model.npz").write_bytes(b"not a model")
    w.open_project(wings_copy)  # a broken model file does not keep the annotations shut
    assert w.model is None and "model not loaded" in w.status_label.text()
    assert w.project.n_annotated == 10 and w.project.index == 0
    assert w.names_check.isChecked()  # 12 landmarks: names shown
    # Closing a widget removes its keys, so they never call into a deleted widget.
    kb = coerce_keybinding(key_of("accept"))
    other = AnnotationWidget(viewer)
    assert viewer.keymap[kb].__name__ == "napari_gsm_accept"
    other.deleteLater()
    qtbot.waitUntil(lambda: kb not in viewer.keymap, timeout=5000)


def test_launch_docks_widget_with_project(make_napari_viewer, wings_copy):
    from napari_gsm.ui import launch
    from napari_gsm.ui.launch import find_widget

    viewer = make_napari_viewer()
    assert launch(wings_copy, viewer=viewer) is viewer
    w = find_widget(viewer)
    assert isinstance(w, AnnotationWidget) and w.project.root == wings_copy
    assert [layer.name for layer in viewer.layers] == [w.project.item.stem, "landmarks"]
    with pytest.raises(ValueError, match="could not open"):
        launch(wings_copy / "63002.pts", viewer=viewer)
    assert find_widget(viewer) is w  # the failed attempt left no second dock behind
