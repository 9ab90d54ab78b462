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

``r`` enters with Gauss-Newton (``2 lam3 J_r^T J_r``), the 3D prior with its exact (constant)
Hessian, and the GSM 2D part through :func:`~napari_gsm.methods.gsm.assemble` (data term with
its eigenvalue floor, 2D prior). The damped Newton solve is GSM's
:func:`~napari_gsm.methods.gsm.newton_step`. After each step the rotation is updated
multiplicatively, ``R <- R (I + [dtheta]_x)`` (eq. 41), projected back to a rotation by SVD
(det +1), and ``dtheta`` reset to 0.

Sign of the rotation derivative: ``d/d dtheta_k [-sigma R (I + [dtheta]_x) X] =
-sigma R [e_k]_x X`` (appendix A.2 prints it with the opposite sign); the tests check it
against finite differences.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..features import frame_patches
from ..geometry import pose_from_shape, to_base_mesh
from ..result import FitResult
from ..shape import from_vec, to_vec
from ..shape3d import (Shape3DModel, _check_mean3d, _project_rotation, from_vec3, load_mean3d,
                       nrsfm, ortho_procrustes, rotation_to_euler)
from .gsm import assemble, newton_step

__all__ = ["GSM3DState", "train_gsm3d", "load_gsm3d", "fit_gsm3d", "projection_residual",
           "terms3d", "assemble3d", "skew"]

# [e_k]_x for k = x, y, z: d(R (I + [dtheta]_x)) / d dtheta_k = R [e_k]_x.
_GEN = np.array([[[0, 0, 0], [0, 0, -1], [0, 1, 0]],
                 [[0, 0, 1], [0, 0, 0], [-1, 0, 0]],
                 [[0, -1, 0], [1, 0, 0], [0, 0, 0]]], float)


def skew(w):
    """``[w]_x``, the cross-product matrix (the small-angle rotation of eq. 41 is I + it)."""
    return np.einsum("k,kij->ij", np.asarray(w, float), _GEN)


@dataclass
class GSM3DState:
    """What GSM 2D+3D learns beyond GSM 2D: the 3D shape model and its weights.

    Attributes
    ----------
    shape3d : Shape3DModel
    lam2 : float or None
        3D prior weight; None uses the 2D weight ``lam`` (paper: ``lam2 = lam1``).
    lam3 : float
        Projection residual weight.
    source : str
        'nrsfm' or 'file' (user-supplied mean shape).
    """

    shape3d: Shape3DModel
    lam2: float | None = None
    lam3: float = 1.0
    source: str = "nrsfm"

    def __post_init__(self):
        self.precision = self.shape3d.precision
        self.mean_vec = self.shape3d.mean_vec

    def to_arrays(self):
        return self.shape3d.to_arrays()

    def params(self):
        return {"lam2": self.lam2, "lam3": float(self.lam3), "source": self.source,
                "n_modes": int(len(self.shape3d.modes))}


def train_gsm3d(model, samples, *, progress=None, mean3d=None, lam2=None, lam3=1.0,
                n_modes=15, n_iter=60):
    """Build the 3D shape model from the training annotations (NRSfM).

    Parameters
    ----------
    model : napari_gsm.model.Model
        With its 2D shape model trained (it fixes the reference frame and units).
    samples : list of Sample
    mean3d : path or (v, 3) array, optional
        A known 3D mean shape (``.npy`` or CSV, v rows x 3 columns, x right, y down, z away
        from the camera); only its deformations are then learned from the annotations.
    lam2, lam3 : float
        Weights of the 3D prior and of the projection residual (``lam2=None``: same as the
        2D prior's ``lam``, as in the paper). The paper's ``lam3 = 10`` was re-tuned on
        held-out 300-W training faces (HoG, 300 training images): ``lam3 = 1`` with 15 modes
        gave the lowest mean error; the coupling stays stiff (1 per reference pixel
        squared) but lets the 2D shape leave the 3D model's span where it must.
    n_modes : int
        Deformation modes of the 3D model (5 modes were too restrictive for faces).

    Returns
    -------
    GSM3DState
    """
    v = model.n_landmarks
    shapes = np.stack([s.points for s in samples])
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
                      source=source)


