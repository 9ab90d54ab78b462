"""The six detector responses of many patches at once, read straight from a feature map.

This is how every fitter gets its data term (GSM, GSM 2D+3D, GSM-CR): it gives exactly
``Detectors.responses(preprocess_patches(sample_patches(...)))`` (the reference definition,
which the tests compare it with) without building the sampled or preprocessed patches.

The response of a preprocessed patch (zero mean per channel, Hann window ``w``, unit norm;
:func:`~napari_gsm.features.preprocess_patches`) to a filter ``h`` is linear in the raw
patch ``P`` apart from the normalisation, so it is computed without materialising the
preprocessed patch::

    <(P - m) w / |(P - m) w|, h> = (<P, w h> - sum_d m_d sum_k w_k h_kd) / |(P - m) w|
    |(P - m) w|^2 = sum w^2 P^2 - 2 sum_d m_d sum_k w_k^2 P_kd + sum_d m_d^2 sum_k w_k^2

Patches are read with ``cv2.remap`` (bilinear, border replicated, as
:func:`~napari_gsm.features.sample_patches`, several times faster). OpenCV rounds sample
positions to 1/32 pixel, a difference from ``sample_patches`` well below the features'
noise; every fitter and the cascade's training read features here, so they always agree.
"""

from __future__ import annotations

import cv2
import numpy as np

from .features import hann_window

__all__ = ["FeatureReader"]


class FeatureReader:
    """Reads ``(n, 6v)`` GSM features (eq. 50 order) at many shapes from one feature map.

    Get one from :meth:`napari_gsm.detectors.Detectors.reader` (cached per target width).

    Parameters
    ----------
    filters : (v, 6, L, L, D) array
        Detector filters of one target width.
    spec : FeatureSpec
    """

    def __init__(self, filters, spec):
        filters = np.asarray(filters, np.float32)
        v, six, L, L2, D = filters.shape
        if six != 6 or L != L2 or L != spec.patch:
            raise ValueError(f"filters {filters.shape} do not match patch {spec.patch}")
        self.v, self.L, self.D = v, L, D
        w = (hann_window(L) if spec.window else np.ones((L, L), np.float32)).ravel()
        K = L * L
        self.w2 = (w.astype(np.float64) ** 2)
        self.w2sum = float(self.w2.sum())
        self.w2_32 = self.w2.astype(np.float32)
        self.ones_k = np.full(L * L, 1.0 / (L * L), np.float32)
        h = filters.reshape(v, 6, K, D)
        # Channels in chunks of at most 4: cv2.remap's 1-4 channel paths are vectorised
        # (3 x 3 channels measured 1.6x faster than one 9-channel remap).
        step = D if D <= 4 else 3
        self.chunks = [(d, min(d + step, D)) for d in range(0, D, step)]
        self.W = [np.ascontiguousarray((w[None, None, :, None] * h[..., a:b])
                                       .reshape(v, 6, -1).transpose(0, 2, 1))
                  for a, b in self.chunks]  # per chunk (v, K*Dc, 6)
        self.c = np.einsum("k,vjkd->vjd", w.astype(np.float64), h)  # (v, 6, D)
        grid = spec.stride * np.arange(L) - spec.extent
        gy, gx = np.meshgrid(grid, grid, indexing="ij")
        self.gx, self.gy = gx.ravel(), gy.ravel()

    def split(self, fmap):
        """``fmap (H, W, D)`` as contiguous channel chunks, for repeated :meth:`read` calls."""
        # cv2.split + merge: several times faster than numpy's strided channel-slice copies.
        planes = cv2.split(np.ascontiguousarray(fmap, np.float32))
        return [cv2.merge(planes[a:b]) if b - a > 1 else planes[a] for a, b in self.chunks]

    def read(self, fmap, centres):
        """Features at ``centres (n, v, 2)`` (frame pixels) of ``fmap (H, W, D)``: ``(n, 6v)``.

        ``fmap`` may also be the list returned by :meth:`split`. Blocks of ``v`` in the
        result: ``<I,h>, <I,h_x>, <I,h_y>, <I,h_xx>, <I,h_yy>, <I,h_xy>``.
        """
        if not isinstance(fmap, list):
            fmap = self.split(fmap)
        centres = np.asarray(centres, np.float64)
        n, v = centres.shape[:2]
        if n * v > 30000:  # cv2.remap's maps are limited to SHRT_MAX rows
            step = max(1, 30000 // v)
            return np.concatenate([self.read(fmap, centres[i:i + step])
                                   for i in range(0, n, step)])
        cx = centres[..., 0].T.reshape(-1, 1)  # landmark-major rows: i * n + j
        cy = centres[..., 1].T.reshape(-1, 1)
        mx = (cx + self.gx).astype(np.float32)
        my = (cy + self.gy).astype(np.float32)
        m1, m2 = cv2.convertMaps(mx, my, cv2.CV_16SC2)
        K = self.L * self.L
        A = np.zeros((v, n, 6))
        mean = np.empty((v * n, self.D))
        S = np.empty((v * n, self.D))
        T = np.zeros(v * n)
        for (a, b), W, src in zip(self.chunks, self.W, fmap):
            P = cv2.remap(src, m1, m2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            P = P.reshape(v * n, K, b - a)
            # Every reduction is a matrix product: numpy's axis reductions are much slower.
            A += np.matmul(P.reshape(v, n, -1), W)
            mean[:, a:b] = self.ones_k @ P
            S[:, a:b] = self.w2_32 @ P
            Pf = P.reshape(v * n, -1)
            T += np.square(Pf) @ np.repeat(self.w2_32, b - a)
        norm2 = T - 2 * (mean * S).sum(1) + (mean * mean).sum(1) * self.w2sum
        norm = np.sqrt(np.maximum(norm2, 0.0)) + 1e-6
        A -= np.einsum("vnd,vjd->vnj", mean.reshape(v, n, -1), self.c)
        A /= norm.reshape(v, n, 1)
        return A.transpose(1, 2, 0).reshape(n, 6 * v)
