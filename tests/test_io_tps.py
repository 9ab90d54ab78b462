"""Tests for napari_gsm.io.tps: tpsDig files, y flip, missing landmarks."""

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_gsm.io import LandmarkFileError, TpsSpecimen, format_tps, parse_tps, read_tps, write_tps

SAMPLE = """LM=3
10 90
20.5 0
-1 -1
IMAGE=wing01.jpg
ID=7
SCALE=0.0125

LM=2
0 100
5 50
IMAGE=wing02.jpg
ID=8
SCALE=
"""


def test_flip_convention_y_tps_is_height_minus_y():
    specs = parse_tps(SAMPLE, image_height=100)
    assert len(specs) == 2
    a, b = specs
    np.testing.assert_array_equal(a.points[:2], [[10, 10], [20.5, 100]])
    assert np.isnan(a.points[2]).all()
    assert (a.image, a.id, a.scale, a.image_height) == ("wing01.jpg", "7", 0.0125, 100)
    np.testing.assert_array_equal(b.points, [[0, 0], [5, 50]])
    assert b.scale is None and b.id == "8"


def test_height_callable_per_image():
    heights = {"wing01.jpg": 100, "wing02.jpg": 200}
    a, b = parse_tps(SAMPLE, image_height=heights.__getitem__)
    assert a.image_height == 100 and b.image_height == 200
    np.testing.assert_array_equal(b.points, [[0, 100], [5, 150]])


def test_height_from_image_beside_tps(tmp_path):
    cv2.imwrite(str(tmp_path / "wing01.jpg"), np.zeros((100, 30), np.uint8))
    cv2.imwrite(str(tmp_path / "wing02.jpg"), np.zeros((60, 30, 3), np.uint8))
    (tmp_path / "w.tps").write_text(SAMPLE)
    a, b = read_tps(tmp_path / "w.tps")
    assert (a.image_height, b.image_height) == (100, 60)
    np.testing.assert_array_equal(b.points, [[0, -40], [5, 10]])


def test_windows_image_path_uses_basename(tmp_path):
    cv2.imwrite(str(tmp_path / "w.png"), np.zeros((40, 30), np.uint8))
    (tmp_path / "w.tps").write_text("LM=1\n1 40\nIMAGE=C:\\data\\w.png\n")
    (spec,) = read_tps(tmp_path / "w.tps")
    np.testing.assert_array_equal(spec.points, [[1, 0]])


def test_no_height_available_is_an_error_naming_file(tmp_path):
    p = tmp_path / "w.tps"
    p.write_text(SAMPLE)
    with pytest.raises(LandmarkFileError, match="image height is needed") as info:
        read_tps(p)
    assert info.value.path == str(p) and info.value.line == 1
    p.write_text("LM=1\n1 2\n")  # no IMAGE= at all
    with pytest.raises(LandmarkFileError, match="image height is needed"):
        read_tps(p)
    with pytest.raises(LandmarkFileError, match="image height is needed"):
        parse_tps("LM=1\n1 2\nIMAGE=x.jpg\n")


