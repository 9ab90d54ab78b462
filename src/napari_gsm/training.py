"""Training's work on the images, in parts that run where the images are.

Everything :func:`~napari_gsm.model.train` learns from pixels is a sum over images (the
detectors' spectra), a statistic of per-image numbers (the held-out errors that choose
``lam`` and the re-fit scale, the response scores) or a list of per-image rows (the
calibration's cross-validated fits). So training splits its images into *parts*, runs a
function on each part -- here, one part after the other (:class:`InProcess`), or on the
workers of a Dask cluster (:class:`napari_gsm.distributed.OnCluster`), which read the
images themselves -- and combines the parts' results on the caller's side, in the parts'
order. The functions below are those per-part steps; they touch nothing but their part and
what they are given, and what they draw at random comes from a generator of the image's
own (:func:`image_rng`), so a model does not depend on how the images were split.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .detectors import Detectors
from .features import Pyramid, frame_patches
from .geometry import pose_from_shape, pose_from_similarity, shape_size, similarity_fit, \
    to_base_mesh
from .init import FaceDetector

__all__ = ["Sample", "InProcess", "image_rng", "pick", "positions", "with_sizes", "total",
           "part_shapes", "size_sum", "complete", "detector_sums", "lam_errors",
           "refit_errors", "response_scores", "grid_errors"]


@dataclass
class Sample:
    """One annotated training image with its ``(v, 2)`` landmarks.

    ``grey`` (float32) is None until the image is read from ``path`` (:meth:`image`), and
    ``points`` None until they are read from ``pts_path`` (:meth:`with_points`): on a
    cluster the workers read both, and only the file names travel.

    Attributes
    ----------
    name : str
    grey : (H, W) float32 array or None
    points : (v, 2) array or None
    path : pathlib.Path or None
    index : int or None
        The image's position among the training images (keys its random draws).
    size : (int, int) or None
        ``(H, W)``, known once the image was read once.
    pts_path : pathlib.Path or None
        The landmarks' ``.pts`` file, read by :meth:`with_points` when ``points`` is None.
    """

    name: str
    grey: np.ndarray | None
    points: np.ndarray | None
    path: Path | None = None
    index: int | None = None
    size: tuple | None = None
    pts_path: Path | None = None

    def __post_init__(self):
        if self.grey is not None and self.size is None:
            self.size = tuple(int(n) for n in self.grey.shape[:2])

    def image(self):
        """The grey image, read from :attr:`path` when not held (errors name the file)."""
        if self.grey is not None:
            return self.grey
        from .io import read_image, to_grey
        from .model import check_image_size

        grey = to_grey(read_image(self.path))
        check_image_size(grey, str(self.path))
        return grey

    def with_points(self):
        """This sample with its landmarks held (read from :attr:`pts_path` when not)."""
        if self.points is not None:
            return self
        from .io import read_pts

        return replace(self, points=np.asarray(read_pts(self.pts_path), float))

    def loaded(self):
        """This sample with its image and its landmarks held."""
        smp = self.with_points()
        return smp if smp.grey is not None else replace(smp, grey=smp.image(), size=None)


def indexed(samples):
    """``samples`` with :attr:`Sample.index` set to their position where it is None (a
    :class:`~napari_gsm.listing.Listing` is indexed already)."""
    if not isinstance(samples, list):
        return samples
    return [s if s.index is not None else replace(s, index=i) for i, s in enumerate(samples)]


def pick(samples, idx):
    """The samples at positions ``idx``: a list's items, or a
    :class:`~napari_gsm.listing.Listing`'s compact subset (never every image's ``Sample``)."""
    if isinstance(samples, list):
        return [samples[int(k)] for k in idx]
    return samples[np.asarray(idx, int)]


def positions(part):
    """The positions among the training images of a part's samples, ``(n,)`` int."""
    if isinstance(part, list):
        return np.array([s.index for s in part], int)
    return part.index


def with_sizes(samples, sizes):
    """``samples`` knowing their images' ``(H, W)`` (``sizes``, ``(N, 2)``)."""
    if isinstance(samples, list):
        return [s if s.size is not None else replace(s, size=tuple(int(x) for x in hw))
                for s, hw in zip(samples, sizes)]
    return samples.with_sizes(sizes)


def total(runner, handles, func, *args):
    """``func(h, *args)`` of every part's handle ``h``, where ``runner`` runs the parts,
    added here (tuples elementwise)."""
    out = None
    for r in runner.results(runner.map(func, [(h, *args) for h in handles])):
        out = r if out is None else (tuple(a + b for a, b in zip(out, r))
                                     if isinstance(r, tuple) else out + r)
    return out


