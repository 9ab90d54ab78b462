"""GSM-CR training's work on a part of the training images (:mod:`.cascade_train`).

A :class:`Part` keeps its images' virtual samples -- their current shapes -- from one
cascade level to the next, where it was made: in this process, or on a Dask worker when
training runs on a cluster. The images are read again at every level (one decode per image
and level, next to ``M`` warps and feature maps), so a part holds no pixels between levels,
only one level's features while that level is solved. Every step returns a new part and
leaves its input as it was: a task that Dask runs again after losing a worker must find
its inputs unchanged.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from ..features import Pyramid, feature_map
from ..training import image_rng
from .cascade import _from_frame, _poses, _sigma_index, _to_frame, _warp

__all__ = ["Part", "start_part", "errors", "residual_sums", "level_features", "level_sums",
           "heldout_errors", "advance"]

#: Stages of :func:`~napari_gsm.training.image_rng` drawn from here.
_STARTS, _NOISE = 1, 2


@dataclass
class Part:
    """Virtual samples of some training images.

    Attributes
    ----------
    samples : list of Sample
        The images (read at every level, not held).
    hold : (n,) bool array
        Held out to choose each level's ridge weight.
    fold : (n,) int array
        Each image's calibration fold, -1 for none.
    truth : (n, v, 2) array
    theta_true : (n, 4) array
        Poses of the true shapes.
    cur : (n, M, v, 2) array
        The virtual samples' current shapes (image frame).
    thetas, x, F, dP
        One level's poses ``(n, M, 4)``, shapes in the reference frame ``(n, M, v, 2)``,
        features ``(n M, 6v + 1)`` (float32, bias last) and targets ``(n M, 2v)``; None
        outside a level.
    """

    samples: list
    hold: np.ndarray
    fold: np.ndarray
    truth: np.ndarray
    theta_true: np.ndarray
    cur: np.ndarray
    thetas: np.ndarray = None
    x: np.ndarray = None
    F: np.ndarray = None
    dP: np.ndarray = None

    def rows(self, held):
        """Row indices (into ``F``) of the held-out images' samples, or of the others."""
        M = self.cur.shape[1]
        return np.flatnonzero(np.repeat(self.hold == held, M))


def start_part(samples, hold, fold, model, kind, M, spread, seed, tick=None):
    """A part's ``M`` simulated starts per image (:meth:`~napari_gsm.init.StartModel.simulate`),
    each image drawing from its own generator. ``samples`` need their ``size``."""
    s0, sm = model.shape.s0, model.shape.sm
    samples = [s.with_points() for s in samples]
    truth = np.stack([s.points for s in samples]).astype(float)
    cur = np.stack([model.starts.simulate(s0, truth[i], smp.size, kind, M,
                                          image_rng(seed, smp.index, _STARTS), spread)
                    for i, smp in enumerate(samples)])
    return Part(list(samples), np.asarray(hold, bool), np.asarray(fold, int), truth,
                _poses(truth, s0, sm), cur)


def errors(part, model):
    """``(sum, count)`` of the held-out images' and of the other images' mean point errors
    per virtual sample, in reference-frame pixels: four numbers."""
    scale = np.hypot(part.theta_true[:, 0], part.theta_true[:, 1])
    d = np.hypot(*(part.cur - part.truth[:, None]).transpose(3, 0, 1, 2)).mean(-1)
    e = d * scale[:, None]
    return np.array([e[part.hold].sum(), e[part.hold].size, e[~part.hold].sum(),
                     e[~part.hold].size], float)


def _frames(part, model):
    """Poses of the current shapes and the current and true shapes in their frames."""
    s0, sm = model.shape.s0, model.shape.sm
    n, M, v, _ = part.cur.shape
    thetas = _poses(part.cur.reshape(n * M, v, 2), s0, sm)
    x = _to_frame(part.cur.reshape(n * M, v, 2), thetas, sm).reshape(n, M, v, 2)
    xt = _to_frame(np.repeat(part.truth, M, 0), thetas, sm).reshape(n, M, v, 2)
    return thetas.reshape(n, M, 4), x, xt


def residual_sums(part, model):
    """Sums of the residuals ``truth - x`` in the frames and of their squares, ``(v, 2)``
    each, and their count: the spread of the residuals that ``noise`` scales."""
    _, x, xt = _frames(part, model)
    r = (xt - x).reshape(-1, *x.shape[2:])
    return r.sum(0), (r * r).sum(0), len(r)


