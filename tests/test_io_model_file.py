"""Tests for napari_gsm.io.model_file: versioned npz + JSON model files."""

import io
import json
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays, floating_dtypes, integer_dtypes

from napari_gsm.io import MODEL_FORMAT_VERSION, ModelFileError, load_model_file, save_model_file
from napari_gsm.io.model_file import read_model_header

META = {"method": "gsm", "sigma": 1.5, "names": ["a", "b"], "nested": {"k": [1, 2, None, True]}, "é": "ü"}


def _arrays():
    return {
        "mean": np.linspace(0, 1, 24).reshape(12, 2),
        "filters": np.arange(60, dtype=np.float32).reshape(3, 4, 5),
        "mask": np.array([True, False]),
        "ids": np.array([3, -7], dtype=np.int64),
        "labels": np.array(["x", "yy"]),
        "empty": np.zeros((0, 2)),
    }


def test_round_trip(tmp_path):
    p = save_model_file(tmp_path / "m.npz", _arrays(), META)
    assert p == tmp_path / "m.npz"
    arrays, meta = load_model_file(p)
    assert meta == META
    expected = _arrays()
    assert set(arrays) == set(expected)
    for k, v in expected.items():
        assert arrays[k].dtype == v.dtype and arrays[k].shape == v.shape
        np.testing.assert_array_equal(arrays[k], v)
    header = read_model_header(p)
    assert header["format"] == "napari-gsm-model" and header["format_version"] == MODEL_FORMAT_VERSION == 1
    assert isinstance(header["napari_gsm_version"], str)


def test_name_without_npz_suffix_is_kept(tmp_path):
    p = save_model_file(tmp_path / "model.gsm", {"a": np.ones(2)}, {})
    assert p.exists() and not (tmp_path / "model.gsm.npz").exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays(st.one_of(floating_dtypes(), integer_dtypes()), array_shapes(min_dims=0, max_dims=3, max_side=4)))
def test_round_trip_property(tmp_path, arr):
    p = save_model_file(tmp_path / "p.npz", {"x": arr}, {"n": 1}, backup=False)
    arrays, meta = load_model_file(p)
    assert arrays["x"].dtype == arr.dtype and arrays["x"].tobytes() == arr.tobytes() and meta == {"n": 1}


def test_backup_of_previous_file(tmp_path):
    p = tmp_path / "m.npz"
    save_model_file(p, {"a": np.zeros(1)}, {"v": 1})
    save_model_file(p, {"a": np.ones(1)}, {"v": 2})
    assert load_model_file(p)[1] == {"v": 2}
    assert load_model_file(tmp_path / "m.npz.~1~")[1] == {"v": 1}


def test_save_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="object"):
        save_model_file(tmp_path / "m.npz", {"a": np.array([{}, 1], dtype=object)}, {})
    with pytest.raises(ValueError, match="reserved"):
        save_model_file(tmp_path / "m.npz", {"__meta__": np.zeros(1)}, {})
    with pytest.raises(ValueError, match="JSON"):
        save_model_file(tmp_path / "m.npz", {}, {"x": float("nan")})
    with pytest.raises(ValueError, match="JSON"):
        save_model_file(tmp_path / "m.npz", {}, {"x": object()})
    assert not (tmp_path / "m.npz").exists()


def _raw_npz(path, **arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    return path


def _meta_bytes(obj):
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


def _check(path, fragment):
    with pytest.raises(ModelFileError) as info:
        load_model_file(path)
    assert info.value.path == str(path) and str(path) in str(info.value)
    assert fragment in info.value.reason, info.value.reason
    return info.value


def test_missing_file(tmp_path):
    _check(tmp_path / "nope.npz", "no such")


def test_not_a_zip(tmp_path):
    (tmp_path / "t.npz").write_text("hello, I am text")
    _check(tmp_path / "t.npz", "not a napari-gsm model file")
    np.save(tmp_path / "single.npy", np.ones(3))
    _check(tmp_path / "single.npy", "not an .npz")


def test_pickle_file_refused(tmp_path):
    import pickle

    (tmp_path / "p.npz").write_bytes(pickle.dumps({"a": 1}))
    _check(tmp_path / "p.npz", "not a napari-gsm model file")


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9, 0.99])
def test_truncated_file(tmp_path, keep):
    big = {"a": np.random.default_rng(0).normal(size=(200, 50))}
    p = save_model_file(tmp_path / "m.npz", big, META)
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * keep)])
    _check(p, "")


