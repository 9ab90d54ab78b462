"""Tests for napari_gsm.io.images: decoding, channel order, grey conversion."""

import cv2
import numpy as np
import pytest

from napari_gsm.io import (IMAGE_SUFFIXES, ImageFileError, LandmarkFileError, composite_alpha,
                          read_image, to_grey)


def _rgb_image(dtype=np.uint8):
    top = np.iinfo(dtype).max
    img = np.zeros((4, 5, 3), dtype)
    img[0, 0] = (top, 0, 0)  # red in RGB
    img[1, 1] = (0, 0, top)  # blue
    return img


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_rgb_channel_order(tmp_path, suffix):
    img = _rgb_image()
    p = tmp_path / f"c{suffix}"
    assert cv2.imwrite(str(p), img[:, :, ::-1])  # cv2 writes BGR
    out = read_image(p)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, img)


def test_rgba_png(tmp_path):
    img = np.zeros((3, 4, 4), np.uint8)
    img[..., 0] = 200
    img[..., 3] = 77
    cv2.imwrite(str(tmp_path / "a.png"), img[:, :, [2, 1, 0, 3]])
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), img)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grey_and_rgb(tmp_path, suffix):
    grey = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000).astype(np.uint16)
    cv2.imwrite(str(tmp_path / f"g{suffix}"), grey)
    out = read_image(tmp_path / f"g{suffix}")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, grey)
    rgb = _rgb_image(np.uint16)
    cv2.imwrite(str(tmp_path / f"c{suffix}"), rgb[:, :, ::-1])
    np.testing.assert_array_equal(read_image(tmp_path / f"c{suffix}"), rgb)


def test_jpeg_grey_and_upper_case_suffix(tmp_path):
    img = np.full((8, 8), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "g.JPG"), img)
    out = read_image(tmp_path / "g.JPG")
    assert out.shape == (8, 8) and abs(int(out.mean()) - 128) <= 1


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ImageFileError, match="no such image") as info:
        read_image(tmp_path / "none.png")
    assert str(tmp_path / "none.png") in str(info.value)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageFileError, match="empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "junk.jpg").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ImageFileError, match="cannot decode") as info:
        read_image(tmp_path / "junk.jpg")
    assert info.value.path == str(tmp_path / "junk.jpg")
    assert isinstance(info.value, LandmarkFileError)


def test_suffixes():
    assert set(IMAGE_SUFFIXES) == {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def test_to_grey():
    u8 = np.array([[0, 255], [51, 255]], np.uint8)
    g = to_grey(u8)
    assert g.dtype == np.float32 and g.shape == (2, 2)
    np.testing.assert_allclose(g, [[0, 1], [0.2, 1]], atol=1e-6)
    np.testing.assert_allclose(to_grey(np.array([[65535]], np.uint16)), [[1.0]])
    rgb = np.zeros((1, 3, 3), np.uint8)
    rgb[0, 0, 0] = rgb[0, 1, 1] = rgb[0, 2, 2] = 255
    np.testing.assert_allclose(to_grey(rgb)[0], [0.2125, 0.7154, 0.0721], atol=1e-6)
    opaque = np.concatenate([rgb, np.full((1, 3, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_grey(opaque), to_grey(rgb))
    np.testing.assert_array_equal(to_grey(np.array([[-0.5, 0.25, 2.0]])), np.float32([[0, 0.25, 1]]))
    np.testing.assert_array_equal(to_grey(np.array([[True, False]])), [[1, 0]])
    with pytest.raises(ValueError):
        to_grey(np.zeros((2, 2, 5)))
    with pytest.raises(ValueError):
        to_grey(np.zeros(3))


def test_tiff_fallback_when_opencv_cannot_decode(tmp_path, monkeypatch):
    img = _rgb_image(np.uint16)
    import tifffile

    tifffile.imwrite(tmp_path / "c.tif", img, photometric="rgb")  # uncompressed, RGB order
    monkeypatch.setattr(cv2, "imdecode", lambda *a: None)
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif"), img)
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageFileError, match="cannot decode|unusable") as info:
        read_image(tmp_path / "junk.tif")
    assert info.value.path == str(tmp_path / "junk.tif")


def test_io_package_imports_no_napari_or_qt():
    import os
    import subprocess
    import sys

    import napari_gsm

    src = os.path.dirname(os.path.dirname(napari_gsm.__file__))
    code = (
        "import sys, napari_gsm.io; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'vispy')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_alpha_is_composited_on_black_as_napari_draws_it():
    """A transparent pixel is black to the model (napari's canvas), whatever its colour."""
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere...
    rgba[0, :, 3] = (0, 128, 255)  # ...transparent, half, opaque
    rgba[1, :, 3] = 255
    g = to_grey(rgba)
    np.testing.assert_allclose(g[0], [0.0, 128 / 255, 1.0], atol=1e-6)
    np.testing.assert_allclose(g[1], 1.0, atol=1e-6)
    shown = composite_alpha(rgba)  # what the annotation widget displays
    assert shown.shape == (2, 3, 3) and shown.dtype == np.uint8
    np.testing.assert_allclose(to_grey(shown), g, atol=1 / 255)
    grey_alpha = np.stack([np.full((2, 2), 1.0), np.array([[0.0, 1.0], [0.25, 0.5]])], -1)
    np.testing.assert_allclose(to_grey(grey_alpha), [[0.0, 1.0], [0.25, 0.5]])
    np.testing.assert_allclose(composite_alpha(grey_alpha), [[0.0, 1.0], [0.25, 0.5]])
    u16 = np.zeros((1, 1, 4), np.uint16)
    u16[...] = (65535, 65535, 65535, 32768)
    np.testing.assert_allclose(to_grey(u16), [[32768 / 65535]], atol=1e-6)
    rgb = np.ones((2, 2, 3), np.uint8)
    assert composite_alpha(rgb) is rgb  # nothing to composite