def level_features(part, model, k, coarse_levels, share, noise, spread_r, seed, threads,
                   tick=None):
    """The part's features and targets at cascade level ``k`` (Algorithm 4).

    With ``noise`` (and ``k > 0``), the virtual samples first move by normal noise of
    ``noise * spread_r`` (the residuals' spread over all images, ``(v, 2)``), each image
    from its own generator.
    """
    sm = model.shape.sm
    n, M, v, _ = part.cur.shape
    cur = part.cur
    thetas, x, xt = _frames(part, model)
    if k > 0 and noise > 0:
        # Algorithm 4 line 3/6: jitter the virtual samples with the spread of the
        # current residuals, so level k sees more than the previous level's output.
        x = x + noise * spread_r * np.stack([
            image_rng(seed, smp.index, _NOISE, k).standard_normal((M, v, 2))
            for smp in part.samples])
        cur = _from_frame(x.reshape(n * M, v, 2), thetas.reshape(-1, 4),
                          sm).reshape(n, M, v, 2)
        thetas, x, xt = _frames(replace(part, cur=cur), model)
    F = np.empty((n, M, 6 * v + 1), np.float32)
    F[..., -1] = 1.0
    reader = model.detectors.reader(_sigma_index(model, k, coarse_levels), model.features)

    def job(i):
        pyr = Pyramid(part.samples[i].image())
        F[i, :, :-1] = _image_features(pyr, cur[i], thetas[i], part.theta_true[i], model,
                                       reader, share)
        return i

    with ThreadPoolExecutor(threads) if threads > 1 else _Serial() as pool:
        for _ in pool.map(job, range(n)):
            if tick is not None:
                tick()
    dP = np.concatenate([(xt - x)[..., 0], (xt - x)[..., 1]], -1).reshape(n * M, 2 * v)
    return replace(part, cur=cur, thetas=thetas, x=x, F=F.reshape(n * M, -1), dP=dP)


class _Serial:
    """``map`` in this thread, as a context manager like an executor."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, func, items):
        return map(func, items)


def level_sums(part):
    """The level's regression sums of the part: ``F^T F``, ``F^T dP`` and the row count of
    the images not held out (``G``, ``B``, ``n``) and of the held-out ones (``Gh``, ``Bh``,
    ``nh``), and per calibration fold ``f`` present, ``folds[f] = (G, B, n)`` of its
    images' rows (held out or not)."""
    M = part.cur.shape[1]
    hold, fold = np.repeat(part.hold, M), np.repeat(part.fold, M)
    d, d_out = part.F.shape[1], part.dP.shape[1]
    out = {"G": np.zeros((d, d)), "B": np.zeros((d, d_out)), "n": 0,
           "Gh": np.zeros((d, d)), "Bh": np.zeros((d, d_out)), "nh": 0, "folds": {}}
    # Each row enters one product: the totals are sums of the (fold, held out) groups.
    for f in np.unique(fold):
        group = {}
        for held, suffix in ((False, ""), (True, "h")):
            rows = np.flatnonzero((fold == f) & (hold == held))
            G, B = group[held] = _gram(part.F, part.dP, rows)
            out["G" + suffix] += G
            out["B" + suffix] += B
            out["n" + suffix] += len(rows)
        if f >= 0:
            out["folds"][int(f)] = (group[False][0] + group[True][0],
                                    group[False][1] + group[True][1],
                                    int(np.count_nonzero(fold == f)))
    return out


def heldout_errors(part, candidates):
    """Per candidate matrix, the sum over the held-out rows of the landmarks' residual
    lengths after its update, and the number of terms."""
    ho = part.rows(True)
    v = part.dP.shape[1] // 2
    out = []
    for R in candidates:
        res = part.dP[ho] - _apply(part.F, R, ho)
        out.append(np.hypot(res[:, :v], res[:, v:]).sum())
    return np.array(out), len(ho) * v


def advance(part, model, R, R_hold=None):
    """The part after the level: every virtual sample moved by ``[f, 1] @ R``, the held-out
    images' by ``R_hold`` (the matrix that never saw them) when given."""
    n, M, v, _ = part.cur.shape
    upd = _apply(part.F, R, np.arange(n * M))
    if R_hold is not None:
        ho = part.rows(True)
        upd[ho] = _apply(part.F, R_hold, ho)
    x = part.x + np.stack([upd[:, :v], upd[:, v:]], -1).reshape(n, M, v, 2)
    cur = _from_frame(x.reshape(n * M, v, 2), part.thetas.reshape(-1, 4),
                      model.shape.sm).reshape(n, M, v, 2)
    return replace(part, cur=cur, thetas=None, x=None, F=None, dP=None)


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


def _apply(F, R, rows, chunk=8192):
    """``F[rows] @ R`` in float64, chunked."""
    out = np.empty((len(rows), R.shape[1]))
    for i in range(0, len(rows), chunk):
        out[i:i + chunk] = F[rows[i:i + chunk]].astype(np.float64) @ R
    return out
