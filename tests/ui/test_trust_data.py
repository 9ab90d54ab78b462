"""Issue #16, data integrity: every edit goes to the image shown, nothing is silently lost.

Driven as a person drives napari: list rows clicked with the mouse, landmarks clicked and
boxes dragged on the canvas, keys pressed on the canvas.
"""

from __future__ import annotations

import re

import cv2
import numpy as np
from conftest import hold_out
from gui import click, click_list_row, drag, key, wait_idle

from napari_gsm.io import read_image, read_pts, to_grey

CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b")


def _row(w, stem):
    return w.project.stems.index(stem)


def test_a_click_never_lands_on_an_unreadable_image(open_annotator, wings_copy, qtbot):
    hold_out(wings_copy, 3)  # 63002, 63003, 63004 annotated
    (wings_copy / "63003b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    w = open_annotator(wings_copy)
    p, viewer = w.project, w.viewer
    # It would have been the first image to annotate: the next readable one is shown.
    assert p.item.stem == "63006" and w.image_layer.name == "63006"
    shown = w.image_layer.data.copy()

    click_list_row(w.image_list, _row(w, "63003b"))
    assert "63003b.jpg" in w.status_label.text() and "cannot decode" in w.status_label.text()
    # Canvas, list selection and the image edits go to still agree: the previous image.
    assert p.item.stem == "63006" and w.image_layer.name == "63006"
    np.testing.assert_array_equal(w.image_layer.data, shown)
    assert w.image_list.currentRow() == p.index
    assert w.image_list.item(_row(w, "63003b")).text().startswith("\u26a0")
    assert "cannot decode" in w.image_list.item(_row(w, "63003b")).toolTip()

    click(viewer, (100.0, 80.0))  # a person's next click on the canvas
    drafts = wings_copy / ".napari-gsm" / "drafts"
    assert not (drafts / "63003b.pts").exists()
    assert (drafts / "63006.pts").exists()
    np.testing.assert_allclose(p.state().points[0], (100.0, 80.0), atol=0.5)

    key(viewer, "Shift-N")  # back past the unreadable image
    assert p.item.stem == "63004" and "63003b" in w.status_label.text()


def test_a_start_box_belongs_to_one_image(widget, wing_project, qtbot):
    w, (root, truth) = widget, wing_project
    viewer, p = w.viewer, w.project
    w.train_btn.click()
    wait_idle(qtbot, w)
    first = p.item.stem
    w.box_btn.click()  # Draw box: the box start is chosen, the Shapes layer is active
    assert w.start_combo.currentData() == "box"
    lo, hi = truth[first].min(0), truth[first].max(0)
    drag(viewer, lo, hi)  # a rectangle around the wing: the fit starts when released
    wait_idle(qtbot, w)
    assert "from box" in w.status_label.text()
    assert np.isfinite(p.state().points).all()

    for k in range(p.n_landmarks):  # correct every landmark, so Accept can save
        p.state().set_point(k, truth[first][k])
    key(viewer, "Shift-Enter")
    wait_idle(qtbot, w)
    assert read_pts(root / f"{first}.pts").shape == (12, 2)
    second = p.item.stem
    assert second != first
    assert len(w.box_layer.data) == 0  # the old box is not drawn on the new image...
    assert not p.state().placed.any()  # ...and nothing was fitted from it
    assert "draw a rectangle" in w.status_label.text()
    assert viewer.layers.selection.active is w.box_layer and w.box_layer.mode == "add_rectangle"

    lo, hi = truth[second].min(0), truth[second].max(0)
    drag(viewer, lo, hi)
    wait_idle(qtbot, w)
    assert "from box" in w.status_label.text() and np.isfinite(p.state().points).all()
    key(viewer, "Shift-N")  # back to the first image: its own box comes back
    assert len(w.box_layer.data) == 1
    assert w.current_box() is not None and w.current_box()[0] < truth[first][:, 0].min() + 2


def test_a_broken_pts_is_named_marked_and_kept(open_annotator, wings_copy, qtbot, monkeypatch):
    broken = wings_copy / "63003.pts"
    broken.write_text("version: 1\nn_points: 12\n{\n1 2\n3 x\n")
    short = wings_copy / "63004.pts"
    short.write_text("version: 1\nn_points: 2\n{\n1 2\n3 4\n}\n")
    broken_bytes = broken.read_bytes()
    w = open_annotator(wings_copy)
    p, viewer = w.project, w.viewer
    status = w.status_label.text()
    assert "63003.pts" in status and "63004.pts" in status and "has 2 points" in status
    assert "need attention" in status and not CLASS_NAME.search(status)
    for stem in ("63003", "63004"):
        item = w.image_list.item(_row(w, stem))
        assert item.text().startswith("\u26a0") and ".pts" in item.toolTip()
    assert _row(w, "63003") not in p.fit_candidates()

    click_list_row(w.image_list, _row(w, "63003"))
    assert p.item.stem == "63003"
    truth = read_pts(wings_copy.parent / "wings" / "63002.pts")  # any 12 points on the image
    for xy in truth:
        click(viewer, xy)
    assert p.state().complete
    answers = []
    monkeypatch.setattr(w, "_confirm", lambda title, text: answers.append(text) or False)
    key(viewer, "Shift-Enter")
    assert answers and "63003.pts" in answers[0]
    assert broken.read_bytes() == broken_bytes  # untouched until the person decides
    assert "left as it is" in w.status_label.text()
    monkeypatch.setattr(w, "_confirm", lambda title, text: True)
    key(viewer, "Shift-Enter")
    wait_idle(qtbot, w)
    np.testing.assert_allclose(read_pts(broken), truth, atol=0.5)
    assert (wings_copy / "63003.pts.~1~").read_bytes() == broken_bytes  # the old one kept
    assert not w.image_list.item(_row(w, "63003")).text().startswith("\u26a0")


def test_fit_all_skips_bad_images_and_says_so(widget, wing_project, qtbot):
    w, (root, truth) = widget, wing_project
    (root / "broken.jpg").write_bytes(b"garbage")
    cv2.imwrite(str(root / "tiny.png"), np.zeros((1, 1), np.uint8))
    w.open_project(root)
    w.train_btn.click()
    wait_idle(qtbot, w)
    w.fit_all_btn.click()
    wait_idle(qtbot, w)
    status = w.status_label.text()
    assert "2 could not be fitted" in status and "broken" in status and "tiny" in status
    assert "image too small to fit: 1x1 pixels" in status
    assert not CLASS_NAME.search(status) and "shape (" not in status
    fitted = [s for s in w.project.stems if w.project.status(w.project.stems.index(s)) == "fitted"]
    assert len(fitted) == 7  # every readable unannotated wing
    assert "fitted 7 of 9" in status


def test_messages_are_for_people(widget, qtbot):
    w = widget
    key(w.viewer, "Shift-Enter")  # nothing placed yet
    assert "place every landmark" in w.status_label.text()
    assert not CLASS_NAME.search(w.status_label.text())
    key(w.viewer, "G")  # no model yet
    assert w.status_label.text().startswith("no model yet")


def test_rgba_images_are_shown_as_the_model_sees_them(open_annotator, wings_copy, qtbot):
    hold_out(wings_copy, 3)
    rgb = cv2.cvtColor(cv2.imread(str(wings_copy / "63006.jpg")), cv2.COLOR_BGR2RGB)
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, : rgb.shape[1] // 2] = 0  # the left half transparent
    rgba = np.dstack([rgb, alpha])
    (wings_copy / "63006.jpg").unlink()
    cv2.imwrite(str(wings_copy / "63006.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    w = open_annotator(wings_copy)
    assert w.project.item.stem == "63006"
    shown = np.asarray(w.image_layer.data)
    assert shown.shape == rgb.shape  # no alpha left for napari to blend
    assert not shown[:, : rgb.shape[1] // 2].any()  # transparent = black, as the model sees
    np.testing.assert_allclose(to_grey(shown), to_grey(rgba), atol=1 / 255)


def test_train_and_fit_all_on_a_dask_scheduler_give_the_same_model_and_drafts(
        widget, wing_project, qtbot):
    """The scheduler field under *More options*: Train and Fit all run on the cluster's
    workers; the model fits as the one trained here, every draft equals the in-process
    fit."""
    import logging

    from distributed import LocalCluster

    w, (root, truth) = widget, wing_project
    w.train_btn.click()
    wait_idle(qtbot, w)
    p = w.project
    todo = p.fit_candidates()
    model = w.model
    expected = {i: model.fit(read_image(p.items[i].image_path)).points for i in todo}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=logging.ERROR) as cluster:
        w.scheduler_edit.setText(cluster.scheduler_address)
        w.train_btn.click()
        assert f"on {cluster.scheduler_address}" in w.status_label.text()
        wait_idle(qtbot, w, timeout=120000)
        assert w.model is not model, w.status_label.text()
        for i in todo:
            np.testing.assert_allclose(w.model.fit(read_image(p.items[i].image_path)).points,
                                       expected[i], atol=1e-9)
        w.fit_all_btn.click()
        assert "on tcp://" in w.progress_bar.format()
        wait_idle(qtbot, w, timeout=120000)
    assert f"fitted {len(todo)} of {len(todo)}" in w.status_label.text(), w.status_label.text()
    for i in todo:
        assert p.status(i) == "fitted"
        np.testing.assert_allclose(p.state(i).points, expected[i], atol=1e-9)
