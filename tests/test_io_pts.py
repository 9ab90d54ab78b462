"""Tests for napari_gsm.io.pts: 300-W .pts reading/writing."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_gsm.io import LandmarkFileError, format_pts, parse_pts, read_pts, write_pts
from napari_gsm.io import pts as pts_module

# ../shared/data beside the repository (read-only; tests skip what is not there)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HEADER = "version: 1\nn_points: {n}\n{{\n"


def _write(tmp_path, text, name="a.pts", mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8", newline="")
    return p


# -- the 1-based file / 0-based memory convention -------------------------------------


def test_hand_written_file_is_converted_to_zero_based(tmp_path):
    p = _write(tmp_path, "version: 1\nn_points: 3\n{\n1 1\n10.5 3\n640 480\n}\n")
    pts = read_pts(p)
    assert pts.dtype == np.float64 and pts.shape == (3, 2)
    np.testing.assert_array_equal(pts, [[0, 0], [9.5, 2], [639, 479]])


def test_written_file_is_one_based(tmp_path):
    p = write_pts(tmp_path / "b.pts", np.array([[0.0, 0.0], [9.5, 2.0]]))
    assert p == tmp_path / "b.pts"
    lines = p.read_text().splitlines()
    assert lines[:3] == ["version: 1", "n_points: 2", "{"]
    assert [tuple(map(float, ln.split())) for ln in lines[3:5]] == [(1.0, 1.0), (10.5, 3.0)]
    assert lines[5] == "}" and len(lines) == 6


def test_exact_round_trip_of_hard_values(tmp_path):
    # Small values lose their low bits in float(x + 1); the writer must compensate.
    pts = np.array([[1e-20, 5e-324], [0.1, 1 / 3], [-0.75, 123456.789], [np.nextafter(0, 1), -1e-300]])
    back = read_pts(write_pts(tmp_path / "h.pts", pts))
    assert back.tobytes() == pts.tobytes()


coords = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, allow_subnormal=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays(np.float64, st.tuples(st.integers(1, 30), st.just(2)), elements=coords))
def test_round_trip_property(tmp_path, pts):
    pts = pts + 0.0  # -0.0 reads back as 0.0; equal, but not the same bits
    back = parse_pts(format_pts(pts))
    assert back.tobytes() == pts.tobytes()


def test_round_trip_through_file_with_one_point(tmp_path):
    pts = np.array([[3.25, 4.5]])
    np.testing.assert_array_equal(read_pts(write_pts(tmp_path / "one.pts", pts)), pts)


# -- tolerated variations ------------------------------------------------------------


def test_crlf_bom_spaces_tabs_blank_lines(tmp_path):
    text = "\ufeffversion: 1\r\nn_points:   2 \r\n{\r\n \t1.5\t2.5  \r\n3 4\r\n}\r\n\r\n  \r\n"
    p = _write(tmp_path, text.encode("utf-8"), mode="wb")
    np.testing.assert_array_equal(read_pts(p), [[0.5, 1.5], [2, 3]])


def test_bom_in_bytes_and_str():
    text = "version: 1\nn_points: 1\n{\n1 2\n}"
    np.testing.assert_array_equal(parse_pts("\ufeff" + text), [[0, 1]])


def test_extra_spaces_in_header_like_300w():
    np.testing.assert_array_equal(parse_pts("version: 1\nn_points:  68\n{\n" + "2 2\n" * 68 + "}\n")[0], [1, 1])


# -- missing landmarks -----------------------------------------------------------------


def test_nan_refused_by_default(tmp_path):
    with pytest.raises(ValueError, match="missing='negative'"):
        write_pts(tmp_path / "n.pts", np.array([[1.0, 2.0], [np.nan, np.nan]]))
    assert not (tmp_path / "n.pts").exists()


def test_missing_negative_round_trip(tmp_path):
    pts = np.array([[1.0, 2.0], [np.nan, np.nan], [5.0, 6.0]])
    p = write_pts(tmp_path / "n.pts", pts, missing="negative")
    assert "-1 -1" in p.read_text().splitlines()
    back = read_pts(p, missing="negative")
    np.testing.assert_array_equal(back, pts)
    # Default read never produces NaN: the row is the 0-based point (-2, -2).
    np.testing.assert_array_equal(read_pts(p)[1], [-2, -2])


def test_missing_negative_refuses_ambiguous_point():
    with pytest.raises(ValueError, match="missing marker"):
        format_pts(np.array([[-2.0, -2.0]]), missing="negative")


def test_write_refuses_bad_shapes_and_inf():
    for bad in (np.zeros((0, 2)), np.zeros((3,)), np.zeros((3, 3))):
        with pytest.raises(ValueError, match="shape"):
            format_pts(bad)
    with pytest.raises(ValueError, match="infinite"):
        format_pts(np.array([[np.inf, 1.0]]))


# -- rejections: each names file and line ------------------------------------------------

BAD = [
    # (content, line, message fragment)
    ("n_points: 1\n{\n1 1\n}\n", 1, "version"),
    ("version 1\nn_points: 1\n{\n1 1\n}\n", 1, "version"),
    ("version: 2\nn_points: 1\n{\n1 1\n}\n", 1, "unsupported version"),
    ("version: 1\n{\n1 1\n}\n", 2, "n_points"),
    ("version: 1\nn_points 2\n{\n1 1\n}\n", 2, "n_points"),
    ("version: 1\nn_points: 0\n{\n}\n", 2, "positive integer"),
    ("version: 1\nn_points: -3\n{\n}\n", 2, "positive integer"),
    ("version: 1\nn_points: 2.5\n{\n}\n", 2, "positive integer"),
    ("version: 1\nn_points: x\n{\n}\n", 2, "positive integer"),
    ("version: 1\nn_points: 1\n1 1\n}\n", 3, "'{'"),
    ("version: 1\nn_points: 1\n", 2, "'{'"),
    ("version: 1\nn_points: 2\n{\n1 1\n2 2\n", 5, "closing '}'"),
    ("version: 1\nn_points: 3\n{\n1 1\n2 2\n}\n", 6, "n_points is 3 but the file lists 2"),
    ("version: 1\nn_points: 1\n{\n1 1\n2 2\n}\n", 5, "more point lines"),
    ("version: 1\nn_points: 1\n{\n1 1 1\n}\n", 4, "two numbers"),
    ("version: 1\nn_points: 1\n{\n1\n}\n", 4, "two numbers"),
    ("version: 1\nn_points: 1\n{\n1,5 2\n}\n", 4, "not a number"),
    ("version: 1\nn_points: 1\n{\nabc 2\n}\n", 4, "not a number"),
    ("version: 1\nn_points: 1\n{\nnan 2\n}\n", 4, "non-finite"),
    ("version: 1\nn_points: 1\n{\n1 -inf\n}\n", 4, "non-finite"),
    ("version: 1\nn_points: 1\n{\n1 1e999\n}\n", 4, "non-finite"),
    ("version: 1\nn_points: 1\n{\n1 1\n}\nmore\n", 6, "after '}'"),
]


@pytest.mark.parametrize("text, line, fragment", BAD)
def test_rejections_name_file_and_line(tmp_path, text, line, fragment):
    p = _write(tmp_path, text, name="bad file.pts")
    with pytest.raises(LandmarkFileError) as info:
        read_pts(p)
    err = info.value
    assert err.path == str(p) and err.line == line
    assert fragment in err.reason
    assert str(err).startswith(f"{p}:{line}: ")


def test_empty_and_blank_files(tmp_path):
    for content in ("", "  \n\n\t\n"):
        p = _write(tmp_path, content)
        with pytest.raises(LandmarkFileError, match="empty file") as info:
            read_pts(p)
        assert str(info.value) == f"{p}: empty file"


def test_not_utf8_names_line(tmp_path):
    p = _write(tmp_path, b"version: 1\nn_points: 1\n{\n1 \xff\n}\n", mode="wb")
    with pytest.raises(LandmarkFileError, match="UTF-8") as info:
        read_pts(p)
    assert info.value.line == 4 and str(p) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(LandmarkFileError, match="no such file"):
        read_pts(tmp_path / "nope.pts")


def test_too_large_refused_before_reading(tmp_path, monkeypatch):
    p = _write(tmp_path, "version: 1\nn_points: 1\n{\n1 1\n}\n")
    monkeypatch.setattr(pts_module, "MAX_LANDMARK_FILE_BYTES", 10)

    def no_open(*a, **k):
        raise AssertionError("opened a file that is too large")

    monkeypatch.setattr("builtins.open", no_open)
    with pytest.raises(LandmarkFileError, match="too large") as info:
        read_pts(p)
    assert str(p) in str(info.value)


def test_real_size_limit_is_10_mb(tmp_path):
    p = tmp_path / "big.pts"
    with open(p, "wb") as f:
        f.truncate(10 * 1024 * 1024 + 1)  # sparse: cheap to make
    with pytest.raises(LandmarkFileError, match="too large"):
        read_pts(p)


def test_error_is_value_error_and_pickles():
    import pickle

    err = LandmarkFileError("x.pts", "bad", 3)
    assert isinstance(err, ValueError)
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.line, back.reason, str(back)) == ("x.pts", 3, "bad", "x.pts:3: bad")
    assert str(LandmarkFileError(Path("y.pts"), "worse")) == "y.pts: worse"


# -- fuzzing: parse or LandmarkFileError, nothing else ------------------------------------


pts_like = st.builds(
    lambda head, body, tail: head + body + tail,
    st.sampled_from(["", "version: 1\n", "version: 1\nn_points: 2\n", "version: 1\nn_points: 2\n{\n"]),
    st.text(alphabet=st.sampled_from(list("0123456789.-+eE {}\n\r\t:nai_versionpt ")), max_size=80),
    st.sampled_from(["", "}\n", "\n}"]),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=200), pts_like))
def test_fuzz_parse_pts(text):
    try:
        pts = parse_pts(text, "fuzz.pts")
    except LandmarkFileError as e:
        assert str(e).startswith("fuzz.pts")
    else:
        assert pts.ndim == 2 and pts.shape[1] == 2 and np.isfinite(pts).all()


# -- real data ---------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["wings/train", "faces-300w/test-lfpw"])
def test_reads_every_real_file(folder):
    root = DATA / folder
    files = sorted(root.glob("*.pts")) if root.is_dir() else []
    if not files:
        pytest.skip(f"{root} not available")
    counts = set()
    for f in files:
        pts = read_pts(f)
        assert np.isfinite(pts).all()
        counts.add(len(pts))
        # Values written with 6 decimals read as exactly the nearest float to (value - 1).
    assert len(counts) == 1
