"""Similarity transforms, Procrustes alignment and the pose of the paper.

Shapes are ``(v, 2)`` arrays of ``(x, y)`` in 0-based pixel coordinates. The pose
``theta = (a, b, tx, ty)`` of the paper (eq. 2) maps a shape ``s`` in the image frame into
the base-mesh (reference) frame::

    S(s_i) = A (s_i - sm) + t + sm,     A = [[a, -b], [b, a]]

where ``sm`` is the centre of mass of the mean shape ``s0``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "similarity_fit",
    "apply_similarity",
    "pose_from_shape",
    "pose_from_similarity",
    "to_base_mesh",
    "from_base_mesh",
    "pose_matrix",
    "generalized_procrustes",
    "procrustes_mean",
    "aligned_sum",
    "rotation_sum",
    "shape_size",
]


def similarity_fit(src, dst):
    """Least-squares similarity mapping ``src`` onto ``dst``.

    Parameters
    ----------
    src, dst : (v, 2) array
        Corresponding points; rows with a NaN in either are ignored.

    Returns
    -------
    A : (2, 2) array
        ``[[a, -b], [b, a]]`` (scale times rotation).
    t : (2,) array
        Translation, so that ``dst ~ src @ A.T + t``.
    """
    src = np.asarray(src, float)
    dst = np.asarray(dst, float)
    ok = np.isfinite(src).all(1) & np.isfinite(dst).all(1)
    if ok.sum() < 2:
        raise ValueError("a similarity needs at least two points present in both shapes")
    s, d = src[ok], dst[ok]
    mu_s, mu_d = s.mean(0), d.mean(0)
    s, d = s - mu_s, d - mu_d
    denom = (s**2).sum()
    if denom <= 0:
        raise ValueError("degenerate shape: all points coincide")
    a = (s * d).sum() / denom
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / denom
    A = np.array([[a, -b], [b, a]])
    return A, mu_d - mu_s @ A.T


def apply_similarity(points, A, t):
    """Apply ``x -> A x + t`` to ``(v, 2)`` points."""
    return np.asarray(points, float) @ np.asarray(A).T + t


def pose_matrix(theta):
    """``A`` of a pose ``theta = (a, b, tx, ty)``."""
    a, b = theta[0], theta[1]
    return np.array([[a, -b], [b, a]])


def pose_from_shape(shape, s0, sm):
    """Pose ``theta`` that best maps an image-frame ``shape`` onto ``s0``.

    Solves ``S(shape, theta) ~ s0`` in the least-squares sense (Procrustes).
    """
    return pose_from_similarity(*similarity_fit(shape, s0), sm)


def pose_from_similarity(A, t, sm):
    """Pose ``theta`` of the similarity ``x -> A x + t`` (image -> reference frame)."""
    # S(s) = A s + (t_pose + sm - A sm)  =>  t_pose = t - sm + A sm
    t_pose = t - sm + A @ sm
    return np.array([A[0, 0], A[1, 0], t_pose[0], t_pose[1]])


def to_base_mesh(shape, theta, sm):
    """``S(shape, theta)``: image frame -> base mesh, ``(v, 2)``."""
    A = pose_matrix(theta)
    return (np.asarray(shape, float) - sm) @ A.T + theta[2:4] + sm


def from_base_mesh(shape_bm, theta, sm):
    """Inverse of :func:`to_base_mesh`."""
    A = pose_matrix(theta)
    return np.linalg.solve(A, (np.asarray(shape_bm, float) - theta[2:4] - sm).T).T + sm


def shape_size(shape):
    """Size of a shape: the root-mean-square distance of its points from their centroid."""
    shape = np.asarray(shape, float)
    shape = shape[np.isfinite(shape).all(1)]
    return float(np.sqrt(((shape - shape.mean(0)) ** 2).sum(1).mean()))


def generalized_procrustes(shapes, *, n_iter=20, tol=1e-10):
    """Generalised Procrustes analysis.

    Parameters
    ----------
    shapes : (N, v, 2) array
        Training shapes (NaN rows allowed for missing landmarks).

    Returns
    -------
    mean : (v, 2) array
        :func:`procrustes_mean` of the shapes.
    aligned : (N, v, 2) array
        Every shape similarity-aligned to ``mean``.
    """
    shapes = np.asarray(shapes, float)
    mean = procrustes_mean(shapes[0], lambda func, *args: func(shapes, *args),
                           n_iter=n_iter, tol=tol)
    aligned = np.empty_like(shapes)
    for k, s in enumerate(shapes):
        A, t = similarity_fit(s, mean)
        aligned[k] = apply_similarity(s, A, t)
    return mean, aligned


def procrustes_mean(first, total, *, n_iter=20, tol=1e-10):
    """The mean shape of generalised Procrustes analysis, from sums over the shapes only.

    Every round aligns all shapes to the current mean and needs only their sum
    (:func:`aligned_sum`), so the shapes may be anywhere: in parts on other machines.

    Parameters
    ----------
    first : (v, 2) array
        The first training shape (the first reference).
    total : callable ``(func, *args) -> sum``
        ``func(shapes, *args)`` applied to every part of the training shapes (an
        ``(n, v, 2)`` array each) and the parts' results added (elementwise for tuples).

    Returns
    -------
    mean : (v, 2) array
        Centred at the origin with unit :func:`shape_size`, turned like the training
        shapes are on average (the circular mean of their rotations against it is 0), so
        a start placed without rotation -- from a box -- is as upright as the average
        training image, not as the first one.
    """
    ref = np.asarray(first, float)
    ref = (ref - np.nanmean(ref, 0)) / shape_size(ref)
    for _ in range(n_iter):
        sums, counts = total(aligned_sum, ref)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / counts[:, None]  # a landmark missing in every shape stays NaN
        mean = (mean - mean.mean(0)) / shape_size(mean)
        # Pin the mean's rotation to the first reference so the iteration cannot drift.
        A, t = similarity_fit(mean, ref)
        mean = apply_similarity(mean, A / np.sqrt(abs(np.linalg.det(A))), 0)
        mean -= mean.mean(0)
        change = np.abs(mean - ref).max()
        ref = mean
        if change < tol:
            break
    # The iteration's rotation is the first shape's (a face tilted by 16 degrees tilted
    # every box start by as much); turn the mean to the shapes' average rotation.
    turn = total(rotation_sum, ref)
    c, s_ = turn / (np.hypot(*turn) + 1e-300)
    return ref @ np.array([[c, s_], [-s_, c]])  # rotate every point by the mean angle


def aligned_sum(shapes, ref):
    """Sum of ``(N, v, 2)`` shapes similarity-aligned to ``ref`` (missing landmarks count
    0) and how many shapes have each landmark, ``((v, 2), (v,))``."""
    sums = np.zeros(np.shape(ref))
    counts = np.zeros(len(sums))
    for s in shapes:
        A, t = similarity_fit(s, ref)
        a = apply_similarity(s, A, t)
        ok = np.isfinite(a).all(1)
        sums[ok] += a[ok]
        counts += ok
    return sums, counts


def rotation_sum(shapes, ref):
    """Sum of the unit vectors ``(cos, sin)`` of the rotations of ``ref`` onto each shape."""
    turn = np.zeros(2)
    for s in shapes:
        A, _ = similarity_fit(ref, s)
        turn += A[:, 0] / np.hypot(*A[:, 0])
    return turn
