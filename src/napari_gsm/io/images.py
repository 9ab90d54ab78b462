"""Reading images for annotation and fitting (no napari, no Qt)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .atomic import atomic_write_bytes
from .errors import ImageFileError

__all__ = ["IMAGE_SUFFIXES", "read_image", "write_image", "to_grey", "composite_alpha"]

#: File name suffixes recognised as images (compare lower-cased).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

# Rec. 709 luma, the weights skimage.color.rgb2gray uses, so grey features computed
# here match what users get from scikit-image.
_LUMA = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)


def _bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image[:, :, ::-1])
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, [2, 1, 0, 3]])
    return image


def read_image(path) -> np.ndarray:
    """Read an image file in its native dtype, channels in RGB order.

    Parameters
    ----------
    path : str or os.PathLike
        A png, jpg/jpeg, tif/tiff or bmp file, 8- or 16-bit.

    Returns
    -------
    image : (H, W) or (H, W, 3) or (H, W, 4) ndarray
        Grey, RGB or RGBA; dtype as stored (``uint8``, ``uint16``, ...). Pixels are as
        stored: EXIF orientation is not applied, so landmark coordinates made on the raw
        pixels stay valid.

    Raises
    ------
    ImageFileError
        If the file is missing, empty or cannot be decoded.
    """
    path = Path(path)
    try:
        # np.fromfile + imdecode instead of cv2.imread: imread fails silently on
        # non-ASCII paths on Windows.
        buf = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageFileError(path, "no such image file") from None
    except IsADirectoryError:
        raise ImageFileError(path, "is a folder, not an image") from None
    except OSError as e:
        raise ImageFileError(path, f"cannot read image: {e.strerror or e}") from None
    if buf.size == 0:
        raise ImageFileError(path, "empty image file (0 bytes)")

    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if image is not None:
        image = _bgr_to_rgb(image)
    elif path.suffix.lower() in (".tif", ".tiff"):
        # OpenCV lacks a few TIFF variants (some compressions, float/planar layouts);
        # tifffile (a scikit-image dependency) reads them, already in RGB order. Other
        # formats get no fallback: probing every imageio plugin on a broken JPEG only
        # produces a longer, less useful error.
        try:
            import tifffile

            image = np.asarray(tifffile.imread(os.fspath(path), key=0))
        except Exception as e:  # any decoder failure means the same thing to the user
            raise ImageFileError(path, f"cannot decode image ({type(e).__name__}: {e})") from None
    else:
        raise ImageFileError(path, f"cannot decode image (corrupt or not a {path.suffix or 'known'} image)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.size == 0 or image.ndim not in (2, 3):
        raise ImageFileError(path, f"decoded to an unusable array of shape {image.shape}")
    return image


def write_image(path, image, *, backup=True):
    """Write an image losslessly as PNG, atomically; returns the path.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; its suffix should be ``.png``.
    image : (H, W), (H, W, 3) or (H, W, 4) array
        Grey, RGB or RGBA, ``uint8`` or ``uint16`` (kept as they are); other dtypes are
        scaled to ``uint16`` from ``[0, 1]`` (floats) or their dtype's range.
    backup : bool
        Keep an existing, different file as a numbered backup (an identical one is left
        alone and not backed up).
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"{path}: cannot save an image of shape {image.shape} "
                         "(grey, RGB or RGBA expected)")
    if image.dtype not in (np.uint8, np.uint16):
        image = np.rint(_unit_scale(image) * 65535).astype(np.uint16)
    ok, buf = cv2.imencode(".png", _bgr_to_rgb(image))  # the swap is its own inverse
    if not ok:
        raise ImageFileError(path, "could not encode the image as PNG")
    data = buf.tobytes()
    path = Path(path)
    if path.is_file() and path.read_bytes() == data:
        return path
    return atomic_write_bytes(path, data, backup=backup)


def _unit_scale(image):
    """``image`` as float32 in ``[0, 1]`` (integers divided by their dtype's maximum)."""
    if image.dtype == bool:
        return image.astype(np.float32)
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(image.astype(np.float32), 0.0, 1.0)
    raise ValueError(f"unsupported image data type {image.dtype}")


def composite_alpha(image) -> np.ndarray:
    """An image with an alpha channel composited onto black; other images unchanged.

    What the model sees of a transparent pixel is what it is drawn over: black, napari's
    canvas. The annotation widget shows images through this function too, so a person and
    the model always see the same pixels whatever napari's theme.

    Parameters
    ----------
    image : (H, W, 2) or (H, W, 4) array_like, or any other image
        Grey+alpha or RGBA, any dtype (integers scaled by their dtype's maximum).

    Returns
    -------
    (H, W) or (H, W, 3) ndarray
        For an image with alpha: ``colour * alpha`` in the input's dtype (floats clipped to
        ``[0, 1]``); any other image is returned as it is.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] not in (2, 4):
        return image
    alpha = _unit_scale(image[:, :, -1])[:, :, None]
    colour = _unit_scale(image[:, :, :-1]) * alpha
    if image.shape[2] == 2:
        colour = colour[:, :, 0]
    if np.issubdtype(image.dtype, np.integer):
        top = np.iinfo(image.dtype).max
        return np.rint(colour * top).astype(image.dtype)
    return colour.astype(image.dtype if image.dtype != bool else np.float32)


def to_grey(image) -> np.ndarray:
    """Convert an image to grey ``float32`` in ``[0, 1]``.

    Parameters
    ----------
    image : (H, W), (H, W, 1), (H, W, 2), (H, W, 3) or (H, W, 4) array_like
        Grey, grey+alpha, RGB or RGBA. Integer dtypes are divided by their dtype's
        maximum (255 for ``uint8``, 65535 for ``uint16``); floats are taken as already
        in ``[0, 1]`` and clipped; bool maps to 0/1.

    Returns
    -------
    grey : (H, W) ndarray of float32
        RGB is reduced with Rec. 709 luminance weights; an alpha channel is composited
        onto black first (:func:`composite_alpha`), as napari draws it on its canvas.
    """
    image = np.asarray(image)
    if image.ndim == 3:
        if image.shape[2] not in (1, 2, 3, 4):
            raise ValueError(f"cannot convert an image with {image.shape[2]} channels to grey")
        if image.shape[2] in (2, 4):
            alpha = _unit_scale(image[:, :, -1])
            values = _unit_scale(image[:, :, :-1])
            values = (values[:, :, 0] if values.shape[2] == 1 else values @ _LUMA) * alpha
            return np.clip(values, 0.0, 1.0).astype(np.float32, copy=False)
        image = image[:, :, 0] if image.shape[2] == 1 else image
    elif image.ndim != 2:
        raise ValueError(f"an image must be 2D (grey) or 2D with colour channels; this one "
                         f"has {image.ndim} dimensions")
    values = _unit_scale(image)
    if values.ndim == 3:
        values = values @ _LUMA
    return np.clip(values, 0.0, 1.0).astype(np.float32, copy=False)
