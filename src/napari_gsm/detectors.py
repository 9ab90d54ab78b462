"""Multi-channel correlation filters trained on the Gaussian target and its derivatives.

For landmark ``i``, the MCCF of the paper (eq. 5) solves, independently per spatial
frequency ``w``, the ridge regression

    (eps I + sum_j conj(x_j(w)) x_j(w)^T) c(w) = sum_j conj(x_j(w)) G(w)

where ``x_j(w)`` is the ``D``-vector of channel spectra of training patch ``j`` and ``c`` the
conjugate filter spectrum. All training patches share one target, so the right-hand side is
``b(w) G(w)`` with ``b = sum_j conj(x_j)``: one ``D x D`` solve per frequency gives
``z = (eps I + S)^-1 b`` and every target's filter is ``z * G_k`` (the filter is linear in the
target, paper eq. 18). ``S`` and ``b`` are sums over images, so adding an accepted image
updates them and a re-solve (milliseconds) refreshes all filters.

The six targets are ``g``, ``-dg/dx``, ``-dg/dy``, ``-d2g/dx2``, ``-d2g/dy2``, ``-d2g/dxdy``
of the Gaussian ``g(u) = exp(-|u|^2 / (2 sigma^2))``, where ``u`` is the displacement of the
patch centre from the landmark, in reference-frame pixels. With that convention
``<I, h_x>`` is the derivative of the cost ``-<I, h>`` with respect to the landmark's
position (paper eqs. 19-21, 28-32; eq. 30 there has the opposite sign for the mixed term:
``d2(-g)/dxdy = -x y / sigma^4 g``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TARGETS", "derivative_targets", "Detectors"]

TARGETS = ("g", "gx", "gy", "gxx", "gyy", "gxy")


def derivative_targets(L, stride, sigma):
    """The six targets on the circular correlation grid, ``(6, L, L)``.

    Parameters
    ----------
    L : int
        Patch side in grid samples.
    stride : float
        Grid spacing in pixels.
    sigma : float
        Gaussian width in pixels.

    Index ``k`` of an axis is the displacement ``k`` (``k - L`` past the middle) grid steps.
    ``g`` is the Gaussian sampled on that grid; the five others are its derivatives taken
    in the Fourier domain (the derivatives of the trigonometric interpolant of the sampled
    ``g``), not the analytic derivatives sampled. The two agree where the Gaussian fits in
    the patch; where a wide target is cut off by the patch edge (or aliased), only these
    are the derivatives of what the ``g`` filter is trained to answer, so the gradient and
    Hessian a fit reads stay those of one cost.
    """
    k = np.fft.fftfreq(L, 1.0 / L) * stride
    uy, ux = np.meshgrid(k, k, indexing="ij")
    g = np.exp(-(ux**2 + uy**2) / (2 * sigma * sigma))
    G = np.fft.fft2(g)
    w = 2 * np.pi * np.fft.fftfreq(L, stride)
    odd = w.copy()
    if L % 2 == 0:
        odd[L // 2] = 0.0  # the Nyquist bin has no odd (real) derivative
    wy, wx = np.meshgrid(w, w, indexing="ij")
    oy, ox = np.meshgrid(odd, odd, indexing="ij")
    # FFT of d/dx is (i wx) G; the targets are minus the derivatives of g
    spectra = [-1j * ox * G, -1j * oy * G, wx**2 * G, wy**2 * G, ox * oy * G]
    return np.stack([g] + [np.fft.ifft2(s).real for s in spectra])


@dataclass
class Detectors:
    """Six correlation filters per landmark and the statistics they are solved from.

    Attributes
    ----------
    sigmas : tuple of float
        Target widths, in reference-frame pixels, coarse to fine. The filters of every
        width come from the same statistics (only the target changes), so a coarse-to-fine
        schedule costs nothing at training time: the wide targets give gradients far from
        the landmark (capture range), the narrow ones precision.
    stride : float
        Patch grid spacing, in pixels.
    reg : float
        Ridge weight ``eps``, relative to the mean spectral energy of the training patches.
    S : (v, L, L//2+1, D, D) complex array
        ``sum_j conj(x_j) x_j^T`` per frequency.
    b : (v, L, L//2+1, D) complex array
        ``sum_j conj(x_j)`` per frequency.
    n : int
        Number of training patches per landmark.
    filters : (n_sigmas, v, 6, L, L, D) float32 array
        Spatial filters, in :data:`TARGETS` order, per target width.
    """

    sigmas: tuple
    stride: float
    reg: float
    S: np.ndarray
    b: np.ndarray
    n: int
    filters: np.ndarray = None

    @classmethod
    def empty(cls, v, L, D, *, sigmas, stride, reg=1e-2):
        Lr = L // 2 + 1
        return cls(sigmas=tuple(float(s) for s in np.atleast_1d(sigmas)), stride=float(stride), reg=float(reg),
                   S=np.zeros((v, L, Lr, D, D), np.complex128),
                   b=np.zeros((v, L, Lr, D), np.complex128), n=0)

    @property
    def sigma(self):
        """The finest target width."""
        return self.sigmas[-1]

    @property
    def patch(self):
        return self.S.shape[1]

    def accumulate(self, patches):
        """Add training patches to the statistics (filters are not re-solved).

        Parameters
        ----------
        patches : (N, v, L, L, D) or (v, L, L, D) array
            Preprocessed patches centred on the true landmarks.
        """
        patches = np.asarray(patches, np.float32)
        if patches.ndim == 4:
            patches = patches[None]
        X = np.fft.rfft2(patches.astype(np.float64), axes=(2, 3))  # (N, v, L, Lr, D)
        Xc = np.conj(X)
        self.S += np.einsum("nvyxd,nvyxe->vyxde", Xc, X)
        self.b += Xc.sum(0)
        self.n += patches.shape[0]

    def solve(self):
        """Re-solve all filters from the statistics."""
        if self.n == 0:
            raise ValueError("no training patches")
        v, L, Lr, D, _ = self.S.shape
        diag = np.einsum("vyxdd->vyx", self.S).real
        eps = self.reg * diag.mean() / D + 1e-12
        A = self.S + eps * np.eye(D)
        z = np.linalg.solve(A, self.b[..., None])[..., 0]  # (v, L, Lr, D)
        filters = []
        for sigma in self.sigmas:
            G = np.fft.rfft2(derivative_targets(L, self.stride, sigma))  # (6, L, Lr)
            C = z[:, None] * G[None, :, :, :, None]  # (v, 6, L, Lr, D), conj filter spectra
            filters.append(np.fft.irfft2(np.conj(C), s=(L, L), axes=(2, 3)))
        self.filters = np.stack(filters).astype(np.float32)
        self._flat = self.filters.reshape(len(self.sigmas), v, 6, -1)
        self._readers = {}
        return self

    def for_fitting(self):
        """A copy that keeps the filters only (no ``S``, ``b``): what a fit needs, a fraction
        of the size, to send to the workers of a cluster. It cannot :meth:`solve`."""
        out = Detectors(self.sigmas, self.stride, self.reg, None, None, self.n, self.filters)
        out.__setstate__(out.__getstate__())
        return out

    def __getstate__(self):
        # The caches (a view of the filters, the readers) are rebuilt, not pickled.
        return {k: getattr(self, k) for k in ("sigmas", "stride", "reg", "S", "b", "n",
                                              "filters")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.filters is not None:
            self._flat = self.filters.reshape(len(self.sigmas), self.filters.shape[1], 6, -1)
            self._readers = {}

    def reader(self, level, spec):
        """The fast :class:`~napari_gsm.responses.FeatureReader` of target width ``level``.

        Cached until the next :meth:`solve`; ``spec`` is the model's feature spec.
        """
        level = level % len(self.sigmas)
        if level not in self._readers:
            from .responses import FeatureReader

            self._readers[level] = FeatureReader(self.filters[level], spec)
        return self._readers[level]

    def responses(self, patches, level=-1):
        """The six dot products per landmark, ``(v, 6)`` in :data:`TARGETS` order.

        ``patches`` is ``(v, L, L, D)``, preprocessed as in training; ``level`` indexes
        :attr:`sigmas` (default: the finest).
        """
        v = patches.shape[0]
        return np.einsum("vk,vjk->vj", patches.reshape(v, -1), self._flat[level])

    def to_arrays(self):
        return {"det_S": self.S, "det_b": self.b,
                "det_n": np.array(self.n), "det_sigmas": np.array(self.sigmas),
                "det_stride": np.array(self.stride), "det_reg": np.array(self.reg)}

    @classmethod
    def from_arrays(cls, arrays):
        return cls(sigmas=tuple(float(x) for x in arrays["det_sigmas"]), stride=float(arrays["det_stride"]),
                   reg=float(arrays["det_reg"]), S=np.array(arrays["det_S"], np.complex128),
                   b=np.array(arrays["det_b"], np.complex128), n=int(arrays["det_n"])).solve()
