"""GSM-CR: cascade regression on GSM features (paper section 5, Algorithms 3-4).

Every level ``k`` reads the ``6v`` GSM responses (eq. 50) at the current shape and adds a
learned linear update::

    x_{k+1} = x_k + R_k^T [f(x_k), 1]

``f`` is ``[<I,h>..., <I,h_x>..., <I,h_y>..., <I,h_xx>..., <I,h_yy>..., <I,h_xy>...]``
(six blocks of ``v``), measured in the pose-normalised frame: the pose ``theta`` of the
current shape is found by Procrustes against ``s0``, the image is warped into the reference
frame, and ``x`` is the shape there. The update is learned and applied in that frame too
(``2v`` numbers, mapped back to the image by ``S^-1``), so it does not depend on where the
object is or how large it is.

Training (Algorithm 4) simulates ``M`` starts per image drawn like the real starts, runs the
cascade on them level by level and solves one ridge regression per level. Only the ``6v + 1``
features of every virtual sample are kept, never patches. The ridge weight of each level, and
whether its matrix is full or *local* (each landmark's update read from its own six
features only, :func:`_ridge_local`), are chosen on held-out training images: with a few
dozen images the local structure generalises better (wings, X-rays), with thousands the
full one is as good or better (faces). The expensive part -- a warp and a feature map per
virtual sample -- is shared between the perturbations of one image whose pose differs only
by translation, or by less than a quantisation step of rotation and scale (see
:func:`_image_features`), and the responses are computed without materialising patches
(:mod:`napari_gsm.responses`). When the detectors have several target widths the first
``coarse_levels`` levels read the widest (longer reach), the rest the finest.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..features import Pyramid, feature_map
from ..geometry import pose_from_shape
from ..result import FitResult
from ..shape import from_vec
from .gsm import fit_gsm

__all__ = ["CascadeState", "train_cascade", "fit_cascade", "load_cascade"]

#: Default ``spread`` per start kind, each measured on training images from real starts.
#: 'face': held-out training faces from their Viola-Jones boxes (800 train / 300 held out,
#: M=40, K=5): mean NME 0.0936 at 1.0, 0.0942 at 1.5, 0.1005 at 2.0. 'prior': 5-fold
#: cross-validation on the wings and X-ray training splits (30 and 74 images) from their
#: prior starts, four cascade seeds each (``benchmarks/spread_cv.py``): mean NME 0.472 /
#: 0.452 / 0.455 % (wings) and 0.943 / 0.930 / 0.952 % (X-rays) at 1.5 / 2.0 / 2.5, 2.0
#: the lowest for every seed on both sets. A prior placement estimated from a few dozen
#: images has heavier tails than its standard deviation says, and a linear level reaches
#: only as far as its training starts. 'box': not measured, the placement's own spread.
SPREAD = {"face": 1.0, "prior": 2.0, "box": 1.0}

#: Relative ridge weights tried per level (times the number of rows; features standardised).
LAM_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass
class CascadeState:
    """A trained cascade.

    Attributes
    ----------
    R : (K, 6v + 1, 2v) float64 array
        Regression matrices; the last feature row is the bias. The update of level ``k`` is
        ``[f, 1] @ R[k]``, a reference-frame shape vector ``(x..., y...)``.
    info : dict
        Training record (JSON-able): ``levels``, ``perturbations`` (M), ``lam_rel`` and
        ``lam`` (ridge weight per level, relative to the row count and absolute, on
        standardised features), ``local`` (per level: the local structure was chosen),
        ``heldout_grid`` (held-out error of every weight tried, full then local),
        ``init`` (start kind simulated), ``heldout_error`` / ``train_error`` (mean point
        error in reference-frame pixels before the first level and after every level),
        ``coarse_levels``, ``spread``, ``noise``, ``share``, ``seed``, ``train_seconds``.
    fold_states : list of CascadeState or None
        Right after training with ``folds``: the cascade solved without each fold's images,
        for the confidence calibration's cross-validated fits (:mod:`napari_gsm.crossfit`,
        which drops them). Never saved.
    """

    R: np.ndarray
    info: dict
    fold_states: list = field(default=None, repr=False, compare=False)

    @property
    def levels(self):
        return self.R.shape[0]

    def to_arrays(self):
        return {"cascade_R": np.asarray(self.R, np.float64)}

    def params(self):
        return dict(self.info)


def load_cascade(arrays, params):
    """Rebuild a :class:`CascadeState` from :meth:`CascadeState.to_arrays` / ``params``."""
    R = np.asarray(arrays["cascade_R"], np.float64)
    info = dict(params or {})
    if R.ndim != 3 or (R.shape[1] - 1) != 3 * R.shape[2]:
        raise ValueError(f"cascade matrices have shape {R.shape}, expected (K, 6v+1, 2v)")
    return CascadeState(R=R, info=info)


# -- poses, vectorised over samples -----------------------------------------------------

def _poses(shapes, s0, sm):
    """Poses ``theta (n, 4)`` mapping each image-frame shape ``(n, v, 2)`` onto ``s0``.

    The same least-squares similarity as :func:`~napari_gsm.geometry.pose_from_shape`,
    for many shapes at once (shapes must be complete).
    """
    mu_s = shapes.mean(1)
    mu_d = s0.mean(0)
    s = shapes - mu_s[:, None]
    d = s0 - mu_d
    den = (s**2).sum((1, 2))
    a = (s * d).sum((1, 2)) / den
    b = (s[..., 0] * d[:, 1] - s[..., 1] * d[:, 0]).sum(1) / den
    # t = mu_d - A mu_s; pose translation = t - sm + A sm = mu_d - sm - A (mu_s - sm)
    cx, cy = mu_s[:, 0] - sm[0], mu_s[:, 1] - sm[1]
    tx = mu_d[0] - sm[0] - (a * cx - b * cy)
    ty = mu_d[1] - sm[1] - (b * cx + a * cy)
    return np.column_stack([a, b, tx, ty])


def _to_frame(shapes, thetas, sm):
    """``S(shape, theta)`` for ``(n, v, 2)`` shapes and ``(n, 4)`` poses."""
    a, b = thetas[:, 0, None], thetas[:, 1, None]
    dx, dy = shapes[..., 0] - sm[0], shapes[..., 1] - sm[1]
    return np.stack([a * dx - b * dy + thetas[:, 2, None] + sm[0],
                     b * dx + a * dy + thetas[:, 3, None] + sm[1]], -1)


def _from_frame(xs, thetas, sm):
    """Inverse of :func:`_to_frame`."""
    a, b = thetas[:, 0, None], thetas[:, 1, None]
    den = a * a + b * b
    ux = xs[..., 0] - thetas[:, 2, None] - sm[0]
    uy = xs[..., 1] - thetas[:, 3, None] - sm[1]
    return np.stack([(a * ux + b * uy) / den + sm[0], (-b * ux + a * uy) / den + sm[1]], -1)


def _warp(pyramid, theta, sm, frame_shape):
    return pyramid.warp(theta, sm, frame_shape)


def _sigma_index(model, level, coarse_levels):
    """Which detector width cascade ``level`` reads: the coarsest for the first levels."""
    filters = model.detectors.filters
    if filters.ndim != 6 or level >= coarse_levels:
        return -1
    return 0


# -- fitting (Algorithm 3) --------------------------------------------------------------

def fit_cascade(model, pyramid, start, *, pinned=None, history=True, warm_start=False):
    """Fit GSM-CR from a start shape.

    Parameters
    ----------
    model : napari_gsm.model.Model
        With a trained :class:`CascadeState` in ``model.state``.
    pyramid : napari_gsm.features.Pyramid
    start : (v, 2) array
        Starting shape in image coordinates.
    pinned : (v,) bool array, optional
        Landmarks held exactly at their ``start`` position. The cascade cannot hold a
        landmark (every level moves all of them, learned from unconstrained starts spread
        like the prior's or the face detector's, not from a fit a person has corrected), so
        a fit with pins is GSM's Newton fit (:func:`~napari_gsm.methods.gsm.fit_gsm`) on
        the same detectors and shape prior, which holds them.
    history : bool
        Keep the shape after every level.
    warm_start : bool
        The start is already close (the previous video frame's fit): skip the first
        ``coarse_levels`` levels, which read the widest target and were trained for the
        start's capture range, as GSM skips its coarse widths.

    Returns
    -------
    FitResult
        ``n_iter`` is the number of levels run; ``extra['update_px']`` the mean landmark
        move of every level, in reference-frame pixels; ``extra['score']`` the mean
        ``<I, h>`` the last level read (at the finest width). With pins, :func:`fit_gsm`'s
        result.
    """
    state = model.state
    if not isinstance(state, CascadeState):
        raise ValueError("this model has no trained cascade (train it with method='gsm-cr')")
    if pinned is not None and np.any(pinned):
        return fit_gsm(model, pyramid, start, pinned=pinned, history=history)
    t0 = time.perf_counter()
    shape_model, spec = model.shape, model.features
    s0, sm, frame_shape = shape_model.s0, shape_model.sm, shape_model.frame_shape
    coarse = int(state.info.get("coarse_levels", 0))
    readers = [model.detectors.reader(_sigma_index(model, k, coarse), model.features) for k in range(state.levels)]
    v = shape_model.n_landmarks
    s = np.asarray(start, float).copy()
    hist = [s.copy()] if history else []
    moves = []
    f = np.empty(6 * v + 1)
    f[-1] = 1.0
    first = min(coarse, state.levels - 1) if warm_start else 0
    for k, R in enumerate(state.R[first:], first):
        theta = pose_from_shape(s, s0, sm)
        fmap = feature_map(_warp(pyramid, theta, sm, frame_shape), spec)
        x = _to_frame(s[None], theta[None], sm)
        f[:-1] = readers[k].read(fmap, x)[0]
        dx = f @ R
        moves.append(float(np.hypot(dx[:v], dx[v:]).mean()))
        s = _from_frame(x + from_vec(dx)[None], theta[None], sm)[0]
        if history:
            hist.append(s.copy())
    return FitResult(points=s, n_iter=len(moves), converged=True,
                     fit_ms=(time.perf_counter() - t0) * 1e3, history=hist,
                     pose=pose_from_shape(s, s0, sm), method="gsm-cr",
                     extra={"update_px": moves, "score": float(f[:v].mean())})


# -- training (Algorithm 4) -------------------------------------------------------------

def _image_features(pyramid, shapes, thetas, theta_true, model, reader, share):
    """Features ``(M, 6v)`` of one image's virtual samples ``shapes (M, v, 2)``.

    Exact mode (``share`` None) warps the image once per sample at that sample's pose, as
    fitting does. Otherwise samples whose pose differs from the true pose by the same
    quantised rotation and scale (steps ``share = (radians, log scale)``) share one warp and
    feature map: a translation of the pose only moves where patches are read, so the
    sample's patches are read at ``S(shape)`` under the shared pose. The features then
    differ from the exact ones by at most half a step of rotation and scale.
    """
    sm, spec, fs = model.shape.sm, model.features, model.shape.frame_shape
    M, v = shapes.shape[:2]
    F = np.empty((M, 6 * v), np.float32)
    if share is None:
        for j in range(M):
            fmap = feature_map(_warp(pyramid, thetas[j], sm, fs), spec)
            F[j] = reader.read(fmap, _to_frame(shapes[j:j + 1], thetas[j:j + 1], sm))[0]
        return F
    zt = complex(theta_true[0], theta_true[1])
    rel = (thetas[:, 0] + 1j * thetas[:, 1]) / zt
    qa = np.round(np.angle(rel) / share[0]).astype(int)
    qs = np.round(np.log(np.abs(rel)) / share[1]).astype(int)
    keys = qa * 100003 + qs
    for key in np.unique(keys):
        idx = np.flatnonzero(keys == key)
        z = zt * np.exp(share[1] * qs[idx[0]] + 1j * share[0] * qa[idx[0]])
        a, b = z.real, z.imag
        # Translation that puts the group's mean centroid where the exact poses put it (sm).
        cbar = shapes[idx].mean((0, 1)) - sm
        t = -np.array([a * cbar[0] - b * cbar[1], b * cbar[0] + a * cbar[1]])
        th = np.array([a, b, t[0], t[1]])
        fmap = feature_map(_warp(pyramid, th, sm, fs), spec)
        x = _to_frame(shapes[idx], np.broadcast_to(th, (len(idx), 4)), sm)
        F[idx] = reader.read(fmap, x)
    return F


def _solve(G, B, lam):
    """Ridge solution with an unpenalised bias (last row/column of ``G``)."""
    d = G.shape[0]
    reg = np.full(d, lam)
    reg[-1] = 0.0
    return np.linalg.solve(G + np.diag(reg), B)


def _standardiser(G, n):
    """Per-column scales that make ``G = F^T F`` (bias last) a correlation-like matrix."""
    mean = G[-1, :-1] / n
    var = np.maximum(np.diag(G)[:-1] / n - mean**2, 0.0)
    scale = np.ones(G.shape[0])
    scale[:-1] = 1.0 / np.sqrt(var + 1e-12 * (var.max() + 1e-30))
    return scale


def _gram(F, dP, rows, chunk=8192):
    """``F^T F`` and ``F^T dP`` over ``rows``, in float64, a chunk of rows at a time."""
    d = F.shape[1]
    G = np.zeros((d, d))
    B = np.zeros((d, dP.shape[1]))
    for i in range(0, len(rows), chunk):
        r = rows[i:i + chunk]
        Fr = F[r].astype(np.float64)
        G += Fr.T @ Fr
        B += Fr.T @ dP[r]
    return G, B


def _ridge(G, B, n, lam_rel):
    """Ridge matrices ``(6v+1, 2v)`` from ``G = F^T F``, ``B = F^T dP`` of ``n`` rows.

    Columns are standardised first (the responses and their derivatives have very different
    scales), so one relative weight per level fits all of them; ``lam = lam_rel * n``.
    """
    sc = _standardiser(G, n)
    Gs = G * sc[:, None] * sc[None, :]
    Bs = B * sc[:, None]
    return [sc[:, None] * _solve(Gs, Bs, lr * n) for lr in lam_rel]


def _ridge_local(G, B, n, lam_rel):
    """Like :func:`_ridge`, but each landmark's update reads only its own six features.

    The same linear map ``[f, 1] @ R`` with ``R`` zero outside each landmark's own rows
    (and the bias): ``v`` small ridge problems instead of one. With few training images a
    full ``6v x 2v`` map learns image-specific couplings between distant landmarks; this
    one cannot, so it generalises from less data (the choice is made on held-out images).
    """
    sc = _standardiser(G, n)
    Gs = G * sc[:, None] * sc[None, :]
    Bs = B * sc[:, None]
    d, n2 = B.shape
    v = n2 // 2
    out = []
    for lr in lam_rel:
        R = np.zeros((d, n2))
        for i in range(v):
            idx = np.r_[i:6 * v:v, d - 1]
            cols = [i, v + i]
            X = _solve(Gs[np.ix_(idx, idx)], Bs[np.ix_(idx, cols)], lr * n)
            R[np.ix_(idx, cols)] = sc[idx, None] * X
        out.append(R)
    return out


def _apply(F, R, rows, chunk=8192):
    """``F[rows] @ R`` in float64, chunked."""
    out = np.empty((len(rows), R.shape[1]))
    for i in range(0, len(rows), chunk):
        out[i:i + chunk] = F[rows[i:i + chunk]].astype(np.float64) @ R
    return out


def train_cascade(model, samples, *, progress=None, levels=5, perturbations=40, lam=None,
                  init="auto", seed=0, noise=0.0, spread=None, share=(0.2, 0.2),
                  holdout=0.15, threads=1, coarse_levels=2, folds=None):
    """Learn the cascade (Algorithm 4).

    Parameters
    ----------
    model : napari_gsm.model.Model
        With its shape model, detectors and start model trained.
    samples : list of napari_gsm.model.Sample
        Training images; images with a missing landmark are skipped.
    progress : callable ``(done, total, what)``, optional
    levels : int
        Cascade levels ``K``.
    perturbations : int
        Virtual samples per image ``M``.
    lam : float, optional
        Ridge weight relative to the number of rows (features are standardised); the
        matrices are then full. Default: the weight and the structure (full or local) are
        chosen per level from :data:`LAM_GRID` by the error on held-out training images.
    init : {'auto', 'face', 'box', 'prior'}
        Which start to simulate: 'auto' is the face-box start for a face model, else the
        prior placement -- what a fit without a box or points starts from. A cascade
        trained for prior starts also fits well from boxes drawn by hand, better than one
        trained for 'box' starts, whose spread (a box exactly around the landmarks) is
        narrower than a person's box: from boxes with -5 to +10 % slack per side, wings
        0.44 vs 0.69 % and X-rays 0.95 vs 1.14 % mean NME on the benchmark splits.
    seed : int
    noise : float
        Scale of the per-level noise added to the virtual samples, relative to the spread of
        the current residuals (Algorithm 4, lines 3 and 6). Off by default: independent
        noise per landmark coordinate is not something the next level can learn to undo,
        and on 300 faces it doubled the held-out error after five levels (0.5: 8.7 vs 4.9
        reference pixels).
    spread : float, optional
        Scale of the simulated start errors relative to the start model's spreads (which are
        the measured errors of the real starts: the face-box regression's residuals, a box
        start's, or the prior placement's). Default: :data:`SPREAD` for the start kind.
    share : (float, float) or None
        Rotation (radians) and log-scale steps within which perturbations of one image share
        a warped frame (see :func:`_image_features`); None warps every sample exactly.
    holdout : float
        Fraction of images held out to choose ``lam`` (ignored when ``lam`` is given).
    coarse_levels : int
        How many first levels read the coarsest detectors (widest target, longer reach)
        instead of the finest, when the detectors have several widths.
    threads : int
        Worker threads for feature extraction (OpenCV and numpy release the GIL).
    folds : list of int arrays, optional
        Groups of indices into ``samples``. Each level's matrix is also solved without each
        group's images (same weight and structure, the group's rows taken out of the sums
        the ridge regression is solved from), giving ``state.fold_states``.

    Returns
    -------
    CascadeState
    """
    t_start = time.perf_counter()
    shape_model = model.shape
    s0, sm = shape_model.s0, shape_model.sm
    v = shape_model.n_landmarks
    M = int(perturbations)
    kept = [i for i, s in enumerate(samples) if np.isfinite(s.points).all()]
    samples = [samples[i] for i in kept]
    N = len(samples)
    if N == 0:
        raise ValueError("GSM-CR needs at least one fully annotated image")
    starts = model.starts
    kind = starts.start_kind(init)
    spread = SPREAD[kind] if spread is None else float(spread)
    rng = np.random.default_rng(seed)
    order = rng.permutation(N)
    n_hold = 0 if lam is not None else int(round(holdout * N))
    if lam is None and n_hold == 0 and N >= 2:
        n_hold = 1
    hold_img = np.zeros(N, bool)
    hold_img[order[:n_hold]] = True
    hold_rows = np.repeat(hold_img, M)
    fit_rows = np.flatnonzero(~hold_rows)
    ho_rows = np.flatnonzero(hold_rows)
    lam_grid = LAM_GRID if lam is None else (float(lam),)
    new_index = {old: new for new, old in enumerate(kept)}
    fold_rows = [np.concatenate([np.arange(new_index[i] * M, new_index[i] * M + M)
                                 for i in f if i in new_index] or [np.zeros(0, int)])
                 for f in (folds or [])]
    fold_Rs = [[] for _ in fold_rows]

    truth = np.stack([s.points for s in samples]).astype(float)  # (N, v, 2)
    cur = np.stack([starts.simulate(s0, truth[i], samples[i].grey.shape, kind, M, rng, spread)
                    for i in range(N)])  # (N, M, v, 2)
    theta_true = _poses(truth, s0, sm)  # (N, 4)
    true_scale = np.hypot(theta_true[:, 0], theta_true[:, 1])

    def err(shapes):  # mean point error per image-sample, reference-frame pixels
        d = np.hypot(*(shapes - truth[:, None]).transpose(3, 0, 1, 2)).mean(-1)
        return d * true_scale[:, None]

    e0 = err(cur)
    info = {"levels": int(levels), "perturbations": M, "init": kind, "seed": int(seed),
            "noise": float(noise), "coarse_levels": int(coarse_levels), "spread": float(spread),
            "share": None if share is None else list(share),
            "n_images": N, "n_heldout": int(n_hold), "lam": [], "lam_rel": [], "local": [],
            "heldout_error": [float(e0[hold_img].mean()) if n_hold else None],
            "train_error": [float(e0[~hold_img].mean())], "heldout_grid": []}
    Rs = []
    total = levels * N
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        for k in range(levels):
            if progress is not None:  # name the level as it starts, before its first images
                progress(k * N, total, f"cascade level {k + 1}/{levels}")
            thetas = _poses(cur.reshape(N * M, v, 2), s0, sm).reshape(N, M, 4)
            x = _to_frame(cur.reshape(N * M, v, 2), thetas.reshape(-1, 4), sm).reshape(N, M, v, 2)
            xt = _to_frame(np.repeat(truth, M, 0), thetas.reshape(-1, 4), sm).reshape(N, M, v, 2)
            if k > 0 and noise > 0:
                # Algorithm 4 line 3/6: jitter the virtual samples with the spread of the
                # current residuals, so level k sees more than the previous level's output.
                r = (xt - x).reshape(N * M, v, 2).std(0)  # (v, 2)
                x = x + noise * r * rng.standard_normal(x.shape)
                cur = _from_frame(x.reshape(N * M, v, 2), thetas.reshape(-1, 4),
                                  sm).reshape(N, M, v, 2)
                thetas = _poses(cur.reshape(N * M, v, 2), s0, sm).reshape(N, M, 4)
                x = _to_frame(cur.reshape(N * M, v, 2), thetas.reshape(-1, 4),
                              sm).reshape(N, M, v, 2)
                xt = _to_frame(np.repeat(truth, M, 0), thetas.reshape(-1, 4),
                               sm).reshape(N, M, v, 2)
            F = np.empty((N, M, 6 * v + 1), np.float32)
            F[..., -1] = 1.0
            reader = model.detectors.reader(_sigma_index(model, k, coarse_levels), model.features)

            def job(i):
                pyr = Pyramid(samples[i].grey)
                F[i, :, :-1] = _image_features(pyr, cur[i], thetas[i], theta_true[i], model,
                                               reader, share)
                return i

            done = 0
            it = pool.map(job, range(N)) if pool else map(job, range(N))
            for _ in it:
                done += 1
                if progress is not None and (done % 10 == 0 or done == N):
                    progress(k * N + done, total, f"cascade level {k + 1}/{levels}")
            F = F.reshape(N * M, -1)
            dP = np.concatenate([(xt - x)[..., 0], (xt - x)[..., 1]], -1).reshape(N * M, 2 * v)
            all_rows = np.arange(N * M)
            G, B = _gram(F, dP, fit_rows)
            if n_hold:
                Gh, Bh = _gram(F, dP, ho_rows)
                # Both structures, every weight: the held-out images decide.
                cands = (_ridge(G, B, len(fit_rows), lam_grid)
                         + _ridge_local(G, B, len(fit_rows), lam_grid))
                errs = []
                for Rc in cands:
                    res = dP[ho_rows] - _apply(F, Rc, ho_rows)
                    errs.append(float(np.hypot(res[:, :v], res[:, v:]).mean()))
                best = int(np.argmin(errs))
                info["heldout_grid"].append(errs)
                R_hold = cands[best]
                G, B = G + Gh, B + Bh
            else:
                best = 0
            local = best >= len(lam_grid)
            lam_rel = lam_grid[best % len(lam_grid)]
            # Held-out samples go on with the matrix that never saw them (an honest error
            # for the next level); the stored matrix is refitted on every image.
            (R,) = (_ridge_local if local else _ridge)(G, B, N * M, (lam_rel,))
            for rows, Rf in zip(fold_rows, fold_Rs):
                Gf, Bf = _gram(F, dP, rows)
                Rf.extend((_ridge_local if local else _ridge)(G - Gf, B - Bf, N * M - len(rows),
                                                              (lam_rel,)))
            upd = _apply(F, R, all_rows)
            if n_hold:
                upd[ho_rows] = _apply(F, R_hold, ho_rows)
            x = x + np.stack([upd[:, :v], upd[:, v:]], -1).reshape(N, M, v, 2)
            cur = _from_frame(x.reshape(N * M, v, 2), thetas.reshape(-1, 4),
                              sm).reshape(N, M, v, 2)
            Rs.append(R)
            e = err(cur)
            info["local"].append(bool(local))
            info["lam_rel"].append(lam_rel)
            info["lam"].append(lam_rel * N * M)
            info["heldout_error"].append(float(e[hold_img].mean()) if n_hold else None)
            info["train_error"].append(float(e[~hold_img].mean()))
            del F
    finally:
        if pool is not None:  # on cancel (progress raised), drop the queued images
            pool.shutdown(cancel_futures=True)
    info["train_seconds"] = round(time.perf_counter() - t_start, 2)
    return CascadeState(R=np.stack(Rs), info=info,
                        fold_states=[CascadeState(R=np.stack(r), info=info) for r in fold_Rs]
                        if folds is not None else None)