def load_gsm3d(arrays, params):
    """Rebuild :class:`GSM3DState` from a model file's arrays and parameters."""
    params = params or {}
    lam2 = params.get("lam2")
    return GSM3DState(Shape3DModel.from_arrays(arrays),
                      lam2=None if lam2 is None else float(lam2),
                      lam3=float(params.get("lam3", 1.0)), source=params.get("source", "nrsfm"))


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
    a, b, tx, ty = p[n2:n2 + 4]
    S3 = p[n2 + 4:5 * v + 4].reshape(3, v)  # rows X, Y, Z
    sigma = p[5 * v + 4]
    dth = p[5 * v + 5:5 * v + 8]
    o = p[5 * v + 8:5 * v + 10]
    Re = R @ (np.eye(3) + skew(dth))
    Ro = Re[:2]
    dx = p[:v] - sm[0]
    dy = p[v:n2] - sm[1]
    proj = Ro @ S3  # (2, v)
    r = np.concatenate([a * dx - b * dy + tx + sm[0] - sigma * proj[0] - o[0],
                        b * dx + a * dy + ty + sm[1] - sigma * proj[1] - o[1]])
    J = np.zeros((n2, 5 * v + 10))
    i = np.arange(v)
    J[i, i], J[i, v + i], J[v + i, i], J[v + i, v + i] = a, -b, b, a  # d s_BM / d s
    J[:, n2] = np.concatenate([dx, dy])  # d s_BM / d theta
    J[:, n2 + 1] = np.concatenate([-dy, dx])
    J[:v, n2 + 2] = 1
    J[v:, n2 + 3] = 1
    for c in range(3):  # -sigma (R_o (x) I_v)
        J[i, n2 + 4 + c * v + i] = -sigma * Ro[0, c]
        J[v + i, n2 + 4 + c * v + i] = -sigma * Ro[1, c]
    J[:, 5 * v + 4] = -proj.reshape(-1)
    for k in range(3):
        J[:, 5 * v + 5 + k] = -sigma * ((R @ _GEN[k])[:2] @ S3).reshape(-1)
    J[:v, 5 * v + 8] = -1
    J[v:, 5 * v + 9] = -1
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


def assemble3d(p, R, resp, s0vec, sm, prec, lam, floor, S3_0, prec3, lam2, lam3):
    """Total cost ``f3D``, gradient ``(5v+10,)`` and Hessian (GSM 2D part + :func:`terms3d`)."""
    n = len(s0vec) + 4
    f2, g2, H2 = assemble(p[:n], resp, s0vec, sm, prec, lam, floor)
    f3, g, H = terms3d(p, R, S3_0, prec3, sm, lam2, lam3)
    g[:n] += g2
    H[:n, :n] += H2
    return f2 + f3, g, H


def _init_3d(shape3d_mean, s_bm):
    """Camera ``(sigma, R, o)`` of the 3D mean fitted to a reference-frame shape."""
    sigma, R, o = ortho_procrustes(shape3d_mean, s_bm)
    return sigma, R, o


