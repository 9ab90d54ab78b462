"""Synthetic landmark images with known answers, shared by the tests.

Each landmark is drawn as its own small pattern (a bright or dark blob with an oriented bar,
different per landmark), on a smooth random background, so a detector can learn each one
and the truth is exact.
"""

from __future__ import annotations

import cv2
import numpy as np

TEMPLATE = np.array([[-30, -20], [0, -28], [30, -20], [-22, 6], [22, 6], [0, 10],
                     [-14, 26], [14, 26]], float)


def render(points, shape=(128, 128), seed=0, noise=0.03):
    """A grey float32 image with a landmark pattern at every ``(x, y)`` of ``points``."""
    rng = np.random.default_rng(seed)
    H, W = shape
    img = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), 6) * 0.3 + 0.5
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    for k, (x, y) in enumerate(points):
        sign = 1.0 if k % 2 == 0 else -1.0
        ang = np.pi * k / len(points)
        dx, dy = xx - x, yy - y
        u = dx * np.cos(ang) + dy * np.sin(ang)
        w = -dx * np.sin(ang) + dy * np.cos(ang)
        img += sign * 0.5 * np.exp(-(dx**2 + dy**2) / (2 * 2.5**2))
        img += 0.25 * np.exp(-(u**2 / (2 * 5.0**2) + w**2 / (2 * 1.2**2)))
    img += noise * rng.standard_normal(shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def random_shape(rng, centre=(64, 64), scale=(0.9, 1.1), angle=0.15, deform=1.5,
                 template=TEMPLATE):
    """The template under a random similarity plus a small per-point deformation."""
    k = rng.uniform(*scale)
    a = rng.uniform(-angle, angle)
    R = k * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    c = np.asarray(centre, float) + rng.uniform(-6, 6, 2)
    return template @ R.T + c + rng.normal(0, deform, template.shape)


def make_set(n, seed=0, **kw):
    """``n`` pairs ``(image, points)``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        pts = random_shape(rng, **kw)
        out.append((render(pts, seed=seed * 1000 + i), pts))
    return out
