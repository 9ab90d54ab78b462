"""The 2D shape model: mean shape in the reference frame and a regularised full covariance.

The paper keeps the full ``2v x 2v`` covariance of the Procrustes-aligned shapes instead of
a PCA subspace (its contribution 2). That covariance is singular (the four similarity
directions have no variance after alignment, and with few images its rank is at most N-1),
so it is regularised here by shrinkage towards a scaled identity (Rao-Blackwellised
Ledoit-Wolf) -- the
shrinkage weight is estimated from the data, so ten annotated images give a near-isotropic
prior and two thousand a sharp one -- plus a small variance floor that keeps the model
usable from a single image.

Vectors use the paper's layout ``(x_1..x_v, y_1..y_v)``; arrays of points are ``(v, 2)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import apply_similarity, procrustes_mean, similarity_fit

__all__ = ["ShapeModel", "to_vec", "from_vec", "vector_sums"]


def to_vec(points):
    """``(v, 2)`` points -> ``(2v,)`` vector ``(x..., y...)``."""
    return np.asarray(points, float).T.reshape(-1)


def from_vec(vec):
    """``(2v,)`` vector ``(x..., y...)`` -> ``(v, 2)`` points."""
    return np.asarray(vec, float).reshape(2, -1).T.copy()


@dataclass
class ShapeModel:
    """Mean shape and regularised covariance in the reference (base-mesh) frame.

    Attributes
    ----------
    s0 : (v, 2) array
        Mean shape placed in the reference frame (pixels of that frame).
    frame_shape : tuple of int
        ``(height, width)`` of the reference frame that holds ``s0`` plus a margin.
    cov : (2v, 2v) array
        Regularised covariance of the aligned shapes (reference-frame pixels squared).
    n_shapes : int
        Number of training shapes.
    shape_sum, shape_sumsq : arrays
        Sufficient statistics ``sum x`` ``(2v,)`` and ``sum x x^T`` ``(2v, 2v)`` of the aligned
        shape vectors, so :meth:`add` updates the model without the old shapes.
    var_floor : float
        Variance added to the diagonal, in reference pixels squared.
    """

    s0: np.ndarray
    frame_shape: tuple
    cov: np.ndarray
    n_shapes: int
    shape_sum: np.ndarray
    shape_sumsq: np.ndarray
    var_floor: float
    shrinkage: float = 0.0

    @property
    def n_landmarks(self):
        return self.s0.shape[0]

    @property
    def sm(self):
        """Centre of mass of ``s0``, ``(2,)``."""
        return self.s0.mean(0)

    @property
    def mean(self):
        """Mean of the aligned training shapes, ``(v, 2)`` (moves with :meth:`add`)."""
        return from_vec(self.shape_sum / self.n_shapes)

    @property
    def precision(self):
        """``Sigma_s^-1``, ``(2v, 2v)``."""
        return np.linalg.inv(self.cov)

    @classmethod
    def train(cls, shapes, *, ref_size=40.0, margin=40.0, var_floor=0.25):
        """Fit the model to training shapes.

        Parameters
        ----------
        shapes : (N, v, 2) array
            Training shapes in image coordinates (NaN rows for missing landmarks).
        ref_size : float
            Size (RMS distance of the points from their centroid, see
            :func:`~napari_gsm.geometry.shape_size`) of the mean shape in the reference
            frame, in pixels: it fixes the scale at which detectors see the image.
        margin : float
            Border around ``s0`` in the reference frame, in pixels.
        var_floor : float
            Minimum variance per coordinate, in reference pixels squared.
        """
        shapes = np.asarray(shapes, float)
        if shapes.ndim != 3 or shapes.shape[2] != 2 or shapes.shape[1] < 3:
            raise ValueError(f"shapes must be (N, v>=3, 2), got {shapes.shape}")
        return cls.train_from_sums(shapes[0], lambda func, *args: func(shapes, *args),
                                   ref_size=ref_size, margin=margin, var_floor=var_floor)

    @classmethod
    def train_from_sums(cls, first, total, *, ref_size=40.0, margin=40.0, var_floor=0.25):
        """:meth:`train` from sums over the training shapes, which may be in parts
        elsewhere (on a cluster's workers): the Procrustes mean is iterated on their sums
        (:func:`~napari_gsm.geometry.procrustes_mean`) and the statistics are the sums of
        :func:`vector_sums`.

        Parameters
        ----------
        first : (v, 2) array
            The first training shape.
        total : callable ``(func, *args) -> sum``
            ``func(shapes, *args)`` of every part of the shapes (``(n, v, 2)`` each), added.
        ref_size, margin, var_floor
            As for :meth:`train`.
        """
        unit = procrustes_mean(first, total)
        mean = unit * ref_size
        lo = mean.min(0) - margin
        s0 = mean - lo
        hi = s0.max(0) + margin
        frame_shape = (int(np.ceil(hi[1])) + 1, int(np.ceil(hi[0])) + 1)
        n, shape_sum, shape_sumsq = total(vector_sums, unit, ref_size, lo)
        model = cls(
            s0=s0,
            frame_shape=frame_shape,
            cov=np.eye(2 * len(s0)),
            n_shapes=int(n),
            shape_sum=shape_sum,
            shape_sumsq=shape_sumsq,
            var_floor=float(var_floor),
        )
        model._refresh()
        return model

    def align(self, shape):
        """Similarity-align an image-frame shape onto ``s0``, ``(v, 2)``."""
        A, t = similarity_fit(shape, self.s0)
        return apply_similarity(shape, A, t)

    def add(self, shape):
        """Add one shape (image coordinates, ``(v, 2)``) to the statistics."""
        vec = to_vec(self.align(shape))
        vec = np.where(np.isfinite(vec), vec, self.shape_sum / self.n_shapes)
        self.n_shapes += 1
        self.shape_sum = self.shape_sum + vec
        self.shape_sumsq = self.shape_sumsq + np.outer(vec, vec)
        self._refresh()

    def remove(self, shapes):
        """Take shapes (image coordinates, ``(n, v, 2)``) out of the statistics.

        The inverse of :meth:`add` for complete shapes, as a model without those images
        (cross-validation); a missing landmark is taken out at the current mean.
        """
        for shape in shapes:
            vec = to_vec(self.align(shape))
            vec = np.where(np.isfinite(vec), vec, self.shape_sum / self.n_shapes)
            self.n_shapes -= 1
            self.shape_sum = self.shape_sum - vec
            self.shape_sumsq = self.shape_sumsq - np.outer(vec, vec)
        if self.n_shapes < 1:
            raise ValueError("cannot take out every shape of the model")
        self._refresh()

    def _refresh(self):
        n = self.n_shapes
        mean = self.shape_sum / n
        # Only the sums are kept (for incremental updates), so use the shrinkage estimate
        # that needs nothing but S: Rao-Blackwellised Ledoit-Wolf (Chen et al. 2010).
        S = self.shape_sumsq / n - np.outer(mean, mean)
        S = (S + S.T) / 2
        p = len(mean)
        mu = np.trace(S) / p
        if n < 2 or mu <= 0:
            delta = 1.0
        else:
            tr_s2 = (S * S).sum()
            num = ((n - 2) / n) * tr_s2 + np.trace(S) ** 2
            den = (n + 2) * (tr_s2 - np.trace(S) ** 2 / p)
            delta = 1.0 if den <= 0 else float(min(1.0, max(0.0, num / den)))
        self.shrinkage = delta
        self.cov = (1 - delta) * S + (delta * mu + self.var_floor) * np.eye(p)

    def to_arrays(self):
        return {
            "shape_s0": self.s0,
            "shape_frame": np.array(self.frame_shape),
            "shape_n": np.array(self.n_shapes),
            "shape_sum": self.shape_sum,
            "shape_sumsq": self.shape_sumsq,
            "shape_var_floor": np.array(self.var_floor),
        }

    @classmethod
    def from_arrays(cls, arrays):
        model = cls(
            s0=arrays["shape_s0"],
            frame_shape=tuple(int(x) for x in arrays["shape_frame"]),
            cov=np.eye(2 * len(arrays["shape_s0"])),
            n_shapes=int(arrays["shape_n"]),
            shape_sum=arrays["shape_sum"],
            shape_sumsq=arrays["shape_sumsq"],
            var_floor=float(arrays["shape_var_floor"]),
        )
        model._refresh()
        return model


def vector_sums(shapes, mean, ref_size, lo):
    """``(n, sum x, sum x x^T)`` of ``n`` shapes ``(n, v, 2)`` aligned to the Procrustes
    mean ``mean`` and placed in the reference frame (times ``ref_size``, minus ``lo``), as
    vectors ``x`` ``(2v,)``; a missing landmark is taken at the mean (it then adds no
    variance)."""
    mvec = to_vec(mean * ref_size - lo)
    if len(shapes) == 0:
        return 0, np.zeros(len(mvec)), np.zeros((len(mvec), len(mvec)))
    vecs = []
    for s in shapes:
        A, t = similarity_fit(s, mean)
        vecs.append(to_vec(apply_similarity(s, A, t) * ref_size - lo))
    vecs = np.where(np.isfinite(vecs), vecs, mvec)
    return len(vecs), vecs.sum(0), vecs.T @ vecs