def image_rng(seed, index, *stage):
    """The random generator of training image ``index`` (and ``stage``), whatever part it is
    in: draws do not depend on the other images or on their order."""
    return np.random.default_rng([int(seed), int(index), *(int(s) for s in stage)])


class InProcess:
    """Runs the parts here, one after the other; the handles are the results themselves.

    The runner interface training uses (:class:`napari_gsm.distributed.OnCluster` is the
    other): ``parts(samples)`` splits a list, ``put(obj)`` makes an object available to
    the jobs (a model: without the detectors' statistics unless ``sums``; in this process
the object itself), ``map(func, jobs, what)`` runs ``func(*job)`` for every job and returns
    handles to the results (``what`` names the stage for ``progress(done, total, what)``,
    ``done`` counts what was done before, ``items`` how many images the jobs cover),
    ``results(handles)`` yields the results in order, ``close()`` releases what was put.
    """

    def __init__(self, progress=None):
        self.progress = progress

    def parts(self, samples):
        return [samples] if len(samples) else []

    def put(self, obj, sums=False):
        return obj

    def map(self, func, jobs, what=None, total=None, done=0, items=None):

        def tick():
            nonlocal done
            done += 1
            if self.progress is not None and what is not None:
                self.progress(done, total, what)

        if what is None:  # steps that report no progress take no ``tick``
            return [func(*job) for job in jobs]
        return [func(*job, tick=tick) for job in jobs]

    def results(self, handles):
        return iter(handles)

    def close(self):
        pass


def _tick(tick):
    if tick is not None:
        tick()


# -- the landmarks ----------------------------------------------------------------------

def part_shapes(part):
    """The landmarks of a part's samples, ``(n, v, 2)`` (read where the part runs): the
    handle the shape and start models' sums are taken from."""
    return np.stack([s.with_points().points for s in part])


def size_sum(shapes):
    """Sum of the shapes' :func:`~napari_gsm.geometry.shape_size`."""
    return float(sum(shape_size(p) for p in shapes))


def complete(part):
    """Per sample of the part, whether all its landmarks are there, ``(n,)`` bool."""
    return np.array([np.isfinite(s.with_points().points).all() for s in part], bool)


# -- the detectors' statistics ---------------------------------------------------------

def accumulate(model, pyramid, points, rng):
    """Add the aligned training patches of one image (plus jittered copies) to the detectors."""
    sm, s0 = model.shape.sm, model.shape.s0
    theta = pose_from_shape(points, s0, sm)
    poses = [theta]
    if model.train_params.jitter:
        centres = to_base_mesh(points, theta, sm)
        c = np.nanmean(centres, 0)
    for _ in range(model.train_params.jitter):
        # The same landmarks seen at a slightly wrong rotation and scale of the pose, so
        # the detectors also answer when the pose is a little off during fitting.
        ang, k = rng.normal(0, 0.08), np.exp(rng.normal(0, 0.06))
        R = k * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        poses.append(pose_from_similarity(*similarity_fit(points, (centres - c) @ R.T + c), sm))
    ok = np.isfinite(points).all(1)
    pts = np.where(ok[:, None], points, 0.0)
    for th in poses:
        patches = frame_patches(pyramid, pts, th, sm, model.shape.frame_shape, model.features)
        if not ok.all():
            # A missing landmark contributes no patch: feed zeros (no energy, no target).
            patches[~ok] = 0
        model.detectors.accumulate(patches)


def empty_detectors(model):
    """Detectors with no statistics yet, laid out for ``model``'s landmarks and features."""
    spec, tp = model.features, model.train_params
    return Detectors.empty(model.n_landmarks, spec.patch, spec.channels,
                           sigmas=tp.sigmas_px(), stride=spec.stride, reg=tp.reg)


@dataclass
class DetectorSums:
    """What :func:`detector_sums` returns for a part."""

    S: np.ndarray
    b: np.ndarray
    n: int
    sizes: np.ndarray  # (n, 2) int: (H, W) per image
    face_boxes: np.ndarray  # (n, 4): the face detector's box matching each image (NaN: none)


