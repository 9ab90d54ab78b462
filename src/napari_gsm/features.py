"""Feature maps (grey level, dense HoG) and patch sampling in the reference frame.

A feature map is computed once per fitting iteration on the image warped into the
reference frame, then every landmark's patch is read from it by bilinear interpolation on
a regular grid (spacing ``stride`` pixels). For grey level the grid is the pixel grid; for
HoG it is the cell grid (cell size 3 in the paper), so a 15 x 15 grid of cells covers 43
pixels, and a sub-pixel shift of a landmark is a sub-cell shift of its patch.

The dense HoG here is Dalal-Triggs style: unsigned gradient orientation in ``n_bins`` bins
(or signed, in ``2 n_bins`` bins over 360 degrees, as in Felzenszwalb et al.'s HoG) with
linear vote splitting, pooled over ``cell x cell`` pixels around every pixel (so a
cell can sit at any position, which is what sub-pixel patch sampling needs;
``skimage.feature.hog`` only gives cells on a fixed grid), then normalised by the mean
gradient magnitude over the ``2 cell x 2 cell`` block. It is written with OpenCV filters
because it runs in every fitting iteration.
"""

from __future__ import annotations

from dataclasses import dataclass

import functools

import cv2
import numpy as np

from .geometry import pose_matrix, to_base_mesh

__all__ = [
    "FeatureSpec",
    "Pyramid",
    "feature_map",
    "sample_patches",
    "preprocess_patches",
    "hann_window",
    "frame_patches",
    "FrameCache",
]


@dataclass(frozen=True)
class FeatureSpec:
    """How patches are made.

    Parameters
    ----------
    kind : {'grey', 'hog'}
    patch : int
        Patch side ``L`` in grid samples.
    cell : int
        HoG cell size in pixels; also the grid spacing for HoG. Ignored for grey.
    n_bins : int
        HoG orientation bins over 180 degrees.
    signed : bool
        HoG with signed orientations: ``2 n_bins`` bins over 360 degrees, so an edge
        from dark to light and one from light to dark fall in different channels.
    window : bool
        Multiply patches by a Hann window (as MOSSE does) before normalising.
    """

    kind: str = "hog"
    patch: int = 15
    cell: int = 3
    n_bins: int = 9
    window: bool = True
    signed: bool = False

    def __post_init__(self):
        if self.kind not in ("grey", "hog"):
            raise ValueError(f"features must be 'grey' or 'hog', not {self.kind!r}")
        if self.signed and self.kind != "hog":
            raise ValueError("signed orientations are a HoG option, not one of grey levels")
        if self.patch < 5:
            raise ValueError("patch must be at least 5 samples")
        if self.n_bins < 2:
            raise ValueError("HoG needs at least 2 orientation bins")

    @property
    def stride(self):
        """Grid spacing of patch samples, in reference-frame pixels."""
        return self.cell if self.kind == "hog" else 1

    @property
    def channels(self):
        if self.kind != "hog":
            return 1
        return 2 * self.n_bins if self.signed else self.n_bins

    @property
    def extent(self):
        """Half the span of a patch, in pixels (how far from its centre it reads)."""
        return self.stride * (self.patch - 1) / 2