def test_undecodable_image_for_height(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    p = tmp_path / "w.tps"
    p.write_text("LM=1\n1 2\nIMAGE=broken.jpg\n")
    with pytest.raises(LandmarkFileError, match="broken.jpg"):
        read_tps(p)


def test_all_missing_specimen_needs_no_height():
    (spec,) = parse_tps("LM=2\n-1 -1\n-5 3\n")
    assert np.isnan(spec.points).all() and spec.image_height is None


def test_crlf_bom_comment_curves_lowercase_keys():
    text = "\ufefflm=2\r\n1 2\r\n3\t4 \r\nCURVES=1\r\nPOINTS=2\r\n5 5\r\n6 6\r\ncomment=hello\r\nimage=a.jpg\r\n"
    (spec,) = parse_tps(text, image_height=10)
    np.testing.assert_array_equal(spec.points, [[1, 8], [3, 6]])
    assert spec.image == "a.jpg"


def test_writes_expected_text():
    spec = TpsSpecimen(np.array([[1.0, 2.0], [np.nan, np.nan]]), image="a.jpg", id="3", scale=0.5, image_height=10)
    assert format_tps([spec]) == "LM=2\n1.0 8.0\n-1 -1\nIMAGE=a.jpg\nID=3\nSCALE=0.5\n"


def test_write_read_round_trip_exact(tmp_path):
    rng = np.random.default_rng(0)
    specs = []
    for k in range(3):
        pts = rng.uniform(0, 300, (12, 2))
        pts[k] = np.nan
        specs.append(TpsSpecimen(pts, image=f"im {k}.png", id=str(k), scale=None if k else 0.01, image_height=300 + k))
    p = write_tps(tmp_path / "out.tps", specs)
    heights = {s.image: s.image_height for s in specs}
    back = read_tps(p, image_height=heights.__getitem__)
    for s, b in zip(specs, back):
        assert b.points.tobytes() == s.points.tobytes()
        assert (b.image, b.id, b.scale, b.image_height) == (s.image, s.id, s.scale, s.image_height)


def test_write_backup_and_height_fallback(tmp_path):
    spec = TpsSpecimen(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="image_height"):
        write_tps(tmp_path / "a.tps", [spec])
    write_tps(tmp_path / "a.tps", [spec], image_height=5)
    write_tps(tmp_path / "a.tps", [spec], image_height=6)
    assert (tmp_path / "a.tps.~1~").read_text().splitlines()[1] == "1.0 3.0"


def test_write_refuses_points_needing_negative_coordinates():
    for pt in ([-0.5, 1.0], [1.0, 10.5]):
        with pytest.raises(ValueError, match="missing"):
            format_tps([TpsSpecimen(np.array([pt]), image_height=10)])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.integers(1, 20000).flatmap(
        lambda h: st.tuples(
            st.just(h),
            st.lists(
                st.one_of(
                    st.tuples(st.floats(0, 1e5), st.floats(0, h)),
                    st.just((np.nan, np.nan)),
                ),
                min_size=0,
                max_size=15,
            ),
        )
    )
)
def test_round_trip_property(h_and_points):
    h, rows = h_and_points
    pts = np.array(rows, dtype=np.float64).reshape(-1, 2) + 0.0
    spec = TpsSpecimen(pts, image="x.jpg", image_height=h)
    (back,) = parse_tps(format_tps([spec]), image_height=h)
    assert back.points.tobytes() == pts.tobytes()


BAD = [
    ("", None, "empty file"),
    ("IMAGE=a.jpg\n", 1, "before the first LM="),
    ("1 2\n", 1, "unexpected line"),
    ("LM=x\n", 1, "LM= must be"),
    ("LM=-1\n", 1, "LM= must be"),
    ("LM=2\n1 2\n", 2, "early"),
    ("LM=1\n1 2 3\n", 2, "two numbers"),
    ("LM=1\n1 abc\n", 2, "not a number"),
    ("LM=1\n1 nan\n", 2, "non-finite"),
    ("LM=2\n1 2\nIMAGE=a.jpg\n3 4\n", 3, "more landmark"),
    ("LM=1\n1 2\n3 4\n", 3, "unexpected line"),
    ("LM=1\n1 2\nSCALE=big\n", 3, "SCALE="),
    ("LM=1\n1 2\nIMAGE=a\nIMAGE=b\n", 4, "second IMAGE="),
    ("LM3=1\n1 2 3\n", 1, "3D"),
    ("LM=1\n1 2\nPOINTS=1\n1 1\n", 3, "without a preceding CURVES="),
    ("LM=1\n1 2\nCURVES=1\n", 3, "POINTS= block"),
    ("COMMENT=x\n", 1, "before the first LM="),
]


@pytest.mark.parametrize("text, line, fragment", BAD)
def test_rejections_name_file_and_line(tmp_path, text, line, fragment):
    p = tmp_path / "bad.tps"
    p.write_text(text)
    with pytest.raises(LandmarkFileError) as info:
        read_tps(p, image_height=10)
    assert info.value.path == str(p) and info.value.line == line
    assert fragment in info.value.reason
    assert str(info.value).startswith(str(p))


def test_not_utf8(tmp_path):
    p = tmp_path / "bad.tps"
    p.write_bytes(b"LM=1\n1 2\nIMAGE=\xe9t\xe9.jpg\n")
    with pytest.raises(LandmarkFileError, match="UTF-8") as info:
        read_tps(p, image_height=10)
    assert info.value.line == 3


tps_like = st.text(alphabet=st.sampled_from(list("0123456789.-+e \n\r\t=LMIAGEDSCURVPOINT3x")), max_size=120)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=200), tps_like), st.one_of(st.none(), st.integers(-5, 1000)))
def test_fuzz_parse_tps(text, height):
    try:
        specs = parse_tps(text, "fuzz.tps", image_height=height)
    except LandmarkFileError as e:
        assert str(e).startswith("fuzz.tps")
    else:
        for s in specs:
            assert s.points.ndim == 2 and s.points.shape[1] == 2
