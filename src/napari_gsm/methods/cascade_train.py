"""GSM-CR training (paper Algorithm 4): the cascade's matrices, level by level.

Training simulates ``M`` starts per image drawn like the real starts, runs the cascade on
them level by level and solves one ridge regression per level, from the sums ``F^T F``
and ``F^T dP`` over the virtual samples (``F`` their ``6v + 1`` features, ``dP`` the moves
to the truth). The images are split in parts (:mod:`napari_gsm.training`) that keep their
virtual samples where they run (:mod:`.cascade_parts`) and return each level's sums; the
matrices are solved here and sent back to move the samples. The ridge weight of each
level, and whether its matrix is full or *local* (each landmark's update read from its own
six features only, :func:`_ridge_local`), are chosen on held-out training images: with a
few dozen images the local structure generalises better (wings, X-rays), with thousands
the full one is as good or better (faces).
"""

from __future__ import annotations

import time

import numpy as np

from ..training import InProcess, complete, indexed, pick
from ..training import total as parts_total
from . import cascade_parts as P
from .cascade import CascadeState

__all__ = ["train_cascade", "SPREAD", "LAM_GRID"]

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


def train_cascade(model, samples, *, progress=None, levels=5, perturbations=40, lam=None,
                  init="auto", seed=0, noise=0.0, spread=None, share=(0.2, 0.2),
                  holdout=0.15, threads=1, coarse_levels=2, folds=None, runner=None):
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
        Threads for feature extraction in each part (OpenCV and numpy release the GIL).
    folds : list of int arrays, optional
        Groups of indices into ``samples``. Each level's matrix is also solved without each
        group's images (same weight and structure, the group's rows taken out of the sums
        the ridge regression is solved from), giving ``state.fold_states``.
    runner : optional
        Where the images' work runs (:class:`~napari_gsm.training.InProcess`, the default,
        or :class:`~napari_gsm.distributed.OnCluster`): each part of the images keeps its
        virtual samples there from level to level and returns the level's sums, which are
        added here; the matrices are solved here.

    Returns
    -------
    CascadeState
    """
    t_start = time.perf_counter()
    runner = runner or InProcess(progress)
    samples = indexed(samples)
    M = int(perturbations)
    # the fully annotated images, asked of the parts (which read their landmarks)
    whole = np.concatenate([np.zeros(0, bool), *runner.results(runner.map(
        complete, [(p,) for p in runner.parts(samples)]))])
    kept = np.flatnonzero(whole)
    N = len(kept)
    if N == 0:
        raise ValueError("GSM-CR needs at least one fully annotated image")
    kind = model.starts.start_kind(init)
    spread = SPREAD[kind] if spread is None else float(spread)
    rng = np.random.default_rng(seed)
    order = rng.permutation(N)
    n_hold = 0 if lam is not None else int(round(holdout * N))
    if lam is None and n_hold == 0 and N >= 2:
        n_hold = 1
    hold_img = np.zeros(N, bool)
    hold_img[order[:n_hold]] = True
    lam_grid = LAM_GRID if lam is None else (float(lam),)
    fold_of = np.full(len(samples), -1)
    for f, idx in enumerate(folds or []):
        fold_of[np.asarray(idx, int)] = f
    fold_Rs = [[] for _ in (folds or [])]

    handle = runner.put(model)
    parts = runner.parts(np.arange(N))
    states = runner.map(P.start_part, [(pick(samples, kept[p]), hold_img[p],
                                        fold_of[kept[p]], handle, kind, M, spread, seed)
                                       for p in parts])

    def total(func, *args):
        """The parts' results of ``func(part, *args)``, added."""
        return parts_total(runner, states, func, *args)

    def mean_errors():
        e_hold, n_h, e_fit, n_f = total(P.errors, handle)
        return (e_hold / n_h if n_hold else None), e_fit / n_f

    e_hold, e_fit = mean_errors()
    info = {"levels": int(levels), "perturbations": M, "init": kind, "seed": int(seed),
            "noise": float(noise), "coarse_levels": int(coarse_levels), "spread": float(spread),
            "share": None if share is None else list(share),
            "n_images": N, "n_heldout": int(n_hold), "lam": [], "lam_rel": [], "local": [],
            "heldout_error": [None if e_hold is None else float(e_hold)],
            "train_error": [float(e_fit)], "heldout_grid": []}
    Rs = []
    for k in range(levels):
        what = f"cascade level {k + 1}/{levels}"
        if progress is not None:  # name the level as it starts, before its first images
            progress(k * N, levels * N, what)
        spread_r = None
        if k > 0 and noise > 0:
            s1, s2, n = total(P.residual_sums, handle)
            spread_r = np.sqrt(np.maximum(s2 / n - (s1 / n) ** 2, 0.0))
        states = runner.map(P.level_features,
                            [(h, handle, k, coarse_levels, share, noise, spread_r, seed,
                              threads) for h in states], what, levels * N, done=k * N, items=N)
        G = B = Gh = Bh = None
        n_fit = n_ho = 0
        fold_sums = {}
        for r in runner.results(runner.map(P.level_sums, [(h,) for h in states])):
            G, B = (r["G"], r["B"]) if G is None else (G + r["G"], B + r["B"])
            Gh, Bh = (r["Gh"], r["Bh"]) if Gh is None else (Gh + r["Gh"], Bh + r["Bh"])
            n_fit, n_ho = n_fit + r["n"], n_ho + r["nh"]
            for f, (Gf, Bf, nf) in r["folds"].items():
                old = fold_sums.get(f)
                fold_sums[f] = (Gf, Bf, nf) if old is None else (old[0] + Gf, old[1] + Bf,
                                                                 old[2] + nf)
        R_hold = None
        if n_hold:
            # Both structures, every weight: the held-out images decide.
            cands = _ridge(G, B, n_fit, lam_grid) + _ridge_local(G, B, n_fit, lam_grid)
            sums, count = total(P.heldout_errors, runner.put(cands))
            errs = [float(e) for e in sums / count]
            best = int(np.argmin(errs))
            info["heldout_grid"].append(errs)
            R_hold = cands[best]
            G, B = G + Gh, B + Bh
        else:
            best = 0
        local = best >= len(lam_grid)
        lam_rel = lam_grid[best % len(lam_grid)]
        solve = _ridge_local if local else _ridge
        # Held-out samples go on with the matrix that never saw them (an honest error
        # for the next level); the stored matrix is refitted on every image.
        (R,) = solve(G, B, N * M, (lam_rel,))
        for f, Rf in enumerate(fold_Rs):
            Gf, Bf, nf = fold_sums.get(f, (0.0, 0.0, 0))
            Rf.extend(solve(G - Gf, B - Bf, N * M - nf, (lam_rel,)))
        states = runner.map(P.advance, [(h, handle, R, R_hold) for h in states])
        Rs.append(R)
        e_hold, e_fit = mean_errors()
        info["local"].append(bool(local))
        info["lam_rel"].append(lam_rel)
        info["lam"].append(lam_rel * N * M)
        info["heldout_error"].append(None if e_hold is None else float(e_hold))
        info["train_error"].append(float(e_fit))
    info["train_seconds"] = round(time.perf_counter() - t_start, 2)
    return CascadeState(R=np.stack(Rs), info=info,
                        fold_states=[CascadeState(R=np.stack(r), info=info) for r in fold_Rs]
                        if folds is not None else None)
