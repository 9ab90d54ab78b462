"""The training images of dataset folders as a few compact arrays: :class:`Listing`.

Training on a cluster (:func:`napari_gsm.model.train` with ``client=``) reads neither the
images nor their landmarks in the calling process: the workers read both, and everything
training learns from them comes back as sums (:mod:`napari_gsm.training`). What the caller
keeps per image is then only what names it -- its file names, as bytes in NumPy arrays --
and, once the workers have read it, the image's size: tens of bytes per image, where a
:class:`~napari_gsm.training.Sample` with its landmarks and paths is a few kilobytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .io import scan_annotated
from .training import Sample

__all__ = ["Listing"]


class Listing:
    """Annotated training images by file name, without their pixels.

    A sequence of :class:`~napari_gsm.training.Sample` made on demand, with ``grey`` None
    (:meth:`~napari_gsm.training.Sample.image` reads it where the work runs) and, unless
    the listing holds ``points``, ``points`` None as well
    (:meth:`~napari_gsm.training.Sample.with_points` reads the ``.pts`` file). Indexing
    with a slice or an array of positions gives a :class:`Listing` of those images, which
    is what travels to a cluster's workers as a part.

    Parameters
    ----------
    folders : list of pathlib.Path
        The dataset folders, as given (samples are named by them).
    folder : (N,) int array
        Each image's folder, an index into ``folders``.
    images, pts : (N,) bytes arrays
        Each image's and its ``.pts`` file's name in its folder (``os.fsencode``; empty:
        none).
    index : (N,) int array, optional
        Each image's position among the training images (default ``0..N-1``).
    sizes : (N, 2) int array, optional
        Each image's ``(H, W)``, once known (:meth:`with_sizes`).
    landmark_names : list of str, optional
    points : (N, v, 2) array, optional
        The landmarks, when they are not (only) in the ``.pts`` files
        (:meth:`from_datasets`).
    """

    def __init__(self, folders, folder, images, pts, index=None, sizes=None,
                 landmark_names=None, points=None):
        self.landmark_names = landmark_names
        self.folders = list(folders)
        self.folder = np.asarray(folder, np.int32)
        self.images = np.asarray(images, bytes)
        self.pts = np.asarray(pts, bytes)
        self.index = np.arange(len(self.images)) if index is None else np.asarray(index, int)
        self.sizes = sizes
        self.points = points
        self._absolute = [Path(f).absolute() for f in self.folders]

    @classmethod
    def from_folders(cls, folders, *, names=None):
        """The annotated images of dataset folders: each ``.pts`` is read and checked
        (:func:`~napari_gsm.io.scan_annotated`), and not kept.

        Raises
        ------
        ValueError
            When two folders' landmark counts differ (the message names both).
        """
        return cls._join([(Path(f), *scan_annotated(f, names=names)) for f in folders])

    @classmethod
    def from_datasets(cls, datasets):
        """The annotated images of :class:`~napari_gsm.io.Dataset` objects, with their
        landmarks as the datasets hold them (which may not be saved yet)."""
        entries, points = [], []
        for ds in datasets:
            items = ds.annotated
            entries.append((ds.root, ds.landmark_names, ds.n_landmarks,
                            np.array([os.fsencode(it.image_path.name) for it in items], bytes),
                            np.array([os.fsencode(it.pts_path.name) if it.pts_path else b""
                                      for it in items], bytes)))
            points += [np.asarray(it.points, float) for it in items]
        out = cls._join(entries)
        out.points = np.stack(points) if points else None
        return out

    @classmethod
    def _join(cls, entries):
        """One listing of ``(folder, landmark names, count, images, pts)`` entries."""
        landmark_names, v, first = None, None, None
        for folder, names_f, v_f, images, _ in entries:
            landmark_names = landmark_names or names_f
            if v_f is not None and len(images):
                if v is not None and v_f != v:
                    raise ValueError(f"{folder}: {v_f} landmarks per image, but {first} has {v}")
                v, first = v_f, folder
        folder = np.concatenate([np.zeros(0, np.int32)] + [
            np.full(len(e[3]), f, np.int32) for f, e in enumerate(entries)])
        images = np.concatenate([np.zeros(0, bytes)] + [e[3] for e in entries])
        pts = np.concatenate([np.zeros(0, bytes)] + [e[4] for e in entries])
        return cls([e[0] for e in entries], folder, images, pts,
                   landmark_names=landmark_names)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, k):
        if isinstance(k, (slice, np.ndarray, list)):
            return Listing(self.folders, self.folder[k], self.images[k], self.pts[k],
                           self.index[k], None if self.sizes is None else self.sizes[k],
                           self.landmark_names, None if self.points is None else self.points[k])
        k = int(k)
        folder, image = self.folders[self.folder[k]], os.fsdecode(self.images[k])
        absolute = self._absolute[self.folder[k]]
        return Sample(str(folder / image), None,
                      None if self.points is None else self.points[k].copy(),
                      path=absolute / image, index=int(self.index[k]),
                      size=None if self.sizes is None else tuple(int(n) for n in self.sizes[k]),
                      pts_path=absolute / os.fsdecode(self.pts[k]) if self.pts[k] else None)

    def __iter__(self):
        return (self[k] for k in range(len(self)))

    def with_sizes(self, sizes):
        """This listing with the images' ``(H, W)`` sizes ``(N, 2)`` known."""
        return Listing(self.folders, self.folder, self.images, self.pts, self.index,
                       np.asarray(sizes), self.landmark_names, self.points)

    def counts(self):
        """How many annotated images each folder has, ``(len(folders),)``."""
        return np.bincount(self.folder, minlength=len(self.folders))

    @property
    def nbytes(self):
        """The bytes of the listing's arrays (every image's; the folders' names aside)."""
        return sum(a.nbytes for a in (self.folder, self.images, self.pts, self.index,
                                      self.sizes, self.points) if a is not None)
