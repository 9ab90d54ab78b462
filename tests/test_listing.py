"""The training images as compact arrays of file names (what a cluster's client keeps)."""

import numpy as np
import pytest

from napari_gsm.io import load_dataset, write_pts
from napari_gsm.listing import Listing
from napari_gsm.training import pick, positions


@pytest.fixture
def folders(tmp_path):
    import cv2

    out = []
    for f, (n, v) in enumerate([(3, 4), (2, 4)]):
        root = tmp_path / f"set{f}"
        root.mkdir()
        for i in range(n):
            cv2.imwrite(str(root / f"im{i}.png"), np.full((8 + i, 10), 50, np.uint8))
            write_pts(root / f"im{i}.pts", np.arange(2 * v).reshape(v, 2) + 10 * f + i)
        cv2.imwrite(str(root / "bare.png"), np.zeros((5, 5), np.uint8))  # not annotated
        out.append(root)
    return out


def test_samples_of_a_listing_read_their_own_landmarks_and_image(folders):
    listing = Listing.from_folders(folders)
    assert len(listing) == 5 and listing.counts().tolist() == [3, 2]
    expected = [it for f in folders for it in load_dataset(f).annotated]
    for k, (smp, it) in enumerate(zip(listing, expected)):
        assert smp.points is None and smp.grey is None and smp.index == k
        assert smp.name == str(it.image_path) and smp.path == it.image_path.absolute()
        np.testing.assert_array_equal(smp.with_points().points, it.points)
        assert smp.loaded().grey.shape == it.load_image().shape[:2]
    # a subset is a listing of those images, keeping their positions
    sub = pick(listing, [4, 1])
    assert isinstance(sub, Listing) and positions(sub).tolist() == [4, 1]
    np.testing.assert_array_equal(sub[0].with_points().points, expected[4].points)
    assert positions(listing[1:3]).tolist() == [1, 2]
    sized = listing.with_sizes([[8, 10], [9, 10], [10, 10], [8, 10], [9, 10]])
    assert sized[2].size == (10, 10) and pick(sized, [3])[0].size == (8, 10)


def test_a_listing_holds_a_few_bytes_per_image(folders):
    listing = Listing.from_folders(folders).with_sizes(np.zeros((5, 2), np.int32))
    assert listing.nbytes / len(listing) < 40  # names "im0.png", "im0.pts", folder, index, size


def test_datasets_list_like_their_folders_with_their_own_landmarks(folders):
    a = Listing.from_folders(folders)
    datasets = [load_dataset(f) for f in folders]
    datasets[1].item("im0").points = datasets[1].item("im0").points + 100  # not saved
    b = Listing.from_datasets(datasets)
    assert [s.name for s in a] == [s.name for s in b] and b.points.shape == (5, 4, 2)
    np.testing.assert_array_equal(b[3].with_points().points, a[3].with_points().points + 100)
    np.testing.assert_array_equal(pick(b, [4])[0].points, a[4].with_points().points)


def test_counts_must_agree(folders):
    write_pts(folders[1] / "im0.pts", np.zeros((5, 2)))
    write_pts(folders[1] / "im1.pts", np.zeros((5, 2)))
    with pytest.raises(ValueError, match="set1: 5 landmarks per image, but .*set0 has 4"):
        Listing.from_folders(folders)