class Pyramid:
    """A grey image and its 2x-downsampled levels, for alias-free warps to a small frame.

    Level ``l`` has pixel centres at ``x / 2**l`` (``cv2.pyrDown`` keeps even samples).
    """

    def __init__(self, grey):
        grey = np.ascontiguousarray(grey, np.float32)
        if grey.ndim != 2 or min(grey.shape) < 2:
            raise ValueError(f"expected a 2D grey image, got shape {grey.shape}")
        self.levels = [grey]

    @property
    def shape(self):
        return self.levels[0].shape

    def _level(self, l):
        while len(self.levels) <= l:
            prev = self.levels[-1]
            if min(prev.shape) < 8:
                break
            self.levels.append(cv2.pyrDown(prev))
        return min(l, len(self.levels) - 1)

    def warp(self, theta, sm, frame_shape):
        """The image warped into the reference frame by pose ``theta``, ``frame_shape``.

        Frame pixel ``u`` shows image point ``S^-1(u)``. When the warp shrinks the image by
        more than 2x, a coarser pyramid level is used so the bilinear warp does not alias.
        """
        A = pose_matrix(theta)
        scale = np.sqrt(abs(np.linalg.det(A)))
        l = self._level(max(0, int(np.floor(np.log2(1.0 / max(scale, 1e-6))))))
        Al = A * (2.0**l)  # image level l -> frame: u = A (2^l x_l) + c
        c = np.asarray(theta[2:4]) + sm - A @ sm
        M = np.hstack([Al, c[:, None]]).astype(np.float64)
        return cv2.warpAffine(self.levels[l], M, (frame_shape[1], frame_shape[0]),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def frame_patches(pyramid, shape, theta, sm, frame_shape, spec):
    """Preprocessed patches at every landmark of an image-frame ``shape``, ``(v, L, L, D)``.

    The image is warped into the reference frame by ``theta``, features are computed there
    and each patch is centred on the landmark's position ``S(shape, theta)`` in that frame.
    """
    frame = pyramid.warp(theta, sm, frame_shape)
    fmap = feature_map(frame, spec)
    centres = to_base_mesh(shape, theta, sm)
    return preprocess_patches(sample_patches(fmap, centres, spec), spec)


class FrameCache:
    """Warped frame and feature map of one image, re-made only when the pose has moved.

    Iterative fitting changes the pose a little at every step; the warp and the feature map
    are most of an iteration's cost, and a pose that differs by a fraction of a degree or a
    percent of scale gives practically the same patches. So the frame is kept until the
    pose's ``A`` differs by more than ``tol`` (relative) from the one it was made with, or a
    patch reaches past it that a frame warped with the new pose would hold better.
    ``tol = 0`` re-warps at every call (Algorithm 1 as written); a fitter may change
    :attr:`tol` between calls (wider at the coarse target widths).

    Patches are centred on the landmarks' positions in the *kept* frame, so the data
    derivatives must be mapped to the image with the kept pose, :attr:`theta`.
    """

    def __init__(self, pyramid, sm, frame_shape, spec, tol=0.0):
        self.pyramid, self.sm, self.frame_shape, self.spec = pyramid, sm, frame_shape, spec
        self.tol = tol
        self.theta = None
        self.fmap = None
        self.n_warps = 0

    def _update(self, shape, theta):
        """Re-warp if needed; the landmarks' positions ``(v, 2)`` in the kept frame."""
        if self.theta is not None:
            a0, b0 = self.theta[0], self.theta[1]
            if max(abs(theta[0] - a0), abs(theta[1] - b0)) <= self.tol * np.hypot(a0, b0):
                centres = to_base_mesh(shape, self.theta, self.sm)
                # A patch reaching past the frame reads its replicated border, not the
                # image. A frame warped with the new pose helps only if it holds that patch
                # better: a shape far from the mean (a turned face's jaw) can overhang
                # every nearby pose's frame, and re-warping for it at each iteration
                # changed nothing but the time.
                over = self._overhang(centres)
                if over == 0 or (self._overhang(to_base_mesh(shape, theta, self.sm))
                                 >= over - self.spec.stride):
                    return centres
        self.theta = np.array(theta, float)
        self.fmap = feature_map(self.pyramid.warp(self.theta, self.sm, self.frame_shape),
                                self.spec)
        self.n_warps += 1
        return to_base_mesh(shape, self.theta, self.sm)

    def _overhang(self, centres):
        """How far (frame pixels) the patches at ``centres`` reach past the frame, at most."""
        H, W = self.frame_shape
        e = self.spec.extent
        return max(0.0, e - centres.min(), centres[:, 0].max() - (W - 1 - e),
                   centres[:, 1].max() - (H - 1 - e))

    def patches(self, shape, theta):
        """Preprocessed patches ``(v, L, L, D)`` at an image-frame ``shape`` near pose ``theta``."""
        centres = self._update(shape, theta)
        return preprocess_patches(sample_patches(self.fmap, centres, self.spec), self.spec)

    def features(self, shape, theta, reader):
        """The ``6v`` GSM features (eq. 50 order) at ``shape`` near pose ``theta``.

        ``reader`` is a :class:`~napari_gsm.responses.FeatureReader`
        (``Detectors.reader(level, spec)``); measured in the frame of :attr:`theta`.
        """
        centres = self._update(shape, theta)
        return reader.read(self.fmap, centres[None])[0]

    def responses(self, shape, theta, reader):
        """:meth:`features` as detector responses ``(v, 6)``, one row per landmark."""
        return self.features(shape, theta, reader).reshape(6, -1).T


def feature_map(frame, spec):
    """Dense features of a reference-frame image.

    Parameters
    ----------
    frame : (H, W) float32 array
    spec : FeatureSpec

    Returns
    -------
    (H, W, D) float32 array
    """
    frame = np.ascontiguousarray(frame, np.float32)
    if spec.kind == "grey":
        return frame[..., None]
    return _dense_hog(frame, spec.cell, spec.n_bins, spec.signed)


def _dense_hog(img, cell, n_bins, signed=False):
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=1)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=1)
    mag, ang = cv2.cartToPolar(gx, gy)
    # Unsigned orientation in bins; each pixel votes into its two nearest bins. Everything
    # stays float32 and branch-free (a masked subtraction instead of a modulo): this runs
    # at every re-warp. The bin indices are numpy's own index type (intp): int32 indices
    # are converted at every assignment, which took as long as the assignment itself.
    m = mag.ravel()
    n = 2 * n_bins if signed else n_bins  # bins over [0, 2 pi) signed, [0, pi) unsigned
    b = (ang * np.float32(n_bins / np.pi)).ravel()  # [0, 2 n_bins)
    if not signed:
        b -= np.float32(n_bins) * (b >= n_bins)  # [pi, 2 pi) is [0, pi) unsigned
    b0 = b.astype(np.intp)  # b >= 0, so truncation is the floor
    m1 = m * (b - b0.astype(np.float32))
    b0 -= n * (b0 == n)  # OpenCV can return an angle of exactly 2 pi
    b1 = b0 + 1
    b1 -= n * (b1 == n)
    base = _vote_base(b.size, n)
    b0 += base
    b1 += base
    hist = np.zeros(b.size * n, np.float32)
    hist[b0] = m - m1
    hist[b1] = m1  # b1 != b0, so this never overwrites a vote
    # Box means as separable filters: the same sums as cv2.boxFilter (to float rounding),
    # about 1.7x faster on the nine channels.
    k = _box_kernel(cell)
    hist = cv2.sepFilter2D(hist.reshape(img.shape + (n,)), -1, k, k,
                           borderType=cv2.BORDER_REFLECT)
    # Block normalisation by the mean gradient magnitude over 2 x 2 cells (L1, one filter
    # instead of the L2 energy of every channel: same invariance to local contrast).
    k = _box_kernel(2 * cell)
    block = cv2.sepFilter2D(mag, -1, k, k, borderType=cv2.BORDER_REFLECT)
    hist *= (1.0 / (block + np.float32(0.02)))[..., None]
    return hist


