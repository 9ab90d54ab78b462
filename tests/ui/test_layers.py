"""Issue #12: train from Points layers, fit Image layers (2D and stacks), save to a training
set, from napari's own readers, docks and menus, as a person does it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from gui import drag, settle

from napari_gsm.io import load_dataset, read_image, read_pts
from napari_gsm.ui.colours import landmark_colours
from napari_gsm.ui.layers_common import landmarks_of
from napari_gsm.ui.menus import WIDGET_NAMES
from napari_gsm.ui.session import SESSION

PLUGIN = "napari-gsm"


@pytest.fixture(autouse=True)
def fresh_session():
    SESSION.entries.clear()
    yield
    SESSION.entries.clear()


def _dock(viewer, which):
    return viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET_NAMES[which])[1]


def _wait(qtbot, widget, timeout=60000):
    qtbot.waitUntil(lambda: getattr(widget, "run", None) is None
                    and getattr(widget, "worker", None) is None, timeout=timeout)
    settle()


def _error(found, truth):
    return float(np.linalg.norm(found - truth, axis=1).mean())


def test_layers_loop_with_napari_readers(make_napari_viewer, sample_data_root, tmp_path, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    wings = sample_data_root / "wings"
    stems = ["63002", "63003", "63004", "63006"]
    truth = {s: read_pts(wings / f"{s}.pts") for s in stems}
    for s in stems:
        viewer.open(wings / f"{s}.jpg", plugin="napari")  # napari's own image reader
    # A person clicked the landmarks of three images with the Points tool: layers made with
    # add_points; two with landmark identities, one in click order only.
    viewer.add_points(truth["63002"][:, ::-1], name="63002 landmarks",
                      features={"landmark": np.arange(12)})
    order = np.random.default_rng(0).permutation(12)
    viewer.add_points(truth["63003"][order, ::-1], name="63003 landmarks",
                      features={"landmark": order})
    viewer.add_points(truth["63004"][:, ::-1], name="63004 landmarks")

    train = _dock(viewer, "train")
    train.all_pairs.value = True
    train.features.value = "grey"
    train.train_btn.native.click()
    _wait(qtbot, train)
    assert SESSION.latest is not None, train.status.value
    assert "3 frames" in train.status.value
    model = SESSION.latest.model
    assert model.summary["n_images"] == 3 and model.n_landmarks == 12

    fit = _dock(viewer, "fit")
    assert fit.picker.entry is SESSION.latest and "12 landmarks" in fit.picker.info.value
    fit.image.value = viewer.layers["63006"]
    fit.start.value = "learned prior"
    fit.fit_btn.native.click()
    _wait(qtbot, fit)
    out = viewer.layers["63006 landmarks"]
    assert fit.output.value is out and len(out.data) == 12
    np.testing.assert_array_equal(out.features["landmark"], np.arange(12))
    np.testing.assert_allclose(out.face_color, landmark_colours(np.arange(12)), atol=1e-6)
    first = landmarks_of(out, viewer.layers["63006"]).frames[0]
    assert _error(first, truth["63006"]) < 15, "a fit from the prior lands on the wing"

    # Move landmark 4 to its true place with the mouse, re-fit from the layer's points:
    # the moved point is held, the others follow.
    viewer.layers.selection.active = out
    out.mode = "select"
    drag(viewer, first[4], truth["63006"][4])
    moved = landmarks_of(out, viewer.layers["63006"]).frames[0][4]
    fit.start.value = "output layer's points"
    fit.fit_btn.native.click()
    _wait(qtbot, fit)
    again = landmarks_of(out, viewer.layers["63006"]).frames[0]
    np.testing.assert_allclose(again[4], moved, atol=1e-9)
    assert len(viewer.layers) == 8  # updated in place, no new layer

    save = _dock(viewer, "save")
    save.image.value = viewer.layers["63006"]
    save.points.value = out
    save.folder.value = tmp_path / "training"
    written = save.save()
    _wait(qtbot, save)
    assert [p.name for p in written] == ["63006.png", "63006.pts"]
    np.testing.assert_allclose(read_pts(written[1]), again, atol=1e-4)
    np.testing.assert_array_equal(read_image(written[0]), viewer.layers["63006"].data)
    assert model.summary["n_images"] == 4 and model.summary["n_updates"] == 1
    assert "updated" in save.status.value
    # Saving again keeps the first annotation as a backup; the folder is a dataset.
    save.save()
    _wait(qtbot, save)
    assert (tmp_path / "training" / "63006.pts.~1~").exists()
    assert len(load_dataset(tmp_path / "training").annotated) == 1


def _moving_stack(image, truth, n_frames, seed=0):
    """A (T, H, W) stack: ``image`` under a smooth small similarity motion, and its
    landmarks moved the same way."""
    rng = np.random.default_rng(seed)
    h, w = image.shape
    centre = truth.mean(0)
    frames, marks = [], []
    angle = scale = 0.0
    shift = np.zeros(2)
    for _ in range(n_frames):
        angle += rng.normal(0, 0.01)
        scale += rng.normal(0, 0.01)
        shift += rng.normal(0, 1.0, 2)
        M = cv2.getRotationMatrix2D(tuple(centre), np.degrees(angle), np.exp(scale))
        M[:, 2] += shift
        frames.append(cv2.warpAffine(image, M, (w, h), borderMode=cv2.BORDER_REFLECT))
        marks.append(truth @ M[:, :2].T + M[:, 2])
    return np.stack(frames), np.stack(marks)


def test_track_a_stack(make_napari_viewer, sample_data_root, qtbot):
    wings = sample_data_root / "wings"
    image = read_image(wings / "63002.jpg")  # a grey image
    stack, marks = _moving_stack(image, read_pts(wings / "63002.pts"), 12)
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(stack, name="wing video")
    annotated = [0, 5, 10]
    rows = np.vstack([np.column_stack([np.full(12, t), marks[t][:, ::-1]]) for t in annotated])
    # An incomplete frame (a person stopped half-way) is skipped and counted.
    rows = np.vstack([rows, np.column_stack([np.full(5, 7), marks[7][:5, ::-1]])])
    ids = np.concatenate([np.tile(np.arange(12), 3), np.arange(5)])
    viewer.add_points(rows, name="wing video landmarks", features={"landmark": ids})

    train = _dock(viewer, "train")
    train.features.value = "grey"
    assert train.image.value is layer  # paired by name
    train.train_btn.native.click()
    _wait(qtbot, train)
    assert "3 frames" in train.status.value and "1 incomplete frame(s) skipped" in train.status.value

    fit = _dock(viewer, "fit")
    fit.image.value = layer
    fit.start.value = "learned prior"
    fit.scope.value = "all frames"
    fit.fit_btn.native.click()
    _wait(qtbot, fit)
    per_frame = landmarks_of(fit.output.value, layer).frames
    viewer.layers.remove(fit.output.value)
    fit.output.value = None

    viewer.dims.set_current_step(0, 0)
    fit.scope.value = "track from current frame"
    fit.fit_btn.native.click()
    _wait(qtbot, fit)
    tracked = landmarks_of(fit.output.value, layer).frames
    assert sorted(tracked) == list(range(12)) and "tracked 12 frames" in fit.status.value
    err_frame = np.array([_error(per_frame[t], marks[t]) for t in range(12)])
    err_track = np.array([_error(tracked[t], marks[t]) for t in range(12)])
    assert err_track.mean() <= 1.5 * err_frame.mean(), (err_track, err_frame)
    size = np.linalg.norm(marks[0] - marks[0].mean(0), axis=1).mean()
    assert err_track.max() < 0.1 * size, "no frame loses the shape"


def test_menus_offer_and_run_the_layer_actions(make_napari_viewer, sample_data_root, qtbot):
    from napari._app_model import get_app_model

    viewer = make_napari_viewer(show=True)
    wings = sample_data_root / "wings"
    for s in ("63002", "63003"):
        viewer.open(wings / f"{s}.pts", plugin=PLUGIN)  # image + landmarks layers
    app = get_app_model()
    menus = {menu: [getattr(item, "command", None) for item in app.menus.get_menu(menu)]
             for menu in ("napari/layers/annotate", "napari/layers/track",
                          "napari/layers/context")}
    ids = {menu: {c.id for c in cmds if c is not None} for menu, cmds in menus.items()}
    assert {"napari-gsm.train_from_layers", "napari-gsm.fit_image_layer",
            "napari-gsm.save_to_training_set"} <= ids["napari/layers/annotate"]
    assert "napari-gsm.track_image_layer" in ids["napari/layers/track"]
    assert {"napari-gsm.fit_image_layer", "napari-gsm.train_from_layers"} <= \
        ids["napari/layers/context"]

    viewer.layers.selection.active = viewer.layers["63002"]  # right-click: train
    app.commands.execute_command("napari-gsm.train_from_layers").result()
    train = _dock(viewer, "train")
    assert train.points.value is viewer.layers["63002"] and train.image.value.name == "63002.jpg"
    train.all_pairs.value = True
    train.features.value = "grey"
    train.train_btn.native.click()
    _wait(qtbot, train)
    assert SESSION.latest is not None, train.status.value

    viewer.layers.selection.active = viewer.layers["63003.jpg"]  # right-click: fit
    app.commands.execute_command("napari-gsm.fit_image_layer").result()
    fit = _dock(viewer, "fit")
    _wait(qtbot, fit)
    assert fit.image.value is viewer.layers["63003.jpg"]
    assert fit.output.value is not None and len(fit.output.value.data) == 12, fit.status.value


def test_layer_errors_are_named(make_napari_viewer, sample_data_root, qtbot):
    viewer = make_napari_viewer()
    wings = sample_data_root / "wings"
    viewer.open(wings / "63002.jpg", plugin="napari")
    truth = read_pts(wings / "63002.pts")
    viewer.add_points(truth[:, ::-1], name="clicked", features={"landmark": [0] * 12})
    train = _dock(viewer, "train")
    train.train_btn.native.click()
    assert "'clicked'" in train.status.value and "frame 0" in train.status.value
    fit = _dock(viewer, "fit")
    fit.fit_btn.native.click()
    assert fit.status.value.startswith("no model")


def test_a_person_annotates_a_stack_with_napari_tools(make_napari_viewer, sample_data_root,
                                                      tmp_path, qtbot):
    """A TIFF stack opened with napari's reader, a new Points layer from the layer list's
    button, landmarks clicked frame by frame with the mouse, then train, track, correct a
    point by dragging, re-fit around it, save the frames to a training set and export."""
    import tifffile
    from gui import click

    from napari_gsm.io import read_pts as read

    wings = sample_data_root / "wings"
    stack, marks = _moving_stack(read_image(wings / "63003.jpg"), read(wings / "63003.pts"), 10,
                                 seed=1)
    tifffile.imwrite(tmp_path / "wing.tif", stack)
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    image = viewer.open(tmp_path / "wing.tif", plugin="napari")[0]
    assert image.data.shape == stack.shape
    viewer.window._qt_viewer.layerButtons.newPointsButton.click()
    points = viewer.layers[-1]
    points.mode = "add"
    for t in (0, 4, 8):
        viewer.dims.set_current_step(0, t)
        for xy in marks[t]:
            click(viewer, xy)
    assert len(points.data) == 36 and set(points.data[:, 0]) == {0, 4, 8}

    train = _dock(viewer, "train")
    train.features.value = "grey"
    train.image.value, train.points.value = image, points
    train.train_btn.native.click()
    _wait(qtbot, train)
    assert "3 frames" in train.status.value, train.status.value

    fit = _dock(viewer, "fit")
    fit.image.value = image
    viewer.dims.set_current_step(0, 0)
    fit.start.value = "learned prior"
    fit.scope.value = "track from current frame"
    fit.fit_btn.native.click()
    _wait(qtbot, fit)
    out = fit.output.value
    tracked = landmarks_of(out, image).frames
    assert sorted(tracked) == list(range(10)), fit.status.value
    size = np.linalg.norm(marks[0] - marks[0].mean(0), axis=1).mean()
    assert max(_error(tracked[t], marks[t]) for t in range(10)) < 0.1 * size

    # Frame 6: drag landmark 2 onto its truth, re-fit from the layer's points around it.
    viewer.dims.set_current_step(0, 6)
    viewer.layers.selection.active = out
    out.mode = "select"
    drag(viewer, tracked[6][2], marks[6][2])
    moved = landmarks_of(out, image).frames[6][2]
    fit.start.value = "output layer's points"
    fit.scope.value = "current frame"
    fit.fit_btn.native.click()
    _wait(qtbot, fit)
    np.testing.assert_allclose(landmarks_of(out, image).frames[6][2], moved, atol=1e-9)

    save = _dock(viewer, "save")
    save.image.value, save.points.value = image, out
    save.folder.value = tmp_path / "training"
    save.frames.value = "every complete frame"
    written = save.save()
    _wait(qtbot, save)
    assert len(written) == 20 and written[0].name == "wing_t0000.png"
    data = load_dataset(tmp_path / "training")
    assert len(data.annotated) == 10
    np.testing.assert_array_equal(read_image(tmp_path / "training" / "wing_t0006.png"), stack[6])
    exported = save.export()
    assert [p.name for p in exported][:2] == ["wing_t0000.pts", "wing_t0001.pts"]
    np.testing.assert_allclose(read(exported[6])[2], moved, atol=1e-4)


def test_both_training_docks_offer_signed_hog_first(make_napari_viewer):
    """A person who changes nothing trains the default features (signed HoG) from either
    dock; the unsigned HoG and grey stay one choice away."""
    from napari_gsm.ui.widget import AnnotationWidget

    viewer = make_napari_viewer()
    layers_dock = _dock(viewer, "train")
    annotator = AnnotationWidget(viewer)
    assert layers_dock.features.value == "hog-signed"
    assert annotator.features_combo.currentText() == "hog-signed"
    assert set(layers_dock.features.choices) == {"hog-signed", "hog", "grey"}
    assert annotator.train_settings()[1].signed
