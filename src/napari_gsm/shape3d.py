"""3D shape model from 2D annotations only: non-rigid structure from motion (NRSfM).

The GSM 2D+3D fitter (paper section 4) needs a 3D mean shape ``S3_0`` and a covariance
``Sigma_3``. The paper gets them with NRSfM on the training annotations; here the images are
unordered (no video), so:

1. **Rigid start** -- the 2D shapes, similarity-aligned to the reference frame, form a
   ``2N x v`` measurement matrix. Missing landmarks are imputed by alternating a rank-3
   reconstruction (plus per-row translation) with refilling. The rank-3 factor
   ``W = M B`` is upgraded to a metric one (Tomasi-Kanade): every camera's two rows must be
   orthogonal with a common norm, which is linear in ``G = Q Q^T``; ``G`` is solved by least
   squares, made positive definite, and ``Q`` taken from its eigen decomposition. The mean
   shape is ``Q^-1 B``.
2. **Deformations** -- EM for a probabilistic low-rank model (Torresani et al. 2008, PAMI):
   ``S_n = S_mean + sum_l z_nl V_l`` with ``z_n ~ N(0, I_k)`` and the observation
   ``w_n = sigma_n R_n S_n + t_n + noise(sigma^2)`` (scaled orthographic camera). The E-step is
   a ``k x k`` Gaussian posterior per image; the M-step for ``(S_mean, V)`` decouples into one
   ``3(k+1)`` linear system per landmark (the camera acts landmark by landmark); cameras are
   re-fitted by orthographic Procrustes to the expected shapes, and ``sigma^2`` from the
   expected residual. Missing landmarks are simply absent from every sum.

Conventions. 3D points are ``(v, 3)`` ``(x, y, z)`` with ``x`` right and ``y`` down as in
the images and ``z = x cross y`` pointing away from the camera. The result is expressed in
the reference frame's units: the scale is fixed so the mean camera scale is 1, i.e. the mean
3D shape seen frontally has the size of ``ShapeModel.s0``. Orthographic NRSfM cannot tell the
depth sign (a mirrored shape seen by mirrored cameras gives the same images); the sign is
chosen so landmarks far from the shape's centre (in x, y) lie further from the camera than
central ones (an object seen from outside: for faces the nose points at the camera). The
rotation is chosen so the average training camera is the identity (a "frontal" mean pose).
A user-supplied mean shape (:func:`load_mean3d`) keeps its own orientation and sign; only
its scale and position are normalised, and then only the deformation model is learned.

The covariance is ``Sigma_3 = V V^T + (sigma^2 + var_floor) I`` -- the PPCA form, so it is
always invertible, with the 2D model's variance floor -- in the layout
``(x_1..x_v, y_1..y_v, z_1..z_v)`` of the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Shape3DModel", "nrsfm", "ortho_procrustes", "load_mean3d", "to_vec3", "from_vec3",
           "rotation_to_euler", "euler_to_rotation"]


def to_vec3(points):
    """``(v, 3)`` points -> ``(3v,)`` vector ``(x..., y..., z...)``."""
    return np.asarray(points, float).T.reshape(-1)


def from_vec3(vec):
    """``(3v,)`` vector ``(x..., y..., z...)`` -> ``(v, 3)`` points."""
    return np.asarray(vec, float).reshape(3, -1).T.copy()


def euler_to_rotation(yaw, pitch, roll):
    """``R = Rz(roll) Ry(yaw) Rx(pitch)`` from angles in degrees, ``(3, 3)``."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    Rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    Ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    Rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def rotation_to_euler(R):
    """``(yaw, pitch, roll)`` in degrees of ``R = Rz(roll) Ry(yaw) Rx(pitch)``.

    Yaw turns about the image's vertical (y) axis, pitch about its horizontal (x) axis,
    roll in the image plane.
    """
    R = np.asarray(R, float)
    r00, r10, r20, r21, r22 = R[0, 0], R[1, 0], R[2, 0], R[2, 1], R[2, 2]
    yaw = math.asin(min(1.0, max(-1.0, -r20)))
    pitch = math.atan2(r21, r22)
    roll = math.atan2(r10, r00)
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def _project_rotation(M):
    """Nearest rotation (det +1) to each ``(..., 3, 3)`` matrix, by SVD."""
    U, _, Vt = np.linalg.svd(M)
    d = np.sign(np.linalg.det(U @ Vt))
    d = np.where(d == 0, 1.0, d)
    U = U.copy()
    U[..., :, 2] *= d[..., None]
    return U @ Vt


