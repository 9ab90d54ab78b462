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
        w2 = w.astype(np.float64) ** 2
        self.w2sum = float(w2.sum())
        self.w2_32 = w2.astype(np.float32)
        # The mean and the squared-window sum of every channel, in one product.
        self.mean_w2 = np.stack([np.full(K, 1.0 / K, np.float32), self.w2_32])
        h = filters.reshape(v, 6, K, D)
        # Windowed filters, flattened in the order cv2.remap lays out a patch's samples.
        self.W = np.ascontiguousarray((w[None, None, :, None] * h).reshape(v, 6, K * D))
        self.w2_rep = np.repeat(self.w2_32, D)
        self.c = np.einsum("k,vjkd->vjd", w.astype(np.float64), h)  # (v, 6, D)
        grid = spec.stride * np.arange(L) - spec.extent
        gy, gx = np.meshgrid(grid, grid, indexing="ij")
        self.gx, self.gy = gx.ravel(), gy.ravel()

    def read(self, fmap, centres):
        """Features at ``centres (n, v, 2)`` (frame pixels) of ``fmap (H, W, D)``: ``(n, 6v)``.

        Blocks of ``v`` in the result: ``<I,h>, <I,h_x>, <I,h_y>, <I,h_xx>, <I,h_yy>, <I,h_xy>``.
        """
        fmap = np.asarray(fmap, np.float32)
        centres = np.asarray(centres, np.float64)
        n, v = centres.shape[:2]
        if n * v > 30000:  # cv2.remap's maps are limited to SHRT_MAX rows
            step = max(1, 30000 // v)
            return np.concatenate([self.read(fmap, centres[i:i + step])
                                   for i in range(0, n, step)])
        cx = centres[..., 0].T.reshape(-1, 1)  # landmark-major rows: i * n + j
        cy = centres[..., 1].T.reshape(-1, 1)
        m1, m2 = cv2.convertMaps((cx + self.gx).astype(np.float32),
                                 (cy + self.gy).astype(np.float32), cv2.CV_16SC2)
        # One remap reads every channel (faster than per-channel-group remaps here).
        P = cv2.remap(fmap, m1, m2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        P = P.reshape(v * n, self.L * self.L, self.D)
        # Every reduction is a matrix product: numpy's axis reductions are much slower.
        A = np.matmul(self.W, P.reshape(v, n, -1).transpose(0, 2, 1))  # (v, 6, n)
        # The norm's terms cancel: combine them in float64.
        mean, S = (self.mean_w2 @ P).astype(np.float64).transpose(1, 0, 2)  # (v n, D)
        T = (np.square(P.reshape(v * n, -1)) @ self.w2_rep).astype(np.float64)
        norm2 = T - 2 * (mean * S).sum(1) + (mean * mean).sum(1) * self.w2sum
        norm = np.sqrt(np.maximum(norm2, 0.0)) + 1e-6
        A = A - np.einsum("vnd,vjd->vjn", mean.reshape(v, n, -1), self.c)
        A /= norm.reshape(v, 1, n)
        return A.transpose(2, 1, 0).reshape(n, 6 * v)