@functools.lru_cache(maxsize=8)
def _vote_base(n_pixels, n_bins):
    """Offset of every pixel's first bin in the flat ``(n_pixels, n_bins)`` histogram."""
    base = np.arange(0, n_pixels * n_bins, n_bins, dtype=np.intp)
    base.flags.writeable = False  # shared between calls
    return base


@functools.lru_cache(maxsize=8)
def _box_kernel(n):
    """``(n,)`` float32 mean kernel (one axis of an ``n x n`` box filter)."""
    k = np.full(n, 1.0 / n, np.float32)
    k.flags.writeable = False
    return k


def sample_patches(fmap, centres, spec):
    """Read one ``L x L`` patch per landmark from a feature map, bilinearly.

    Parameters
    ----------
    fmap : (H, W, D) array
    centres : (v, 2) array
        Patch centres ``(x, y)`` in frame pixels (sub-pixel).
    spec : FeatureSpec

    Returns
    -------
    (v, L, L, D) float32 array; samples outside the map repeat its border.
    """
    L = spec.patch
    grid = (spec.stride * np.arange(L) - spec.extent).astype(np.float32)
    c = np.asarray(centres, np.float32)
    v = len(c)
    mx = np.broadcast_to(c[:, 0, None, None] + grid[None, None, :], (v, L, L))
    my = np.broadcast_to(c[:, 1, None, None] + grid[None, :, None], (v, L, L))
    # cv2.remap does the bilinear reads of all channels in one pass (sub-pixel positions
    # are quantised to 1/32 pixel, far below the detectors' resolution).
    out = cv2.remap(fmap, np.ascontiguousarray(mx).reshape(v * L, L),
                    np.ascontiguousarray(my).reshape(v * L, L), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(v, L, L, -1)


@functools.lru_cache(maxsize=8)
def hann_window(L):
    """Separable 2D Hann window, ``(L, L)``, positive everywhere (edges not zeroed)."""
    w = np.hanning(L + 2)[1:-1]
    return np.outer(w, w).astype(np.float32)


def preprocess_patches(patches, spec):
    """Zero mean per channel, optional Hann window, unit norm: ``(v, L, L, D)`` in and out.

    Correlation filters respond to the energy of a patch as much as to its shape; this
    removes brightness and contrast so the detector output is comparable across images
    (the data term then has a fixed scale, which the regularisation weight relies on).
    """
    v, L = patches.shape[0], patches.shape[1]
    # In place on one float32 copy, viewed as (v, L*L, D): this runs in every iteration.
    p = np.array(patches, np.float32).reshape(v, L * L, -1)
    p -= p.mean(axis=1, keepdims=True)
    if spec.window:
        p *= hann_window(spec.patch).reshape(1, L * L, 1)
    norm = np.sqrt(np.einsum("vkd,vkd->v", p, p))
    p *= (1.0 / (norm + 1e-6)).astype(np.float32)[:, None, None]
    return p.reshape(patches.shape)
