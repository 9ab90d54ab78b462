"""napari reader/writer of napari-gsm, through a real napari viewer (headless, Xvfb)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_gsm.io import LandmarkFileError, TpsSpecimen, read_pts, read_tps, write_pts, write_tps
from napari_gsm.ui._convert import layer_to_points, points_to_layer
from napari_gsm.ui.reader import LANDMARK_COLOR_CYCLE, get_reader
from napari_gsm.ui.writer import LayerWriteError, write_pts_layer, write_tps_layer

PLUGIN = "napari-gsm"


def _write_png(path: Path, h: int, w: int) -> Path:
    import cv2

    img = np.zeros((h, w, 3), np.uint8)
    img[..., 1] = 200
    assert cv2.imwrite(str(path), img)
    return path


def _pts_numbers(path: Path) -> list[list[float]]:
    """The coordinate lines of a .pts file, as numbers (independent of the io parser)."""
    lines = path.read_text().splitlines()
    body = lines[lines.index("{") + 1 : lines.index("}")]
    return [[float(t) for t in ln.split()] for ln in body]


def _exceptions_in_chain(exc: BaseException) -> list[BaseException]:
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


# -- the one conversion -----------------------------------------------------------------


def test_convert_swaps_axes_without_offset():
    xy = np.array([[0.0, 0.0], [4.0, 1.0], [2.5, 7.25]])
    rc = points_to_layer(xy)
    np.testing.assert_array_equal(rc, [[0, 0], [1, 4], [7.25, 2.5]])
    np.testing.assert_array_equal(layer_to_points(rc), xy)
    assert points_to_layer(np.empty((0, 2))).shape == (0, 2)
    with pytest.raises(ValueError):
        points_to_layer(np.zeros((3, 3)))


def test_open_handwritten_pts_exact_coordinates(make_napari_viewer, tmp_path):
    """`1 1` is the centre of the top-left pixel = napari (0, 0); x is the column."""
    pts = tmp_path / "two.pts"
    pts.write_text("version: 1\nn_points: 2\n{\n1 1\n5 2\n}\n")
    _write_png(tmp_path / "two.png", 6, 8)
    viewer = make_napari_viewer(show=True)
    layers = viewer.open(pts, plugin=PLUGIN)
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image", "Points"]
    image, points = viewer.layers
    assert image.data.shape == (6, 8, 3) and image.rgb
    assert points.name == "two" and layers[-1] is points
    np.testing.assert_array_equal(points.data, [[0, 0], [1, 4]])
    assert list(points.features["landmark"]) == [0, 1]
    assert list(points.features["name"]) == ["1", "2"]
    assert points.metadata["image_height"] == 6
    assert points.text.visible is False


def test_save_layer_writes_one_based_x_y(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = viewer.add_points([[2.0, 3.0]])  # row 2, col 3 -> x=3, y=2 -> file "4 3"
    out = tmp_path / "one.pts"
    written = layer.save(str(out), plugin=PLUGIN)
    assert [Path(p) for p in written] == [out]
    assert _pts_numbers(out) == [[4.0, 3.0]]
    np.testing.assert_array_equal(read_pts(out), [[3.0, 2.0]])


# -- .pts through napari ---------------------------------------------------------------


def test_pts_round_trip_through_napari_with_backup(make_napari_viewer, faces_copy):
    src = sorted(faces_copy.glob("*.pts"))[1]
    original = read_pts(src)
    viewer = make_napari_viewer(show=True)
    viewer.open(src, plugin=PLUGIN)
    points = viewer.layers[src.stem]
    assert isinstance(viewer.layers[0].data, np.ndarray) and viewer.layers[0].name == src.stem + ".jpg"
    # names from landmarks.txt, colours cycle over the landmark index
    assert points.features["name"][0] == "jaw_1" and points.features["name"][67] == "mouth_inner_8"
    from napari.utils.colormaps.standardize_color import transform_color

    for i in (0, 1, 11, 12, 67):
        np.testing.assert_allclose(points.face_color[i],
                                   transform_color(LANDMARK_COLOR_CYCLE[i % len(LANDMARK_COLOR_CYCLE)])[0])
    # save a copy: exact round trip
    copy = faces_copy / "copy.pts"
    written = points.save(str(copy), plugin=PLUGIN)
    assert written == [str(copy)]
    np.testing.assert_array_equal(read_pts(copy), original)
    # overwrite the source after moving a point: new content, old one kept as a backup
    points.data = points.data + np.array([1.0, 0.0])
    written = points.save(str(src), plugin=PLUGIN)
    assert written == [str(src)]
    np.testing.assert_array_equal(read_pts(src), original + np.array([0.0, 1.0]))
    backups = [p for p in faces_copy.iterdir() if p.name.startswith(src.name) and p != src]
    assert len(backups) == 1
    np.testing.assert_array_equal(read_pts(backups[0]), original)


def test_save_selected_layer_via_layerlist(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_points([[1.5, 2.5], [10.0, 20.0]], name="lm")
    viewer.layers.selection = {viewer.layers["lm"]}
    out = tmp_path / "sel.pts"
    written = viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    assert [Path(p) for p in written] == [out]
    np.testing.assert_array_equal(read_pts(out), [[2.5, 1.5], [20.0, 10.0]])


def test_malformed_pts_surfaces_landmark_file_error(make_napari_viewer, tmp_path):
    bad = tmp_path / "bad.pts"
    bad.write_text("version: 1\nn_points: 2\n{\n1 1\n5 oops\n}\n")
    reader = get_reader(str(bad))
    assert reader is not None  # we claim the file...
    with pytest.raises(LandmarkFileError) as info:  # ...and say what is wrong with it
        reader(str(bad))
    assert "bad.pts" in str(info.value) and info.value.line == 5
    viewer = make_napari_viewer()
    with pytest.raises(Exception) as info:
        viewer.open(bad, plugin=PLUGIN)
    assert any(isinstance(e, LandmarkFileError) for e in _exceptions_in_chain(info.value))
    assert len(viewer.layers) == 0


@pytest.mark.parametrize("kind", ["txt", "png", "empty_dir", "images_only_dir", "missing", "pts_dir"])
def test_reader_declines_what_it_does_not_take(tmp_path, kind):
    if kind == "txt":
        path = tmp_path / "notes.txt"
        path.write_text("1 1\n")
    elif kind == "png":
        path = _write_png(tmp_path / "a.png", 4, 4)
    elif kind == "empty_dir":
        path = tmp_path / "empty"
        path.mkdir()
    elif kind == "images_only_dir":
        path = tmp_path / "imgs"
        path.mkdir()
        _write_png(path / "a.png", 4, 4)
        (path / "b.pts").write_text("version: 1\nn_points: 1\n{\n1 1\n}\n")  # not same-stem
    elif kind == "missing":
        path = tmp_path / "nothing.pts"
    else:  # a folder named like a landmark file
        path = tmp_path / "x.pts"
        path.mkdir()
    assert get_reader(str(path)) is None


# -- .tps ---------------------------------------------------------------------------------


def test_open_tps_one_layer_per_specimen(make_napari_viewer, tmp_path):
    _write_png(tmp_path / "a.png", 20, 30)
    _write_png(tmp_path / "b.png", 40, 10)
    pa = np.array([[1.0, 2.0], [10.0, 15.0]])
    pb = np.array([[3.0, 4.0], [5.0, 30.5]])
    tps = tmp_path / "two.tps"
    write_tps(tps, [TpsSpecimen(points=pa, image="a.png", id="first", image_height=20),
                    TpsSpecimen(points=pb, image="b.png", image_height=40)])
    viewer = make_napari_viewer(show=True)
    viewer.open(tps, plugin=PLUGIN)
    names = [layer.name for layer in viewer.layers]
    assert names == ["a.png", "first", "b.png", "b"]
    np.testing.assert_array_equal(viewer.layers["first"].data, points_to_layer(pa))
    np.testing.assert_array_equal(viewer.layers["b"].data, points_to_layer(pb))
    assert viewer.layers["b"].metadata["image_height"] == 40
    assert viewer.layers["first"].visible and not viewer.layers["b"].visible


def test_tps_writer_round_trip_and_needs_height(make_napari_viewer, faces_copy, tmp_path):
    src = sorted(faces_copy.glob("*.pts"))[0]
    original = read_pts(src)
    viewer = make_napari_viewer(show=True)
    viewer.open(src, plugin=PLUGIN)
    points = viewer.layers[src.stem]
    out = faces_copy / "one.tps"
    assert points.save(str(out), plugin=PLUGIN) == [str(out)]
    (spec,) = read_tps(out)
    np.testing.assert_array_equal(spec.points, original)
    assert spec.image == src.stem + ".jpg" and spec.id == src.stem
    # a layer without image_height cannot be saved as TPS, with a clear message
    bare = viewer.add_points([[1.0, 2.0]], name="bare")
    with pytest.raises(Exception) as info:
        bare.save(str(tmp_path / "bare.tps"), plugin=PLUGIN)
    assert any("image_height" in str(e) for e in _exceptions_in_chain(info.value))
    assert not (tmp_path / "bare.tps").exists()
    with pytest.raises(LayerWriteError, match="image_height"):
        write_tps_layer(str(tmp_path / "bare.tps"), np.array([[1.0, 2.0]]), {"name": "bare"})


# -- dataset folders --------------------------------------------------------------------


def test_open_dataset_folder(make_napari_viewer, wings_copy):
    (wings_copy / "99999.jpg").write_bytes((wings_copy / "63002.jpg").read_bytes())  # unannotated
    viewer = make_napari_viewer(show=True)
    viewer.open(wings_copy, plugin=PLUGIN)
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image", "Points"]
    image, points = viewer.layers
    assert points.name == "63002"
    np.testing.assert_array_equal(points.data, points_to_layer(read_pts(wings_copy / "63002.pts")))
    for layer in (image, points):
        assert layer.metadata["napari_gsm_dataset"] == str(wings_copy)
        assert layer.metadata["napari_gsm_stem"] == "63002"
    assert list(points.features["name"]) == [f"lm{i}" for i in range(1, 13)]


def test_writer_functions_directly(tmp_path):
    out = tmp_path / "d.pts"
    assert write_pts_layer(str(out), np.array([[0.0, 0.0]]), {"name": "d"}) == [str(out)]
    assert _pts_numbers(out) == [[1.0, 1.0]]
    out_tps = tmp_path / "d.tps"
    meta = {"name": "d", "metadata": {"image_height": 10}}
    assert write_tps_layer(str(out_tps), np.array([[2.0, 3.0]]), meta) == [str(out_tps)]
    (spec,) = read_tps(out_tps, image_height=10)
    np.testing.assert_array_equal(spec.points, [[3.0, 2.0]])


def test_get_reader_accepts_dataset_with_copy(tmp_path, sample_data_root):
    folder = tmp_path / "ds"
    folder.mkdir()
    for suffix in (".jpg", ".pts"):
        shutil.copy(sample_data_root / "wings" / f"63003{suffix}", folder)
    assert get_reader(str(folder)) is not None
    assert get_reader([str(folder / "63003.pts")]) is not None
