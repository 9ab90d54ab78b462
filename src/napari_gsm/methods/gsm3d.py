"""GSM 2D+3D fitting (paper section 4, Algorithm 2, appendix A.2).

The parameter vector extends GSM 2D's ``(s, theta)`` with a 3D shape and a camera::

    p = (x_1..x_v, y_1..y_v, a, b, tx, ty,  X_1..X_v, Y_1..Y_v, Z_1..Z_v,
         sigma, dtheta_x, dtheta_y, dtheta_z, o_x, o_y)             (5v + 10 values)

and the cost (paper eq. 39) is

    f3D = f(s, theta) + lam2 (S3 - S3_0)^T Sigma_3^-1 (S3 - S3_0) + lam3 ||r||^2,
    r   = S(s, theta) - (sigma R_o (x) I_v) S3 - (o_x, o_y) (x) 1_v,

with ``R_o`` the first two rows of the camera rotation ``R (I + [dtheta]_x)``. The residual
lives in the **reference frame** (``S(s, theta) = s_BM``), where the 3D model is expressed
(see :mod:`napari_gsm.shape3d`): ``sigma`` stays near 1 whatever the image size, and
``lam3`` weighs reference pixels squared, like the 2D prior. (The paper writes ``r`` with the
image-frame ``s``, so ``dr/dtheta = 0`` there; here ``dr/dtheta = ds_BM/dtheta``.)

``r`` enters with Gauss-Newton (``2 lam3 J_r^T J_r``), the 3D prior with its exact
(constant) Hessian, and the GSM 2D part through :func:`~napari_gsm.methods.gsm.assemble`
(data term with its eigenvalue floor, 2D prior). The step is GSM's damped Newton step
(:func:`~napari_gsm.methods.gsm.newton_step`) on the whole system, but it is not solved
densely: :func:`assemble3d_reduced` keeps the Hessian factored and :func:`solve3d`
eliminates ``S3`` by a Schur complement. Like GSM 2D's fit, it takes the step in the
landmarks' reference-frame move ``du = J_s ds``
(:func:`~napari_gsm.methods.gsm.assemble_local`), where the residual's derivative in the
landmarks is the identity. ``Sigma_3`` is PPCA-shaped (``V V^T + c I``, k modes) and the
projection couples ``S3`` through Kronecker products ``M (x) I_v``, so ``H_yy^-1`` is a 3x3
inverse Kronecker ``I_v`` plus a rank-k Woodbury correction, and the reduced system on
``(du, theta, camera)`` is GSM 2D's system plus structured terms: one ``(2v+10)^2`` Cholesky
and ``O(v^2 k)`` work per iteration instead of a ``(5v+10)^2`` one (the dense
:func:`assemble3d` stays as the reference the tests compare with; it is used only when
``lam2 = 0``). After each step the rotation is updated multiplicatively,
``R <- R (I + [dtheta]_x)`` (eq. 41), projected back to a rotation by SVD (det +1), and
``dtheta`` reset to 0.

Sign of the rotation derivative: ``d/d dtheta_k [-sigma R (I + [dtheta]_x) X] =
-sigma R [e_k]_x X`` (appendix A.2 prints it with the opposite sign); the tests check it
against finite differences.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dgesv

from ..geometry import pose_from_shape, to_base_mesh
from ..result import FitResult
from ..shape import from_vec, to_vec
from ..shape3d import (Shape3DModel, _check_mean3d, from_vec3, load_mean3d,
                       nrsfm, ortho_procrustes, rotation_to_euler)
from .gsm import (assemble, assemble_local, base_mesh, cho_solve, cholesky, finest_score,
                  image_step, level_data, limit_step, newton_step, next_level, prior_scale,
                  start_schedule)

__all__ = ["GSM3DState", "train_gsm3d", "load_gsm3d", "fit_gsm3d", "projection_residual",
           "terms3d", "assemble3d", "assemble3d_reduced", "solve3d", "skew", "rotate"]

# [e_k]_x for k = x, y, z: d(R (I + [dtheta]_x)) / d dtheta_k = R [e_k]_x.
_GEN = np.array([[[0, 0, 0], [0, 0, -1], [0, 1, 0]],
                 [[0, 0, 1], [0, 0, 0], [-1, 0, 0]],
                 [[0, -1, 0], [1, 0, 0], [0, 0, 0]]], float)


def skew(w):
    """``[w]_x``, the cross-product matrix (the small-angle rotation of eq. 41 is I + it)."""
    return np.einsum("k,kij->ij", np.asarray(w, float), _GEN)


def rotate(R, w):
    """``R (I + [w]_x)`` projected onto SO(3), in closed form (eq. 41's update).

    For a rotation ``R``, ``M = R (I + [w]_x)`` has ``M^T M = I + |w|^2 I - w w^T``, so its
    polar factor (the nearest orthogonal matrix; ``det M = 1 + |w|^2 > 0`` makes it a
    rotation) is ``M (u u^T + (I - u u^T) / sqrt(1 + |w|^2))``, ``u = w / |w|``: the same
    as :func:`~napari_gsm.shape3d._project_rotation` without an SVD.
    """
    x, y, z = (float(t) for t in w)
    n2 = x * x + y * y + z * z
    if n2 == 0:
        return np.array(R, float)
    # (I + [w]_x)(c I + (1 - c) u u^T) = c (I + [w]_x) + (1 - c) u u^T, as [w]_x u = 0;
    # built from scalars: it runs once per iteration of every GSM 2D+3D fit.
    c = 1 / np.sqrt(1 + n2)
    k = (1 - c) / n2
    return R @ np.array([[c + k * x * x, k * x * y - c * z, k * x * z + c * y],
                         [k * x * y + c * z, c + k * y * y, k * y * z - c * x],
                         [k * x * z - c * y, k * y * z + c * x, c + k * z * z]])


@dataclass
class GSM3DState:
    """What GSM 2D+3D learns beyond GSM 2D: the 3D shape model and its weights.

    Attributes
    ----------
    shape3d : Shape3DModel
    lam2 : float or None
        3D prior weight; None uses the 2D weight ``lam1`` (paper: ``lam2 = lam1``).
    lam3 : float
        Projection residual weight.
    lam_share : float
        ``lam1 = lam_share * lam``, where ``lam`` is the model's GSM 2D prior weight: with a
        second (3D) prior beside the 2D one, each carries part of what the 2D prior carries
        alone.
    source : str
        'nrsfm' or 'file' (user-supplied mean shape).
    """

    shape3d: Shape3DModel
    lam2: float | None = None
    lam3: float = 5.0
    lam_share: float = 0.5
    source: str = "nrsfm"

    def __post_init__(self):
        self.precision = self.shape3d.precision
        self.mean_vec = self.shape3d.mean_vec
        # Sigma_3^-1 = I / iso - V k_inv V^T / iso^2, the factored form the fit solves with.
        self.basis = self.shape3d.basis
        self.iso = self.shape3d.noise_var + self.shape3d.var_floor
        k = self.basis.shape[1]
        self.k_inv = np.linalg.inv(np.eye(k) + self.basis.T @ self.basis / self.iso)
        self._mean_camera = None  # (s0, camera) of the last start_camera on a mean shape

    def start_camera(self, s_bm, s0):
        """Camera ``(sigma, R, o)`` of the 3D mean fitted to a reference-frame start shape.

        A start from a box, the prior or the face detector is the mean shape ``s0`` placed
        by a similarity, so in the reference frame it *is* ``s0``: its camera is computed
        once (per ``s0``: an incremental update moves it) and reused.
        """
        if np.abs(s_bm - s0).max() <= 1e-9 * (1 + np.abs(s0).max()):
            cached = self._mean_camera
            if cached is None or not np.array_equal(cached[0], s0):
                cached = self._mean_camera = (np.array(s0), _init_3d(self.shape3d.mean, s0))
            sigma, R, o = cached[1]
            return sigma, R.copy(), o.copy()
        return _init_3d(self.shape3d.mean, s_bm)

    def to_arrays(self):
        return self.shape3d.to_arrays()

    def params(self):
        return {"lam2": self.lam2, "lam3": float(self.lam3), "lam_share": float(self.lam_share),
                "source": self.source,
                "n_modes": int(len(self.shape3d.modes))}


def train_gsm3d(model, samples, *, progress=None, mean3d=None, lam2=None, lam3=5.0,
                lam_share=0.5, n_modes=15, n_iter=60, runner=None):
    """Build the 3D shape model from the training annotations (NRSfM).

    Parameters
    ----------
    model : napari_gsm.model.Model
        With its 2D shape model trained (it fixes the reference frame and units).
    samples : list of Sample
        Only their landmarks are used (the images are not read).
    mean3d : path or (v, 3) array, optional
        A known 3D mean shape (``.npy`` or CSV, v rows x 3 columns, x right, y down, z away
        from the camera); only its deformations are then learned from the annotations.
    lam2, lam3 : float
        Weights of the 3D prior and of the projection residual (``lam2=None``: same as the
        2D prior's ``lam``, as in the paper). Tuned on a 300-W *training* split (train on
        images 0-799, validate on 1800-1949 in file order, HoG, GT box + 8 % noise starts,
        4 start draws): ``lam3`` in 1..10 with 15 or 30 modes; ``lam3 = 5`` with 15 modes
        had the lowest mean NME (0.0828 vs GSM 2D's 0.0862; ``lam3 = 1``: 0.0887), within
        about one standard error, with a lower median in about 2 of 3 fits. ``lam2`` other
        than ``lam`` (0.05, 1.0) was worse (an earlier run, 1 start draw).
    lam_share : float
        The 2D prior weight in GSM 2D+3D is ``lam_share`` times GSM 2D's ``lam`` (and so
        is ``lam2`` when None). On held-out training faces (800 train / 300 held out,
        face-detector starts) 0.5 gave mean NME 0.0969, 1.0 gave 0.1000, 0.25 gave 0.0980,
        against GSM 2D's 0.1032.
    n_modes : int
        Deformation modes of the 3D model (5 modes were too restrictive for faces; 30 were
        no better than 15).
    runner : optional
        Where training runs its per-image work (:mod:`napari_gsm.training`); unused here:
        the 3D model is learned from the landmarks alone, all of them held here (read
        here when the samples do not hold them, as on a cluster).

    Returns
    -------
    GSM3DState
    """
    v = model.n_landmarks
    if len(samples) < 2 and mean3d is None:
        raise ValueError(f"GSM 2D+3D needs at least 2 annotated images to recover a 3D shape "
                         f"from 2D annotations (got {len(samples)}); annotate more images or "
                         f"give a 3D mean shape file (mean3d)")
    shapes = np.stack([s.with_points().points for s in samples])
    aligned = np.stack([model.shape.align(p) for p in shapes])
    source = "nrsfm"
    if mean3d is not None:
        source = "file"
        mean3d = load_mean3d(mean3d, v) if isinstance(mean3d, (str, bytes)) or hasattr(
            mean3d, "__fspath__") else _check_mean3d(mean3d, v)
    if progress is not None:
        progress(0, 1, "3D shape model")
    shape3d, _ = nrsfm(aligned, n_modes=n_modes, n_iter=n_iter, mean3d=mean3d,
                       var_floor=model.shape.var_floor)
    if progress is not None:
        progress(1, 1, "3D shape model")
    return GSM3DState(shape3d, lam2=None if lam2 is None else float(lam2), lam3=float(lam3),
                      lam_share=float(lam_share), source=source)


def load_gsm3d(arrays, params):
    """Rebuild :class:`GSM3DState` from a model file's arrays and parameters."""
    params = params or {}
    lam2 = params.get("lam2")
    return GSM3DState(Shape3DModel.from_arrays(arrays),
                      lam2=None if lam2 is None else float(lam2),
                      lam3=float(params.get("lam3", 5.0)),
                      lam_share=float(params.get("lam_share", 0.5)),
                      source=params.get("source", "nrsfm"))


def _residual_parts(p, R, sm, base=None):
    """``r`` (2v,), the 10 dense columns ``T`` of ``J_r`` (theta then camera) and ``R_o``.

    The other columns of ``J_r`` are Kronecker products: ``d r / d s = A (x) I_v`` and
    ``d r / d S3 = -sigma R_o (x) I_v``. ``base``: ``base_mesh(p, sm, v)`` if at hand.
    """
    v = (len(p) - 10) // 5
    n2 = 2 * v
    S3 = p[n2 + 4:5 * v + 4].reshape(3, v)  # rows X, Y, Z
    sigma = p[5 * v + 4]
    dth = p[5 * v + 5:5 * v + 8]
    o = p[5 * v + 8:5 * v + 10]
    Ro = (R @ (np.eye(3) + skew(dth)))[:2] if dth.any() else R[:2]  # fits reset dth to 0
    s_bm, Jt = base_mesh(p, sm, v) if base is None else base
    proj = (Ro @ S3).reshape(-1)  # (2v,)
    r = s_bm - sigma * proj
    r[:v] -= o[0]
    r[v:] -= o[1]
    T = np.empty((n2, 10))
    T[:, :4] = Jt  # d s_BM / d theta
    T[:, 4] = -proj  # d r / d sigma
    RG = R[:2] @ _GEN  # (R [e_k]_x)[:2], k = x, y, z
    T[:, 5:8] = -sigma * (RG @ S3).transpose(1, 2, 0).reshape(n2, 3)
    T[:, 8:] = 0
    T[:v, 8] = -1
    T[v:, 9] = -1
    return r, T, Ro


def projection_residual(p, R, sm):
    """``r`` (2v,) and its Jacobian ``J_r`` (2v, 5v+10) w.r.t. the full parameter vector.

    Parameters
    ----------
    p : (5v+10,) array
        Full parameters (see module docstring); ``dtheta`` need not be 0.
    R : (3, 3) array
        Current rotation; the camera is ``R (I + [dtheta]_x)``.
    sm : (2,) array
    """
    v = (len(p) - 10) // 5
    n2 = 2 * v
    a, b = p[n2:n2 + 2]
    sigma = p[5 * v + 4]
    r, T, Ro = _residual_parts(p, R, sm)
    J = np.zeros((n2, 5 * v + 10))
    i = np.arange(v)
    J[i, i], J[i, v + i], J[v + i, i], J[v + i, v + i] = a, -b, b, a  # d s_BM / d s
    J[:, n2:n2 + 4] = T[:, :4]
    for c in range(3):  # -sigma (R_o (x) I_v)
        J[i, n2 + 4 + c * v + i] = -sigma * Ro[0, c]
        J[v + i, n2 + 4 + c * v + i] = -sigma * Ro[1, c]
    J[:, 5 * v + 4:] = T[:, 4:]
    return r, J


def _gram(J, p, R):
    """``J_r^T J_r`` from its Kronecker structure (a dense product costs ~5x more).

    ``d r / d s = A (x) I_v`` and ``d r / d S3 = -sigma R_o (x) I_v``, so their blocks are
    small matrices Kronecker ``I_v``; only the 10 pose and camera columns are dense.
    """
    v = (len(p) - 10) // 5
    n2 = 2 * v
    a, b = p[n2], p[n2 + 1]
    sigma = p[5 * v + 4]
    Ro = (R @ (np.eye(3) + skew(p[5 * v + 5:5 * v + 8])))[:2]
    A = np.array([[a, -b], [b, a]])
    Iv = np.eye(v)
    thin = np.r_[n2:n2 + 4, 5 * v + 4:5 * v + 10]
    T = J[:, thin]
    Tx, Ty = T[:v], T[v:]
    G = np.empty((len(p), len(p)))
    s_, S, C = slice(0, n2), slice(n2 + 4, 5 * v + 4), thin
    G[s_, s_] = (a * a + b * b) * np.eye(n2)
    G[s_, S] = np.kron(-sigma * A.T @ Ro, Iv)
    G[S, s_] = G[s_, S].T
    G[S, S] = np.kron(sigma**2 * Ro.T @ Ro, Iv)
    Hst = np.vstack([a * Tx + b * Ty, -b * Tx + a * Ty])
    HSt = np.vstack([-sigma * (Ro[0, c] * Tx + Ro[1, c] * Ty) for c in range(3)])
    G[s_, C] = Hst
    G[C, s_] = Hst.T
    G[S, C] = HSt
    G[C, S] = HSt.T
    G[np.ix_(C, C)] = T.T @ T
    return G


def terms3d(p, R, S3_0, prec3, sm, lam2, lam3):
    """The 3D additions: ``lam2 R3D + lam3 ||r||^2``, gradient and (Gauss-Newton) Hessian.

    Returns
    -------
    value : float
    grad : (5v+10,) array
    hess : (5v+10, 5v+10) array
        ``2 lam2 Sigma_3^-1`` on the 3D shape block plus ``2 lam3 J_r^T J_r``.
    """
    v = (len(p) - 10) // 5
    sl = slice(2 * v + 4, 5 * v + 4)
    r, J = projection_residual(p, R, sm)
    d = p[sl] - S3_0
    Pd = prec3 @ d
    grad = 2 * lam3 * (J.T @ r)
    grad[sl] += 2 * lam2 * Pd
    H = 2 * lam3 * _gram(J, p, R)
    H[sl, sl] += 2 * lam2 * prec3
    return lam2 * d @ Pd + lam3 * r @ r, grad, H


def assemble3d(p, R, resp, s0vec, sm, prec, lam, floor, S3_0, prec3, lam2, lam3,
               theta_data=None):
    """Total cost ``f3D``, gradient ``(5v+10,)`` and Hessian (GSM 2D part + :func:`terms3d`).

    ``theta_data`` is the pose of the frame the responses were measured in (see
    :func:`~napari_gsm.methods.gsm.assemble`).
    """
    n = len(s0vec) + 4
    f2, g2, H2 = assemble(p[:n], resp, s0vec, sm, prec, lam, floor, theta_data)
    f3, g, H = terms3d(p, R, S3_0, prec3, sm, lam2, lam3)
    g[:n] += g2
    H[:n, :n] += H2
    return f2 + f3, g, H


class _Reduced:
    """:func:`assemble3d`'s Hessian, factored and in step variables, for :func:`solve3d`.

    With ``x = (du, theta, camera)`` (``2v + 10`` values, ``du = J_s ds`` as in
    :func:`~napari_gsm.methods.gsm.assemble_local`) and ``y = S3`` (``3v``)::

        H_xx  dense (2v+10, 2v+10): GSM 2D's Hessian plus the residual's du / thin part,
        H_xy  = [Bs (x) I_v ; E]      Bs (2, 3), E (10, 3v)
        H_yy  = N0 (x) I_v - V Q V^T  N0 (3, 3), V (3v, k), Q (k, k)

    ``H_yy`` is ``2 lam3 sigma^2 (R_o^T R_o) (x) I_v`` plus ``2 lam2 Sigma_3^-1``, and
    ``Sigma_3^-1 = I / c - V K^-1 V^T / c^2`` (PPCA: ``Sigma_3 = V V^T + c I``).
    """

    __slots__ = ("Hxx", "Bs", "E", "N0", "V", "Q")

    def __init__(self, Hxx, Bs, E, N0, V, Q):
        self.Hxx, self.Bs, self.E, self.N0, self.V, self.Q = Hxx, Bs, E, N0, V, Q


def assemble3d_reduced(p, R, resp, s0vec, sm, prec, lam, floor, S3_0, basis, iso, k_inv,
                       lam2, lam3, theta_data=None):
    """:func:`assemble3d` without forming the ``(5v+10)^2`` Hessian, in step variables.

    The landmark part of the step is ``du = J_s ds``: with ``T = blockdiag(J_s, I)`` the
    gradient is ``T^-T g`` and the Hessian ``T^-T H T^-1`` of :func:`assemble3d`'s (the
    tests check this); :func:`~napari_gsm.methods.gsm.image_step` maps the step back.

    Parameters
    ----------
    basis : (3v, k) array
        ``V`` of ``Sigma_3 = V V^T + iso I``.
    iso : float
    k_inv : (k, k) array
        ``(I + V^T V / iso)^-1``.
    Other parameters as :func:`assemble3d` (``Sigma_3^-1`` is ``basis, iso, k_inv``).

    Returns
    -------
    value : float
    grad : (5v+10,) array
        :func:`assemble3d`'s gradient in the step variables.
    hess : _Reduced
        Its Hessian, factored for :func:`solve3d`.
    """
    n2 = len(s0vec)
    v = n2 // 2
    # H_xx in the order (du, theta, camera): GSM 2D's block, then 2 lam3 [I T]^T [I T].
    Hxx = np.empty((n2 + 10, n2 + 10))
    Hxx[:n2 + 4, n2 + 4:] = 0
    Hxx[n2 + 4:] = 0
    base = base_mesh(p, sm, v)
    f2, g2, _ = assemble_local(p[:n2 + 4], resp, s0vec, sm, prec, lam, floor, theta_data,
                               out=Hxx, base=base)
    sigma = p[5 * v + 4]
    r, T, Ro = _residual_parts(p, R, sm, base)
    w3 = 2 * lam3
    # In the step variable du = J_s ds the residual's derivative in the landmarks is the
    # identity (r is measured in the reference frame), so the du rows below are plain.
    Hxx.flat[:(n2 * (n2 + 11)):n2 + 11] += w3
    Hxx[:n2, n2:] += w3 * T
    Hxx[n2:, :n2] += w3 * T.T
    Hxx[n2:, n2:] += w3 * T.T @ T
    # Coupling: d r / d du = I against d r / d S3 = -sigma R_o (x) I_v.
    Bs = -w3 * sigma * Ro
    E = (-w3 * sigma * Ro.T @ T.reshape(2, v * 10)).reshape(3 * v, 10).T
    N0 = (w3 * sigma**2) * (Ro.T @ Ro)
    N0.flat[::4] += 2 * lam2 / iso
    Q = (2 * lam2 / iso**2) * k_inv
    # Gradient and value; Sigma_3^-1 d by Woodbury, O(v k).
    d = p[n2 + 4:5 * v + 4] - S3_0
    Pd = d / iso - basis @ (k_inv @ (basis.T @ d)) / iso**2
    grad = np.empty(5 * v + 10)
    grad[:n2 + 4] = g2
    grad[:n2] += w3 * r
    grad[n2:n2 + 4] += w3 * T[:, :4].T @ r
    grad[n2 + 4:5 * v + 4] = (-w3 * sigma * Ro.T @ r.reshape(2, v)).reshape(-1) + 2 * lam2 * Pd
    grad[5 * v + 4:] = w3 * T[:, 4:].T @ r
    value = f2 + lam2 * d @ Pd + lam3 * r @ r
    return value, grad, _Reduced(Hxx, Bs, E, N0, basis, Q)


def solve3d(grad, hess, free_s=None):
    """The damped Newton step of :func:`~napari_gsm.methods.gsm.newton_step`, structured.

    ``S3`` is eliminated by a Schur complement: ``H_yy^-1`` is ``N^-1 (x) I_v`` corrected by
    Woodbury in the ``k`` deformation modes, so the reduced ``(2v+10)`` system on
    ``(du, theta, camera)`` is GSM 2D's system plus structured terms, built in
    ``O(v^2 k)`` and solved by one Cholesky factorisation of GSM 2D's size. The Levenberg
    damping ``mu I`` of the full system (same schedule and scale as ``newton_step``) becomes
    ``mu`` on the diagonals of ``H_xx`` and ``N``; the full Hessian is positive definite
    exactly when the reduced one is (``H_yy`` always is, for ``lam2 > 0``).

    Parameters
    ----------
    grad : (5v+10,) array
    hess : _Reduced
        From :func:`assemble3d_reduced`.
    free_s : (2v,) bool array, optional
        Free 2D coordinates (pinned landmarks' are False); all else is free.

    Returns
    -------
    step : (5v+10,) array
        In the step variables of :func:`assemble3d_reduced`.
    """
    Hxx, Bs, E, N0, V, Q = hess.Hxx, hess.Bs, hess.E, hess.N0, hess.V, hess.Q
    nx = len(Hxx)
    n2 = nx - 10
    v = n2 // 2
    k = V.shape[1]
    # Kronecker products act on (3, v * m) reshapes: (M (x) I_v) X = (M @ X.reshape(3, -1)).
    Vr = V.reshape(3, v * k)
    Et = np.ascontiguousarray(E.T).reshape(3, v * 10)  # E^T, (3v, 10)
    gx = np.concatenate([grad[:n2 + 4], grad[5 * v + 4:]])
    gy = grad[n2 + 4:5 * v + 4]
    fx = None if free_s is None else np.concatenate([free_s, np.ones(10, bool)])
    fidx = None if fx is None else fx.nonzero()[0]
    kron_idx = _kron_diagonals(v, nx)
    mu = scale = 0.0
    for _ in range(30):
        Ni = _inv3(N0 + mu * np.eye(3) if mu else N0)
        DVf = (Ni @ Vr).reshape(3 * v, k)  # D^-1 V, D = N (x) I_v
        if k:  # H_yy^-1 = D^-1 + D^-1 V Z V^T D^-1, Z = (I - Q V^T D^-1 V)^-1 Q
            M = Q @ (V.T @ DVf)
            M *= -1
            M.flat[::k + 1] += 1
            # LAPACK directly (np.linalg.solve costs more here). Z is symmetric up to
            # rounding, and the Cholesky factorisation below reads one triangle of S.
            Z, info = dgesv(M, Q)[2:]
            if info:  # pragma: no cover - H_yy is positive definite for lam2 > 0
                raise FloatingPointError("the 3D prior's Woodbury system is singular")
        else:
            Z = Q
        BN = Bs @ Ni
        S = Hxx.copy()
        if mu:
            S.flat[::nx + 1] += mu
        # S = H_xx + mu I - H_xy (D^-1 + D^-1 V Z V^T D^-1) H_yx, block by block.
        S.flat[kron_idx] -= np.repeat((BN @ Bs.T).reshape(-1), v)
        sT = (BN @ Et).reshape(n2, 10)
        S[:n2, n2:] -= sT
        S[n2:, :n2] -= sT.T
        S[n2:, n2:] -= E @ (Ni @ Et).reshape(3 * v, 10)
        L = np.empty((nx, k))
        L[:n2] = (Bs @ DVf.reshape(3, v * k)).reshape(n2, k)
        L[n2:] = E @ DVf
        S -= (L @ Z) @ L.T
        c = cholesky(S if fidx is None else S[np.ix_(fidx, fidx)], overwrite=True)
        if c is not None:
            break
        if not scale:  # newton_step's scale: the mean |diagonal| of the free Hessian
            diag_x = np.diag(Hxx) if fx is None else np.diag(Hxx)[fx]
            diag_y = np.repeat(np.diag(N0), v) - ((V @ Q) * V).sum(1)
            scale = np.abs(np.concatenate([diag_x, diag_y])).mean() + 1e-12
        mu = max(2 * mu, 1e-6 * scale)
    else:  # pragma: no cover - only for NaN input
        raise FloatingPointError("Hessian could not be made positive definite")

    def hyy_inv(u):
        return (Ni @ u.reshape(3, v)).reshape(-1) + DVf @ (Z @ (DVf.T @ u))

    u = hyy_inv(gy)
    gred = gx - np.concatenate([(Bs @ u.reshape(3, v)).reshape(-1), E @ u])
    if fidx is None:
        dx = -cho_solve(c, gred)
    else:
        dx = np.zeros(nx)
        dx[fidx] = -cho_solve(c, gred[fidx])
    dy = -hyy_inv(gy + (Bs.T @ dx[:n2].reshape(2, v)).reshape(-1) + E.T @ dx[n2:])
    step = np.empty(5 * v + 10)
    step[:n2 + 4] = dx[:n2 + 4]
    step[n2 + 4:5 * v + 4] = dy
    step[5 * v + 4:] = dx[n2 + 4:]
    return step


def _inv3(N):
    """Inverse of a 3x3 matrix by cofactors (``np.linalg.inv``'s call costs more here)."""
    a, b, c, d, e, f, g, h, i = N.ravel().tolist()
    A, B, C = e * i - f * h, f * g - d * i, d * h - e * g
    det = a * A + b * B + c * C
    return np.array([[A, c * h - b * i, b * f - c * e],
                     [B, a * i - c * g, c * d - a * f],
                     [C, b * g - a * h, a * e - b * d]]) / det


@functools.lru_cache(maxsize=4)
def _kron_diagonals(v, nx):
    """Flat indices of the four diagonals of the (du, du) block, where ``C (x) I_v`` goes."""
    i = np.arange(v)
    idx = ((np.arange(2)[:, None, None] * v + i) * nx
           + (np.arange(2)[None, :, None] * v + i)).reshape(-1)
    idx.flags.writeable = False  # shared between calls
    return idx


def _init_3d(shape3d_mean, s_bm):
    """Camera ``(sigma, R, o)`` of the 3D mean fitted to a reference-frame shape.

    The Newton iterations refine the camera anyway, and each alternation costs an SVD in
    every fit: on 300 held-out training faces 1, 2 and 5 alternations gave the same fits
    to four digits of NME (2 kept, 0.2 ms less per fit than 5).
    """
    sigma, R, o = ortho_procrustes(shape3d_mean, s_bm, n_iter=2)
    return sigma, R, o


def fit_gsm3d(model, pyramid, start, *, pinned=None, params=None, history=True, lam2=None,
              lam3=None, warm_start=False):
    """Fit GSM 2D+3D from a start shape.

    Parameters
    ----------
    model : napari_gsm.model.Model
        With a :class:`GSM3DState` in ``model.state``.
    pyramid : napari_gsm.features.Pyramid
    start : (v, 2) array
        Starting shape in image coordinates.
    pinned : (v,) bool array, optional
        Landmarks held exactly at their ``start`` position (the 3D part still fits them);
        the prior weights are scaled as in GSM 2D (:func:`~napari_gsm.methods.gsm.prior_scale`).
    params : GSMParams, optional
    lam2, lam3 : float, optional
        Override the state's weights.
    warm_start : bool
        The start is already close: fit at the finest target width only (as GSM 2D).

    Returns
    -------
    FitResult
        ``extra`` holds ``yaw``, ``pitch``, ``roll`` (degrees, image frame), ``rotation``
        ``(3, 3)`` (model -> image axes), ``landmarks3d``
        ``(v, 3)`` (image pixels: x, y near the fitted points, about the same centroid;
        z depth away from the camera, relative to the centroid), ``shape3d``
        ``(v, 3)`` (the fitted 3D shape in model units) and ``score`` (as GSM 2D's).
    """
    params = params or model.gsm_params
    state = model.state
    shape_model, det, spec = model.shape, model.detectors, model.features
    t0 = time.perf_counter()
    lam = params.lam * state.lam_share
    lam2 = lam2 if lam2 is not None else (state.lam2 if state.lam2 is not None else lam)
    lam3 = lam3 if lam3 is not None else state.lam3
    s0vec = to_vec(shape_model.mean)
    sm = shape_model.sm
    prec = model.precision
    prec3, S3_0 = state.precision, state.mean_vec
    v = shape_model.n_landmarks
    n2 = 2 * v
    pinned = np.zeros(v, bool) if pinned is None else np.asarray(pinned, bool)
    s = np.asarray(start, float)
    theta = pose_from_shape(s, shape_model.s0, sm)
    sigma, R, o = state.start_camera(to_base_mesh(s, theta, sm), shape_model.s0)
    p = np.concatenate([to_vec(s), theta, S3_0, [sigma, 0, 0, 0], o])
    hist, costs = [s.copy()], []
    converged = False
    n_iter = 0
    # The same schedule and frame handling as GSM 2D: coarse to fine over the detectors'
    # target widths (the prior scaled at the finest around pins; straight to the finest
    # from a warm start), frames re-warped only when the pose has moved, the longest
    # landmark move capped, the root-mean-square move deciding convergence.
    frames, level, n_levels = start_schedule(model, pyramid, warm_start)
    free_s = np.tile(~pinned, 2) if pinned.any() else None
    score = None
    for n_iter in range(1, params.max_iter + 1):
        resp, floor = level_data(frames, det, spec, params, level, from_vec(p[:n2]),
                                 p[n2:n2 + 4])
        score = finest_score(resp, level, n_levels, score)
        # With pins every prior term (2D, 3D, projection) is scaled alike.
        c = prior_scale(params, pinned, level, n_levels)
        if lam2 > 0:
            f, grad, H = assemble3d_reduced(p, R, resp, s0vec, sm, prec, c * lam, floor,
                                            S3_0, state.basis, state.iso, state.k_inv,
                                            c * lam2, c * lam3, frames.theta)
            step = image_step(solve3d(grad, H, free_s), p, v)
        else:  # no 3D prior: H_yy is singular in depth, leave it to the damped dense solve
            f, grad, H = assemble3d(p, R, resp, s0vec, sm, prec, c * lam, floor, S3_0, prec3,
                                    lam2, c * lam3, frames.theta)
            free = np.concatenate([~pinned, ~pinned, np.ones(3 * v + 10, bool)]).nonzero()[0]
            step = newton_step(grad, H, free)
        costs.append(f)
        step, move = limit_step(step, p, v, params.max_step)
        p = p + step
        # Multiplicative rotation update (eq. 41), back onto SO(3), dtheta reset to 0.
        R = rotate(R, p[5 * v + 5:5 * v + 8])
        p[5 * v + 5:5 * v + 8] = 0
        if history:
            hist.append(from_vec(p[:n2]))
        level, converged = next_level(level, n_levels, move, params)
        if converged:
            break
    points = from_vec(p[:n2])
    points[pinned] = s[pinned]
    theta = p[n2:n2 + 4]
    extra = _pose_outputs(theta, p[n2 + 4:5 * v + 4], p[5 * v + 4], R, points)
    return FitResult(points=points, n_iter=n_iter, converged=converged,
                     fit_ms=(time.perf_counter() - t0) * 1e3, history=hist if history else [],
                     costs=costs, pose=theta.copy(), method="gsm3d",
                     extra={**extra, "n_warps": frames.n_warps, "score": score})


def _pose_outputs(theta, S3vec, sigma, R, points):
    """Head pose and 3D landmarks in the image frame.

    The image is the reference frame mapped back by ``A^-1``: a scale ``1/|A|`` and an
    in-plane rotation by ``-phi`` (``A = |A| Rot(phi)``), so the image-frame rotation is
    ``Rz(-phi) R`` and the image-frame camera scale ``sigma / |A|``.
    """
    a, b = float(theta[0]), float(theta[1])
    r = math.hypot(a, b)
    c, s_ = a / r, -b / r  # cos and sin of -phi
    Rz = np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]])
    R_img = Rz @ R
    S3 = from_vec3(S3vec)
    pts3 = (sigma / r) * (S3 - S3.mean(0)) @ R_img.T
    finite = np.isfinite(points).all()
    pts3[:, :2] += points.mean(0) if finite else np.nanmean(points, 0)  # the fit's centroid
    yaw, pitch, roll = rotation_to_euler(R_img)
    return {"yaw": yaw, "pitch": pitch, "roll": roll, "rotation": R_img,
            "landmarks3d": pts3, "shape3d": S3}