def _ortho_cameras(X, w, m, R=None, n_iter=30):
    """Scaled orthographic Procrustes, batched: ``w_n ~ sigma_n R_n[:2] X_n + t_n``.

    Parameters
    ----------
    X : (N, v, 3) array
    w : (N, v, 2) array
        Observations (values at ``m == 0`` are ignored).
    m : (N, v) array of 0/1
    R : (N, 3, 3) array, optional
        Warm start; without it an affine camera, projected to a scaled rotation, starts.
    n_iter : int

    Returns
    -------
    sigma : (N,) array
    R : (N, 3, 3) array of rotations
    t : (N, 2) array

    Notes
    -----
    Alternates the unknown depths ``z = sigma r_3 . X`` with a 3D similarity (Umeyama) to
    ``(w, z)``: both steps lower ``||w - sigma R_o X - t||^2``, so the cost never rises.
    """
    m = np.asarray(m, float)
    cnt = np.maximum(m.sum(1), 1)[:, None]
    w = np.where(m[..., None] > 0, w, 0.0)
    Xb = (m[..., None] * X).sum(1) / cnt
    wb = (m[..., None] * w).sum(1) / cnt
    Xc = (X - Xb[:, None]) * m[..., None]
    wc = (w - wb[:, None]) * m[..., None]
    XX = np.maximum((Xc**2).sum((1, 2)), 1e-12)
    if R is None:
        # Affine camera P (2x3) by least squares, then its nearest scaled rotation rows.
        A = np.einsum("nva,nvb->nab", Xc, Xc) + 1e-9 * XX[:, None, None] * np.eye(3)
        B = np.einsum("nvi,nvb->nib", wc, Xc)
        P = np.linalg.solve(A, B.transpose(0, 2, 1)).transpose(0, 2, 1)
        U, S, Vt = np.linalg.svd(P, full_matrices=False)
        Ro = U @ Vt[:, :2]
        R = np.concatenate([Ro, np.cross(Ro[:, 0], Ro[:, 1])[:, None]], 1)
        sigma = S.mean(1)
    else:
        R = np.array(R, float)
        sigma = np.einsum("nva,nia,nvi->n", Xc, R[:, :2], wc) / np.maximum(
            np.einsum("nva,nia,nvi->n", Xc, R[:, :2], Xc @ R[:, :2].transpose(0, 2, 1)), 1e-12)
    for _ in range(n_iter):
        z = sigma[:, None] * (Xc @ R[:, 2][..., None])[..., 0]
        Y = np.concatenate([wc, z[..., None]], 2)
        M = np.einsum("nvi,nvj->nij", Y, Xc)
        U, S, Vt = np.linalg.svd(M)
        d = np.sign(np.linalg.det(U @ Vt))
        D = np.ones((len(X), 3))
        D[:, 2] = np.where(d == 0, 1, d)
        R_old, R = R, (U * D[:, None]) @ Vt
        sigma = (S * D).sum(1) / XX
        if np.abs(R - R_old).max() < 1e-12:  # converged (a fit's start pays for each pass)
            break
    t = wb - sigma[:, None] * np.einsum("nia,na->ni", R[:, :2], Xb)
    return sigma, R, t


def ortho_procrustes(X, w, R=None, n_iter=30):
    """Scaled orthographic camera mapping 3D points onto 2D points.

    Parameters
    ----------
    X : (v, 3) array
    w : (v, 2) array
        Rows with a NaN are ignored.
    R : (3, 3) array, optional
        Starting rotation.

    Returns
    -------
    sigma : float
    R : (3, 3) array
        Rotation (det +1); ``w ~ sigma * X @ R[:2].T + t``.
    t : (2,) array
    """
    w = np.asarray(w, float)
    m = (np.isfinite(w).all(1) & np.isfinite(X).all(1)).astype(float)
    sigma, R, t = _ortho_cameras(np.nan_to_num(np.asarray(X, float))[None],
                                 np.nan_to_num(w)[None], m[None],
                                 None if R is None else np.asarray(R)[None], n_iter)
    return float(sigma[0]), R[0], t[0]


