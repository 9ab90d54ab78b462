"""Tests for napari_gsm.io.dataset: dataset folders, names sidecar, counts."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from napari_gsm.io import LandmarkFileError, load_dataset, read_names, write_names, write_pts
from napari_gsm.io import dataset as dataset_module

# ../shared/data beside the repository (read-only; tests skip what is not there)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _img(path, shape, dtype=np.uint8):
    assert cv2.imwrite(str(path), np.full(shape, 7, dtype))


@pytest.fixture
def folder(tmp_path):
    _img(tmp_path / "b_grey.png", (10, 12))
    _img(tmp_path / "a_rgb.png", (10, 12, 3))
    _img(tmp_path / "c_rgba.png", (10, 12, 4))
    _img(tmp_path / "d_16.png", (10, 12), np.uint16)
    _img(tmp_path / "e_16.TIF", (10, 12, 3), np.uint16)
    _img(tmp_path / "f.tiff", (10, 12))
    pts = np.array([[1.0, 2.0], [3.0, 4.0], [5.5, 6.5]])
    write_pts(tmp_path / "a_rgb.pts", pts)
    write_pts(tmp_path / "d_16.pts", pts + 1)
    write_pts(tmp_path / "orphan.pts", pts)
    (tmp_path / "._a_rgb.png").write_bytes(b"mac resource fork")
    (tmp_path / "notes.txt").write_text("not part of the dataset")
    return tmp_path


def test_load_dataset(folder):
    ds = load_dataset(folder)
    assert ds.root == folder
    assert [it.stem for it in ds.items] == ["a_rgb", "b_grey", "c_rgba", "d_16", "e_16", "f"]
    assert [it.stem for it in ds.annotated] == ["a_rgb", "d_16"]
    assert [it.stem for it in ds.unannotated] == ["b_grey", "c_rgba", "e_16", "f"]
    assert ds.n_landmarks == 3 and ds.landmark_names is None
    assert ds.orphans == [folder / "orphan.pts"]
    a = ds.item("a_rgb")
    assert a.pts_path == folder / "a_rgb.pts" and a.image_path == folder / "a_rgb.png"
    np.testing.assert_array_equal(a.points, [[1, 2], [3, 4], [5.5, 6.5]])
    assert ds.item("b_grey").pts_path is None and ds.item("b_grey").points is None
    assert ds.item("b_grey").default_pts_path == folder / "b_grey.pts"
    with pytest.raises(KeyError):
        ds.item("zzz")


def test_load_image_per_kind(folder):
    ds = load_dataset(folder)
    shapes = {it.stem: (it.load_image().shape, it.load_image().dtype) for it in ds.items}
    assert shapes == {
        "a_rgb": ((10, 12, 3), np.uint8),
        "b_grey": ((10, 12), np.uint8),
        "c_rgba": ((10, 12, 4), np.uint8),
        "d_16": ((10, 12), np.uint16),
        "e_16": ((10, 12, 3), np.uint16),
        "f": ((10, 12), np.uint8),
    }


def test_load_does_not_decode_images(folder, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("decoded an image while loading")

    monkeypatch.setattr(dataset_module, "read_image", boom)
    monkeypatch.setattr(cv2, "imdecode", boom)
    monkeypatch.setattr(cv2, "imread", boom)
    assert len(load_dataset(folder).items) == 6


def test_count_mismatch_names_file_and_expected(folder):
    write_pts(folder / "f.pts", np.zeros((4, 2)))
    with pytest.raises(LandmarkFileError) as info:
        load_dataset(folder)
    assert info.value.path == str(folder / "f.pts")
    assert "has 4 points, expected 3" in str(info.value)
    ds = load_dataset(folder, strict=False)
    assert ds.item("f").points is None and ds.item("f").pts_path == folder / "f.pts"
    assert [e.path for e in ds.problems] == [str(folder / "f.pts")]


def test_malformed_pts_strict_and_lenient(folder):
    (folder / "b_grey.pts").write_text("version: 1\nn_points: 3\n{\n1 1\n}\n")
    with pytest.raises(LandmarkFileError) as info:
        load_dataset(folder)
    assert info.value.path == str(folder / "b_grey.pts") and info.value.line == 5
    ds = load_dataset(folder, strict=False)
    assert len(ds.annotated) == 2 and len(ds.problems) == 1


def test_names_sidecar(folder):
    (folder / "landmarks.txt").write_text("# wing landmarks\n\ntip\r\n  base  \n# end\nvein\n")
    ds = load_dataset(folder)
    assert ds.landmark_names == ["tip", "base", "vein"]
    (folder / "landmarks.txt").write_text("tip\nbase\n")
    with pytest.raises(LandmarkFileError, match="expected 2 .*landmarks.txt") as info:
        load_dataset(folder)
    assert info.value.path == str(folder / "a_rgb.pts")


def test_names_argument_list_and_path(folder, tmp_path_factory):
    ds = load_dataset(folder, names=["p", "q", "r"])
    assert ds.landmark_names == ["p", "q", "r"]
    with pytest.raises(LandmarkFileError, match="expected 4"):
        load_dataset(folder, names=["p", "q", "r", "s"])
    other = tmp_path_factory.mktemp("names")
    write_names(other, ["x", "y", "z"])
    assert load_dataset(folder, names=other / "landmarks.txt").landmark_names == ["x", "y", "z"]


def test_names_define_count_when_nothing_annotated(tmp_path):
    _img(tmp_path / "a.png", (5, 5))
    assert load_dataset(tmp_path).n_landmarks is None
    write_names(tmp_path, ["a", "b"])
    assert load_dataset(tmp_path).n_landmarks == 2


def test_write_names_round_trip_and_validation(tmp_path):
    p = write_names(tmp_path, ["left eye", "right eye", "nose #1"])
    assert p == tmp_path / "landmarks.txt"
    assert read_names(p) == ["left eye", "right eye", "nose #1"]
    for bad in ([], ["a\nb"], [" a"], ["#a"], ["a", "a"], [""]):
        with pytest.raises(ValueError):
            write_names(tmp_path, bad)
    write_names(tmp_path, ["x"])
    assert (tmp_path / "landmarks.txt.~1~").exists()


def test_bad_names_file(tmp_path):
    (tmp_path / "landmarks.txt").write_text("# only comments\n")
    with pytest.raises(LandmarkFileError, match="no landmark names"):
        load_dataset(tmp_path)
    (tmp_path / "landmarks.txt").write_text("a\nb\na\n")
    with pytest.raises(LandmarkFileError, match="duplicate"):
        load_dataset(tmp_path)


def test_duplicate_stems_refused(tmp_path):
    _img(tmp_path / "a.png", (5, 5))
    _img(tmp_path / "a.jpg", (5, 5))
    with pytest.raises(LandmarkFileError, match="stem"):
        load_dataset(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "nope")
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        load_dataset(tmp_path / "f")


def test_empty_folder(tmp_path):
    ds = load_dataset(tmp_path)
    assert ds.items == [] and ds.n_landmarks is None and ds.orphans == []


@pytest.mark.parametrize("sub, n", [("wings/train", 12), ("faces-300w/test-lfpw", 68)])
def test_real_300w_folders(sub, n):
    root = DATA / sub
    if not root.is_dir():
        pytest.skip(f"{root} not available")
    ds = load_dataset(root)
    assert ds.n_landmarks == n and len(ds.annotated) == len(ds.items) > 0
    assert ds.orphans == [] and ds.problems == []


def test_scan_annotated_lists_what_load_dataset_annotates_without_the_points(folder):
    from napari_gsm.io import scan_annotated

    names, v, images, pts = scan_annotated(folder)
    ds = load_dataset(folder)
    assert (names, v) == (ds.landmark_names, ds.n_landmarks)
    assert [n.decode() for n in images] == [it.image_path.name for it in ds.annotated]
    assert [n.decode() for n in pts] == [it.pts_path.name for it in ds.annotated]
    write_pts(folder / "f.pts", np.zeros((4, 2)))  # checked like load_dataset's strict
    with pytest.raises(LandmarkFileError, match="has 4 points, expected 3"):
        scan_annotated(folder)