def test_corrupt_member(tmp_path):
    p = save_model_file(tmp_path / "m.npz", {"a": np.arange(1000.0)}, META)
    data = bytearray(p.read_bytes())
    # Flip bytes inside the first member's compressed data (after its local header).
    for k in range(60, 200):
        data[k] ^= 0xFF
    p.write_bytes(bytes(data))
    _check(p, "corrupt")


def test_missing_meta(tmp_path):
    _check(_raw_npz(tmp_path / "m.npz", a=np.ones(2)), "no __meta__")


def test_invalid_json(tmp_path):
    bad = np.frombuffer(b"{not json", dtype=np.uint8)
    _check(_raw_npz(tmp_path / "m.npz", __meta__=bad), "not valid JSON")
    _check(_raw_npz(tmp_path / "w.npz", __meta__=np.ones(3)), "UTF-8 JSON")


def test_wrong_format(tmp_path):
    _check(_raw_npz(tmp_path / "m.npz", __meta__=_meta_bytes({"format": "other", "format_version": 1})), "wrong format")
    _check(_raw_npz(tmp_path / "l.npz", __meta__=_meta_bytes([1, 2])), "wrong format")


def test_newer_format_version(tmp_path):
    head = {"format": "napari-gsm-model", "format_version": MODEL_FORMAT_VERSION + 1, "meta": {}}
    err = _check(_raw_npz(tmp_path / "m.npz", __meta__=_meta_bytes(head)), "newer napari-gsm")
    assert "upgrade" in str(err)
    head["format_version"] = "1"
    _check(_raw_npz(tmp_path / "s.npz", __meta__=_meta_bytes(head)), "invalid format_version")


def test_object_arrays_refused(tmp_path):
    head = {"format": "napari-gsm-model", "format_version": 1, "meta": {}}
    p = tmp_path / "o.npz"
    buf = io.BytesIO()
    np.savez(buf, __meta__=_meta_bytes(head), evil=np.array([{"x": 1}], dtype=object))
    p.write_bytes(buf.getvalue())
    _check(p, "object")
    assert zipfile.is_zipfile(p)


def _corruptions(tmp_path):
    """Files that are not model files, each as a user might hand one over."""
    import pickle

    rng = np.random.default_rng(0)
    head = {"format": "napari-gsm-model", "format_version": 1, "meta": {}}
    files = {}
    files["random.npz"] = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # a zip, but not of arrays
        zf.writestr("readme.txt", "hello")
    files["plain.zip"] = buf.getvalue()
    files["pickle.npz"] = pickle.dumps({"a": np.ones(3)})
    for name, arrays in (("object.npz", {"evil": np.array([{"x": 1}], dtype=object)}),
                         ("object-meta.npz", {"__meta__": np.array([head], dtype=object)}),
                         ("object-member.npz", {"__meta__": _meta_bytes(head),
                                                "evil": np.array([{"x": 1}], dtype=object)})):
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        files[name] = buf.getvalue()
    for name, arr in (("array.npy", np.ones(3)), ("objects.npy", np.array([{}], dtype=object))):
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=True)
        files[name] = buf.getvalue()
    model = save_model_file(tmp_path / "good.npz", _arrays(), META).read_bytes()
    files["truncated.npz"] = model[: len(model) // 2]
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    return paths


def test_corrupt_files_are_named_and_never_invite_an_unsafe_load(tmp_path):
    import re

    for path in _corruptions(tmp_path):
        with pytest.raises(ModelFileError) as info:
            load_model_file(path)
        msg = str(info.value)
        assert msg.startswith(f"{path}: not a napari-gsm model file"), msg
        what = msg[len(str(path)):]
        assert "pickle" not in what.lower(), msg
        # no Python class names (ValueError, BadZipFile, ...): the message is for people
        assert not re.search(r"[a-z][A-Z]|Error|Exception", what), msg