def load_mean3d(path, n_landmarks):
    """Read a user-supplied 3D mean shape: ``.npy``, or CSV/text with v rows x 3 columns.

    Raises
    ------
    ValueError
        Naming the file, when it cannot be read, has the wrong number of landmarks or
        columns, or holds non-finite values.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            text = path.read_text()
            delim = "," if "," in text else None
            arr = np.loadtxt(path, delimiter=delim, ndmin=2)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read a 3D mean shape ({exc})") from exc
    return _check_mean3d(arr, n_landmarks, str(path))


def _check_mean3d(arr, n_landmarks, name="mean3d"):
    arr = np.asarray(arr, float)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name}: a 3D mean shape needs 3 columns (x, y, z), got shape "
                         f"{arr.shape}")
    if arr.shape[0] != n_landmarks:
        raise ValueError(f"{name}: {arr.shape[0]} landmarks, the model has {n_landmarks}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: non-finite values in the 3D mean shape")
    return arr


@dataclass
class Shape3DModel:
    """Low-rank Gaussian 3D shape model (reference-frame units).

    Attributes
    ----------
    mean : (v, 3) array
        Mean 3D shape, centred at the origin.
    modes : (k, v, 3) array
        Deformation modes ``V_l`` (columns of ``V``, scaled: ``z ~ N(0, I)``).
    noise_var : float
        Residual variance ``sigma^2`` per coordinate (reference pixels squared).
    var_floor : float
        Variance added to the diagonal of the covariance.
    """

    mean: np.ndarray
    modes: np.ndarray
    noise_var: float
    var_floor: float = 0.25

    @property
    def n_landmarks(self):
        return self.mean.shape[0]

    @property
    def mean_vec(self):
        """``S3_0`` as ``(3v,)`` ``(x..., y..., z...)``."""
        return to_vec3(self.mean)

    @property
    def basis(self):
        """``V`` as a ``(3v, k)`` matrix in the vector layout."""
        return np.stack([to_vec3(m) for m in self.modes], 1) if len(self.modes) else \
            np.zeros((3 * self.n_landmarks, 0))

    @property
    def cov(self):
        """``Sigma_3 = V V^T + (sigma^2 + var_floor) I``, ``(3v, 3v)``."""
        V = self.basis
        return V @ V.T + (self.noise_var + self.var_floor) * np.eye(len(V))

    @property
    def precision(self):
        """``Sigma_3^-1`` by the Woodbury identity, ``(3v, 3v)``."""
        V = self.basis
        c = self.noise_var + self.var_floor
        K = np.eye(V.shape[1]) + V.T @ V / c
        return np.eye(len(V)) / c - V @ np.linalg.solve(K, V.T) / c**2

    def to_arrays(self):
        return {"mean3d": self.mean, "modes3d": self.modes,
                "noise3d": np.array(self.noise_var), "floor3d": np.array(self.var_floor)}

    @classmethod
    def from_arrays(cls, arrays):
        mean = np.asarray(arrays["mean3d"], float)
        modes = np.asarray(arrays["modes3d"], float).reshape(-1, mean.shape[0], 3)
        return cls(mean, modes, float(arrays["noise3d"]), float(arrays["floor3d"]))


def _impute_rank3(w, m, n_iter=50, tol=1e-8):
    """Rank-3 (+ translation) factorisation of ``(N, v, 2)`` shapes with missing entries.

    Returns ``M (2N, 3)`` and ``B (3, v)`` with ``W - row means ~ M B``.
    """
    N, v, _ = w.shape
    W = w.transpose(0, 2, 1).reshape(2 * N, v)
    mask = np.repeat(m > 0, 2, axis=0).reshape(N, 2, v).reshape(2 * N, v)
    col = np.where(mask, W, 0).sum(0) / np.maximum(mask.sum(0), 1)
    # Start missing entries from the landmark's mean over images, shifted by the row's
    # mean offset (the shapes are already similarity-aligned, so this is close).
    off = (np.where(mask, W - col, 0).sum(1) / np.maximum(mask.sum(1), 1))[:, None]
    W = np.where(mask, W, col + off)
    for _ in range(n_iter if not mask.all() else 1):
        t = W.mean(1, keepdims=True)
        U, S, Vt = np.linalg.svd(W - t, full_matrices=False)
        rec = (U[:, :3] * S[:3]) @ Vt[:3] + t
        change = np.abs(np.where(mask, 0, rec - W)).max()
        W = np.where(mask, W, rec)
        if change < tol:
            break
    t = W.mean(1, keepdims=True)
    U, S, Vt = np.linalg.svd(W - t, full_matrices=False)
    r = np.sqrt(S[:3])
    return U[:, :3] * r, r[:, None] * Vt[:3]


def _sym_coeffs(a, b):
    """Coefficients of ``a G b^T`` in the 6 unknowns of a symmetric 3x3 ``G``, batched."""
    return np.stack([a[:, 0] * b[:, 0], a[:, 0] * b[:, 1] + a[:, 1] * b[:, 0],
                     a[:, 0] * b[:, 2] + a[:, 2] * b[:, 0], a[:, 1] * b[:, 1],
                     a[:, 1] * b[:, 2] + a[:, 2] * b[:, 1], a[:, 2] * b[:, 2]], 1)


def _metric_upgrade(M, B):
    """Tomasi-Kanade metric upgrade: 3D mean ``(v, 3)`` from an affine factorisation."""
    a, b = M[0::2], M[1::2]
    rows = np.vstack([_sym_coeffs(a, a) - _sym_coeffs(b, b), _sym_coeffs(a, b)])
    # Fix the free scale: the average squared row norm is 1 (a heavily weighted row).
    norm = (_sym_coeffs(a, a) + _sym_coeffs(b, b)).sum(0) / (2 * len(a))
    A = np.vstack([rows, 1e3 * norm])
    rhs = np.zeros(len(A))
    rhs[-1] = 1e3
    g = np.linalg.lstsq(A, rhs, rcond=None)[0]
    G = np.array([[g[0], g[1], g[2]], [g[1], g[3], g[4]], [g[2], g[4], g[5]]])
    lam, U = np.linalg.eigh(G)
    # Noise or too little rotation can leave G indefinite: keep it positive definite.
    lam = np.maximum(lam, 1e-3 * lam.max())
    Q = U * np.sqrt(lam)
    return np.linalg.solve(Q, B).T


def nrsfm(shapes, *, n_modes=5, n_iter=60, mean3d=None, var_floor=0.25, tol=1e-6, seed=0):
    """3D shape model from 2D shapes of one object class seen from several viewpoints.

    Parameters
    ----------
    shapes : (N, v, 2) array
        2D shapes, similarity-aligned to the reference frame (NaN rows for missing
        landmarks).
    n_modes : int
        Number of deformation modes ``k``.
    n_iter : int
        EM iterations.
    mean3d : (v, 3) array, optional
        A known mean shape: it is kept (up to scale and position) and only the deformation
        model is learned.
    var_floor : float
        Variance floor added to the covariance, reference pixels squared.

    Returns
    -------
    model : Shape3DModel
    cameras : dict
        ``sigma (N,)``, ``R (N, 3, 3)``, ``t (N, 2)`` and ``z (N, k)`` (posterior mean
        deformation coefficients) of the training images, in the model's final frame.
    """
    shapes = np.asarray(shapes, float)
    N, v, _ = shapes.shape
    m = np.isfinite(shapes).all(2).astype(float)
    if (m.sum(0) < 1).any():
        raise ValueError("every landmark needs to be annotated in at least one image")
    w = np.where(m[..., None] > 0, shapes, 0.0)
    fixed = mean3d is not None
    if fixed:
        Xm = _check_mean3d(mean3d, v).copy()
    else:
        Xm = _metric_upgrade(*_impute_rank3(w, m))
    Xm = Xm - Xm.mean(0)
    k = int(max(0, min(n_modes, 3 * v - 6, N - 1)))
    sigma, R, t = _ortho_cameras(np.broadcast_to(Xm, (N, v, 3)), w, m)
    size = np.sqrt((Xm**2).sum(1).mean())
    rng = np.random.default_rng(seed)
    V = rng.normal(0, 0.05 * size / np.sqrt(3), (k, v, 3))
    pred = sigma[:, None, None] * np.einsum("nia,va->nvi", R[:, :2], Xm) + t[:, None]
    s2 = max(float((m[..., None] * (w - pred) ** 2).sum() / (2 * m.sum())), 1e-6)
    nobs = 2 * m.sum()
    K1 = 3 * (k + 1)
    mu = np.zeros((N, k))
    for _ in range(n_iter):
        P = sigma[:, None, None] * R[:, :2]  # (N, 2, 3)
        wt = (w - t[:, None]) * m[..., None]  # observations minus translation
        # E-step: posterior of z_n given the camera.
        MV = np.einsum("nab,kvb->nkva", P, V) * m[:, None, :, None]
        MV = MV.reshape(N, k, 2 * v)
        y = (wt - np.einsum("nab,vb->nva", P, Xm) * m[..., None]).reshape(N, 2 * v)
        Sz = np.linalg.inv(np.eye(k) + MV @ MV.transpose(0, 2, 1) / s2)
        mu = np.einsum("nkl,nl->nk", Sz, np.einsum("nkj,nj->nk", MV, y)) / s2
        Ez = np.concatenate([np.ones((N, 1)), mu], 1)
        Ezz = np.empty((N, k + 1, k + 1))
        Ezz[:, 0] = Ez
        Ezz[:, :, 0] = Ez
        Ezz[:, 1:, 1:] = Sz + mu[:, :, None] * mu[:, None, :]
        # M-step for X_j = [S_mean_j, V_1j .. V_kj] (3 x (k+1)), one system per landmark:
        # sum_n (E[z~ z~^T] kron P^T P) vec X_j = sum_n E[z~] kron P^T w_nj.
        C = np.einsum("nai,naj->nij", P, P)
        Kn = np.einsum("nab,nij->naibj", Ezz, C).reshape(N, K1, K1)
        LHS = np.einsum("nj,nab->jab", m, Kn)
        cw = np.einsum("nai,nva->nvi", P, wt)
        RHS = np.einsum("nk,nvi->vki", Ez, cw).reshape(v, K1)
        ridge = 1e-9 * np.trace(LHS, axis1=1, axis2=2)[:, None, None] * np.eye(K1)
        if fixed:
            xm = Xm.reshape(v, 3)
            L = LHS[:, 3:, 3:] + ridge[:, 3:, 3:]
            r = RHS[:, 3:] - np.einsum("jab,jb->ja", LHS[:, 3:, :3], xm)
            Xv = np.linalg.solve(L, r[..., None])[..., 0] if k else np.zeros((v, 0))
            X = np.concatenate([xm, Xv], 1)
        else:
            X = np.linalg.solve(LHS + ridge, RHS[..., None])[..., 0]
        Xr = X.reshape(v, k + 1, 3)
        Xm_new, V = Xr[:, 0], Xr[:, 1:].transpose(1, 0, 2)
        # Expected squared residual for sigma^2.
        e = ((wt**2).sum(2) - 2 * np.einsum("nvi,vki,nk->nv", cw, Xr, Ez)
             + np.einsum("va,nab,vb->nv", X, Kn, X))
        s2_new = max(float((m * e).sum() / nobs), 1e-8 * size**2)
        # Translation is absorbed by the cameras: keep the mean and modes centred.
        Xm_new = Xm_new - Xm_new.mean(0) if not fixed else Xm_new
        V = V - V.mean(1, keepdims=True)
        Xm = Xm_new
        # Cameras: orthographic Procrustes to the expected shapes.
        Xn = Xm + np.einsum("nk,kva->nva", mu, V)
        sigma, R, t = _ortho_cameras(Xn, w, m, R=R, n_iter=3)
        done = abs(s2_new - s2) <= tol * s2
        s2 = s2_new
        if done:
            break
    if not fixed:
        # Canonical frame: the average training camera becomes the identity ...
        Rbar = _project_rotation(R.sum(0))
        Xm, V, R = Xm @ Rbar.T, V @ Rbar.T, R @ Rbar.T
        # ... and the depth sign puts outer landmarks behind central ones.
        rad = (Xm[:, :2] ** 2).sum(1)
        if np.dot(rad - rad.mean(), Xm[:, 2]) < 0:
            D = np.diag([1.0, 1.0, -1.0])
            Xm, V, R = Xm @ D, V @ D, D @ R @ D
    # Scale: mean camera scale 1 puts the model in reference-frame units.
    c = float(sigma.mean())
    Xm, V, sigma = Xm * c, V * c, sigma / c
    # Orthogonal modes, largest first (V V^T is unchanged by an orthogonal mixing).
    if k:
        Vb = V.reshape(k, -1)
        U, S, Wt = np.linalg.svd(Vb.T, full_matrices=False)
        V = (U * S).T.reshape(k, v, 3)
        mu = mu @ Wt.T
    model = Shape3DModel(Xm, V, s2, var_floor)
    return model, {"sigma": sigma, "R": R, "t": t, "z": mu}