def detector_sums(part, model, face_detector=False, tick=None):
    """The detectors' statistics of a part's images, their sizes and (with
    ``face_detector``) the detected face box that matches each shape.

    ``model`` needs its shape model, features and training parameters (its detectors are
    not used: the sums start from zero).
    """
    acc = copy.copy(model)
    acc.detectors = empty_detectors(model)
    fd = FaceDetector() if face_detector else None
    sizes, boxes = [], []
    for smp in part:
        smp = smp.with_points()
        grey = smp.image()
        accumulate(acc, Pyramid(grey), smp.points, image_rng(model.train_params.seed, smp.index))
        sizes.append(tuple(int(n) for n in grey.shape[:2]))
        boxes.append(_matching_face(fd.detect(grey), smp.points) if fd is not None
                     else np.full(4, np.nan))
        _tick(tick)
    det = acc.detectors
    return DetectorSums(det.S, det.b, det.n, np.array(sizes, np.int32).reshape(-1, 2),
                        np.array(boxes, float).reshape(-1, 4))


def add_sums(det, sums):
    """Add a part's :class:`DetectorSums` to ``det`` (filters are not re-solved)."""
    det.S += sums.S
    det.b += sums.b
    det.n += sums.n


def _matching_face(boxes, points):
    """The detected box that contains the shape's centroid (largest first), or NaNs."""
    c = np.nanmean(points, 0)
    for b in boxes:
        if b[0] <= c[0] <= b[2] and b[1] <= c[1] <= b[3]:
            return b
    return np.full(4, np.nan)


# -- fits of held-out images -----------------------------------------------------------

def lam_errors(part, model, starts, grid, tick=None):
    """Per image of the part, the error of a GSM fit from its start under every ``lam``
    of ``grid``, in shape sizes: ``(n, len(grid))`` (:func:`~napari_gsm.model.choose_lam`)."""
    from .methods.gsm import fit_gsm

    out = np.empty((len(part), len(grid)))
    for i, (smp, start) in enumerate(zip(part, starts)):
        smp = smp.with_points()
        pyramid = Pyramid(smp.image())
        for j, lam in enumerate(grid):
            params = replace(model.gsm_params, lam=lam)
            fitted = fit_gsm(model, pyramid, start, params=params, history=False).points
            out[i, j] = (np.nanmean(np.linalg.norm(fitted - smp.points, axis=1))
                         / shape_size(smp.points))
        _tick(tick)
    return out


def refit_errors(part, model, pins, grid, tick=None):
    """Per pinned re-fit case of the part's images, the error of the other landmarks under
    every ``refit_scale`` of ``grid``, in shape sizes: ``(cases, len(grid))``.

    ``pins[i]`` lists the landmarks pinned, one at a time, on image ``i``
    (:func:`~napari_gsm.refit.choose_refit_scale`).
    """
    from .methods.gsm import fit_gsm

    v = model.n_landmarks
    rows = []
    for smp, ks in zip(part, pins):
        smp = smp.with_points()
        grey = smp.image()
        ok = np.isfinite(smp.points).all(1)
        pyramid = Pyramid(grey)
        start, _ = model.start(grey)
        first = fit_gsm(model, pyramid, start, history=False).points
        for k in ks:
            pts = first.copy()
            pts[k] = smp.points[k]
            pin, others = np.arange(v) == k, ok & (np.arange(v) != k)
            rows.append([np.linalg.norm(
                fit_gsm(model, pyramid, pts, pinned=pin,
                        params=replace(model.gsm_params, refit_scale=scale),
                        history=False).points[others] - smp.points[others], axis=1).mean()
                / shape_size(smp.points) for scale in grid])
        _tick(tick)
    return np.asarray(rows, float).reshape(-1, len(grid))


def response_scores(part, model, tick=None):
    """:func:`~napari_gsm.quality.response_score` of each image at its true landmarks."""
    from .quality import response_score

    out = []
    for smp in map(Sample.with_points, part):
        out.append(response_score(model, smp.image(), smp.points))
        _tick(tick)
    return out


def gather_rows(runner, handles):
    """The parts' results, in order, stacked into one array (rows of all parts)."""
    rows = list(runner.results(handles))
    return np.concatenate([np.asarray(r, float) for r in rows]) if rows else np.zeros(0)


def grid_errors(runner, step, model, held, per_image, grid, what):
    """The mean over all rows of ``step(part, model, per_image_of_part, grid)`` (one of
    :func:`lam_errors`, :func:`refit_errors`), run on parts of the held-out samples:
    the mean error of every setting of ``grid``, ``(len(grid),)``."""
    runner = runner or InProcess()
    handle = runner.put(model)
    parts = runner.parts(list(zip(held, per_image)))
    return gather_rows(runner, runner.map(
        step, [([s for s, _ in p], handle, [x for _, x in p], grid) for p in parts],
        what, len(held))).mean(0)
