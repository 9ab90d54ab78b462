"""The benchmark harness's caches: what they are keyed by."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import _common as C  # noqa: E402


class _CountingDetector:
    """A face detector whose box is the brightest pixel's position (one per image)."""

    def __init__(self):
        self.calls = 0

    def detect(self, grey):
        self.calls += 1
        y, x = np.unravel_index(np.argmax(grey), grey.shape)
        return np.array([[x - 5.0, y - 5.0, x + 5.0, y + 5.0]])


def test_face_boxes_are_cached_per_image_not_per_file_name(tmp_path):
    """Two folders with an ``image_0001.jpg`` each (300-W's train and LFPW test do: 200 file
    names of different images) get their own boxes, and the cache survives a reload."""
    from napari_gsm.io import load_dataset

    for folder, x in (("train", 10), ("test", 30)):
        (tmp_path / folder).mkdir()
        img = np.zeros((40, 50), np.uint8)
        img[20, x] = 255
        cv2.imwrite(str(tmp_path / folder / "image_0001.png"), img)
        (tmp_path / folder / "image_0001.pts").write_text(
            "version: 1\nn_points: 3\n{\n1 1\n2 2\n3 1\n}\n")
    samples = [C.load_samples(load_dataset(tmp_path / f).annotated)[0]
               for f in ("train", "test")]
    assert samples[0].name != samples[1].name
    det = _CountingDetector()
    cache = C.BoxCache(tmp_path / "boxes.json", detector=det)
    boxes = [cache.get(s)[0] for s in samples]
    assert (boxes[0][0] + 5, boxes[1][0] + 5) == (10, 30) and det.calls == 2
    cache.save()
    again = C.BoxCache(tmp_path / "boxes.json", detector=det)
    np.testing.assert_array_equal(again.get(samples[1])[0], boxes[1])
    assert det.calls == 2


@pytest.mark.skipif(not (C.DATA / "faces-300w/train").is_dir(), reason="no shared data")
def test_the_heldout_faces_are_outside_the_tuning_faces():
    train = C.DATA / "faces-300w/train"
    tune = {it.image_path for it in C.tuning_items()}
    _, held = C.split_items(train, 0.1, seed=0)
    assert len(held) == 201 and len(tune) == 1811
    assert not tune & {it.image_path for it in held}


def test_nme_like_numbers_print_in_percent():
    """The benchmarks compute in fractions, as ``napari_gsm.evaluate`` does, and print
    percent, as the CLI does."""
    assert C.pct(0.0516) == "5.16"
    assert C.pct(0.0516, 1) == "5.2"
    assert C.pct(0.08, None) == "8"  # a cut-off in a column name
    assert C.pct(-0.00444, 3, sign=True) == "-0.444"
    assert C.pct(float("nan")) == C.pct(None) == "n/a"


def test_the_results_table_is_in_percent():
    """Errors 2, 6 and 10 % of the normaliser and one failed fit (NaN): mean and median 6 %,
    half the images beyond 8 %, and the cumulative error curve's area up to 8 % a quarter
    (a quarter of the images for 2-6 %, half for 6-8 %)."""
    row = C.Row("GSM", "HoG", errors=[0.02, 0.06, 0.10, float("nan")])
    head, _, cells = C.markdown_table([row]).splitlines()
    values = dict(zip(head.strip("| ").split(" | "), cells.strip("| ").split(" | ")))
    assert values["mean NME (%)"] == values["median NME (%)"] == "6.00"
    assert values["AUC@8 % (%)"] == "25.0"
    assert values["failures @8 % (%)"] == "50.0"