def fit_gsm3d(model, pyramid, start, *, pinned=None, params=None, history=True, lam2=None,
              lam3=None):
    """Fit GSM 2D+3D from a start shape.

    Parameters
    ----------
    model : napari_gsm.model.Model
        With a :class:`GSM3DState` in ``model.state``.
    pyramid : napari_gsm.features.Pyramid
    start : (v, 2) array
        Starting shape in image coordinates.
    pinned : (v,) bool array, optional
        Landmarks held exactly at their ``start`` position (the 3D part still fits them).
    params : GSMParams, optional
    lam2, lam3 : float, optional
        Override the state's weights.

    Returns
    -------
    FitResult
        ``extra`` holds ``yaw``, ``pitch``, ``roll`` (degrees, image frame), ``rotation``
        ``(3, 3)`` (model -> image axes), ``landmarks3d``
        ``(v, 3)`` (image pixels: x, y near the fitted points, about the same centroid;
        z depth away from the camera, relative to the centroid) and ``shape3d``
        ``(v, 3)`` (the fitted 3D shape in model units).
    """
    params = params or model.gsm_params
    state = model.state
    shape_model, det, spec = model.shape, model.detectors, model.features
    t0 = time.perf_counter()
    lam = params.lam
    lam2 = lam2 if lam2 is not None else (state.lam2 if state.lam2 is not None else lam)
    lam3 = lam3 if lam3 is not None else state.lam3
    s0vec = to_vec(shape_model.mean)
    sm = shape_model.sm
    prec = model.precision
    prec3, S3_0 = state.precision, state.mean_vec
    v = shape_model.n_landmarks
    n2 = 2 * v
    pinned = np.zeros(v, bool) if pinned is None else np.asarray(pinned, bool)
    free = np.concatenate([~pinned, ~pinned, np.ones(3 * v + 10, bool)]).nonzero()[0]
    s = np.asarray(start, float)
    theta = pose_from_shape(s, shape_model.s0, sm)
    sigma, R, o = _init_3d(state.shape3d.mean, to_base_mesh(s, theta, sm))
    p = np.concatenate([to_vec(s), theta, S3_0, [sigma, 0, 0, 0], o])
    hist, costs = [s.copy()], []
    converged = False
    n_iter = 0
    # The same schedule as GSM 2D: coarse to fine over the detectors' target widths, the
    # longest landmark move capped, the root-mean-square move deciding convergence.
    level = 0
    n_levels = len(det.sigmas)
    for n_iter in range(1, params.max_iter + 1):
        shape = from_vec(p[:n2])
        patches = frame_patches(pyramid, shape, p[n2:n2 + 4], sm, shape_model.frame_shape, spec)
        resp = det.responses(patches, level)
        floor = params.curvature_floor / det.sigmas[level] ** 2
        f, grad, H = assemble3d(p, R, resp, s0vec, sm, prec, lam, floor, S3_0, prec3,
                                lam2, lam3)
        costs.append(f)
        step = newton_step(grad, H, free)
        scale = np.hypot(p[n2], p[n2 + 1])
        moves = scale * np.hypot(step[:v], step[v:n2])
        longest = moves.max()
        if longest > params.max_step:
            step *= params.max_step / longest
            moves *= params.max_step / longest
        move = np.sqrt((moves**2).mean())
        p = p + step
        # Multiplicative rotation update (eq. 41), back onto SO(3), dtheta reset to 0.
        R = _project_rotation(R @ (np.eye(3) + skew(p[5 * v + 5:5 * v + 8])))
        p[5 * v + 5:5 * v + 8] = 0
        if history:
            hist.append(from_vec(p[:n2]))
        if level < n_levels - 1:
            if move <= params.coarse_tol:
                level += 1
        elif move <= params.tol:
            converged = True
            break
    points = from_vec(p[:n2])
    points[pinned] = s[pinned]
    theta = p[n2:n2 + 4]
    extra = _pose_outputs(theta, p[n2 + 4:5 * v + 4], p[5 * v + 4], R, points)
    return FitResult(points=points, n_iter=n_iter, converged=converged,
                     fit_ms=(time.perf_counter() - t0) * 1e3, history=hist if history else [],
                     costs=costs, pose=theta.copy(), method="gsm3d", extra=extra)


def _pose_outputs(theta, S3vec, sigma, R, points):
    """Head pose and 3D landmarks in the image frame.

    The image is the reference frame mapped back by ``A^-1``: a scale ``1/|A|`` and an
    in-plane rotation by ``-phi`` (``A = |A| Rot(phi)``), so the image-frame rotation is
    ``Rz(-phi) R`` and the image-frame camera scale ``sigma / |A|``.
    """
    a, b = theta[0], theta[1]
    phi = np.arctan2(b, a)
    c, s_ = np.cos(-phi), np.sin(-phi)
    Rz = np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]])
    R_img = Rz @ R
    S3 = from_vec3(S3vec)
    k = sigma / np.hypot(a, b)
    pts3 = k * (S3 - S3.mean(0)) @ R_img.T
    pts3[:, :2] += np.nanmean(points, 0)  # the fitted shape's centroid
    yaw, pitch, roll = rotation_to_euler(R_img)
    return {"yaw": yaw, "pitch": pitch, "roll": roll, "rotation": R_img,
            "landmarks3d": pts3, "shape3d": S3}
