"""The bundled sample data and its napari sample-data contributions."""

from __future__ import annotations

import numpy as np
import pytest

from napari_gsm.io import load_dataset, read_names, read_pts
from napari_gsm.ui._convert import points_to_layer
from napari_gsm.ui.sample_data import first_item_pts, sample_data_dir

EXPECTED = {"faces": (12, 68), "wings": (10, 12)}


def test_sample_data_dir_is_the_repository_folder(sample_data_root):
    assert sample_data_dir().resolve() == sample_data_root.resolve()


@pytest.mark.parametrize("subset", sorted(EXPECTED))
def test_sample_folders_are_complete_datasets(subset):
    n_images, n_landmarks = EXPECTED[subset]
    dataset = load_dataset(sample_data_dir() / subset)
    assert len(dataset.items) == n_images and len(dataset.annotated) == n_images
    assert dataset.n_landmarks == n_landmarks
    names = read_names(sample_data_dir() / subset / "landmarks.txt")
    assert len(names) == n_landmarks == len(set(names))
    for item in dataset.items:
        assert item.image_path.stat().st_size < 60_000
        assert np.isfinite(item.points).all()


def test_sample_readme_states_sources_and_licences():
    text = (sample_data_dir() / "README.md").read_text()
    for needle in ("300-W", "Sagonas", "non-commercial", "Houle", "Morphbank", "CC BY-NC-SA",
                   "hare-alike"):
        assert needle in text


def test_face_names_follow_ibug_68():
    names = read_names(sample_data_dir() / "faces" / "landmarks.txt")
    assert names[0] == "jaw_1" and names[16] == "jaw_17" and names[17] == "right_brow_1"
    assert names[27] == "nose_bridge_1" and names[36] == "right_eye_1" and names[42] == "left_eye_1"
    assert names[48] == "mouth_outer_1" and names[60] == "mouth_inner_1" and names[-1] == "mouth_inner_8"


@pytest.mark.parametrize(("key", "subset"), [("face", "faces"), ("wing", "wings")])
def test_open_sample(make_napari_viewer, key, subset):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-gsm", key)
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image", "Points"]
    image, points = viewer.layers
    pts = first_item_pts(subset)
    np.testing.assert_array_equal(points.data, points_to_layer(read_pts(pts)))
    assert points.name == pts.stem
    assert points.metadata["image_height"] == image.data.shape[0]
    assert len(points.features["name"]) == EXPECTED[subset][1]
    # really rendered (Xvfb + Mesa): the canvas shows the image, not a blank frame
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.shape[-1] == 4 and float(shot[..., :3].std()) > 10.0
