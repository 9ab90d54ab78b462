"""Reading images for annotation and fitting (no napari, no Qt)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageFileError

__all__ = ["IMAGE_SUFFIXES", "read_image", "to_grey"]

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
        RGB is reduced with Rec. 709 luminance weights; alpha is dropped.
    """
    image = np.asarray(image)
    if image.ndim == 3:
        if image.shape[2] in (1, 2):
            image = image[:, :, 0]
        elif image.shape[2] in (3, 4):
            image = image[:, :, :3]
        else:
            raise ValueError(f"cannot convert an image with {image.shape[2]} channels to grey")
    elif image.ndim != 2:
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")

    if image.dtype == bool:
        values = image.astype(np.float32)
    elif np.issubdtype(image.dtype, np.integer):
        values = image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
    elif np.issubdtype(image.dtype, np.floating):
        values = image.astype(np.float32)
    else:
        raise ValueError(f"unsupported image dtype {image.dtype}")

    if values.ndim == 3:
        values = values @ _LUMA
    return np.clip(values, 0.0, 1.0).astype(np.float32, copy=False)
