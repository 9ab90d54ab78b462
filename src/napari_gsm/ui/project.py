"""The annotation project's state, free of Qt and napari (unit-testable on its own).

A project is a dataset folder (images + same-stem ``.pts``) plus a hidden sidecar folder::

    project/
        landmarks.txt            optional landmark names
        img01.jpg  img01.pts     annotated (accepted)
        img02.jpg                not yet
        .napari-gsm/
            model.npz            the model, replaced atomically after training / accepting
            drafts/img02.pts     unsaved edits of img02 (missing landmarks as ``-1 -1``)
            drafts/img02.json    their per-landmark states

Every edit of an image's landmarks goes through :class:`ImageState` (one undo step each)
and is autosaved as a draft, so a crash or switching images loses nothing; accepting an
image writes its ``.pts`` (atomic, numbered backup of the previous version) and removes
the draft.

Per-landmark states: ``'fitted'`` (placed by the model, free in a re-fit), ``'pinned'``
(placed or moved by a person since the image was opened; held exactly in a re-fit) and
``'checked'`` (read from an accepted ``.pts``; also held). A missing landmark is a NaN row
with state ``''``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import (Dataset, DatasetItem, TpsSpecimen, atomic_write_text, load_dataset, read_image,
                  read_pts, write_pts, write_tps)
from ..io.errors import LandmarkFileError

__all__ = ["Project", "ImageState", "FITTED", "CHECKED", "PINNED", "MISSING", "STATES"]

FITTED, CHECKED, PINNED, MISSING = "fitted", "checked", "pinned", ""
STATES = (FITTED, CHECKED, PINNED)

#: Undo steps kept per image.
MAX_UNDO = 200

#: Two positions closer than this (pixels) are the same: a point that did not move.
_SAME = 1e-9


def _same_points(a, b):
    """Equal including NaN positions (within ``_SAME``)."""
    if a.shape != b.shape:
        return False
    na, nb = np.isnan(a), np.isnan(b)
    if not np.array_equal(na, nb):
        return False
    return bool(np.all(np.abs(a[~na] - b[~nb]) <= _SAME))


@dataclass
class ImageState:
    """Landmarks of one image while it is being edited.

    Attributes
    ----------
    stem : str
    points : (v, 2) ndarray
        0-based ``(x, y)``; NaN rows are missing landmarks.
    states : (v,) ndarray of str
        ``'fitted'``, ``'checked'``, ``'pinned'`` or ``''`` (missing).
    saved : (v, 2) ndarray or None
        What the accepted ``.pts`` holds (None when the image is not annotated).
    current : int or None
        The landmark the next placed point becomes (guided placement); None when all are
        placed and no landmark was chosen.
    """

    stem: str
    points: np.ndarray
    states: np.ndarray
    saved: np.ndarray | None = None
    current: int | None = 0
    _undo: list = field(default_factory=list, repr=False)
    _redo: list = field(default_factory=list, repr=False)

    @classmethod
    def empty(cls, stem, n_landmarks):
        return cls(stem, np.full((n_landmarks, 2), np.nan), np.full(n_landmarks, MISSING, object))

    @classmethod
    def from_saved(cls, stem, points):
        points = np.array(points, float)
        ok = np.isfinite(points).all(1)
        states = np.where(ok, CHECKED, MISSING).astype(object)
        st = cls(stem, points.copy(), states, saved=points.copy())
        st.current = st.next_missing(-1)
        return st

    # -- queries -----------------------------------------------------------------------
    @property
    def n_landmarks(self):
        return len(self.points)

    @property
    def placed(self):
        """``(v,)`` bool: landmarks with a position."""
        return np.isfinite(self.points).all(1)

    @property
    def complete(self):
        return bool(self.placed.all())

    @property
    def dirty(self):
        """True when the points differ from the accepted file (or there is none and some exist)."""
        if self.saved is None:
            return bool(self.placed.any())
        return not _same_points(self.points, self.saved)

    @property
    def pinned(self):
        """``(v,)`` bool: landmarks a re-fit must hold (pinned or checked, and placed)."""
        return self.placed & np.isin(self.states, [PINNED, CHECKED])

    @property
    def can_undo(self):
        return bool(self._undo)

    @property
    def can_redo(self):
        return bool(self._redo)

    def next_missing(self, after):
        """First missing landmark after index ``after`` (cyclic), or None if all are placed."""
        v = self.n_landmarks
        for d in range(1, v + 1):
            k = (after + d) % v
            if not self.placed[k]:
                return k
        return None

    # -- edits (each one undo step) ----------------------------------------------------
    def _push(self):
        self._undo.append((self.points.copy(), self.states.copy(), self.current))
        del self._undo[:-MAX_UNDO]
        self._redo.clear()

    def _commit(self, points, states):
        """Record an edit if it changes anything; returns whether it did."""
        if _same_points(points, self.points) and np.array_equal(states, self.states):
            return False
        self._push()
        self.points, self.states = points, states
        return True

    def set_point(self, k, xy, state=PINNED):
        """Place or move landmark ``k`` to ``xy`` (a person's edit: pinned by default)."""
        pts, sts = self.points.copy(), self.states.copy()
        pts[k] = np.asarray(xy, float)
        sts[k] = state
        changed = self._commit(pts, sts)
        if changed and k == self.current:
            self.current = self.next_missing(k)
        return changed

    def remove_point(self, k):
        pts, sts = self.points.copy(), self.states.copy()
        pts[k] = np.nan
        sts[k] = MISSING
        return self._commit(pts, sts)

    def set_fit(self, points, keep=None):
        """Take a fit result ``(v, 2)``; landmarks in ``keep`` (bool mask) keep their state.

        The others become ``'fitted'``.
        """
        points = np.array(points, float)
        if points.shape != self.points.shape:
            raise ValueError(f"expected {self.points.shape} points, got {points.shape}")
        keep = np.zeros(self.n_landmarks, bool) if keep is None else np.asarray(keep, bool)
        sts = np.where(keep, self.states, FITTED).astype(object)
        sts[~np.isfinite(points).all(1)] = MISSING
        changed = self._commit(points, sts)
        self.current = self.next_missing(-1)
        return changed

    def toggle_pin(self, ks):
        """Pin the given landmarks, or unpin them (-> 'fitted') if all are pinned already."""
        ks = [k for k in np.atleast_1d(ks).astype(int) if self.placed[k]]
        if not ks:
            return False
        sts = self.states.copy()
        new = FITTED if all(sts[k] in (PINNED, CHECKED) for k in ks) else PINNED
        sts[ks] = new
        return self._commit(self.points.copy(), sts)

    def apply_layer(self, indices, xy):
        """Take the content of a Points layer after a person edited it.

        Parameters
        ----------
        indices : (n,) int array
            Landmark index of each layer point; ``-1`` for a point just added, which
            becomes the current target landmark (then the next missing one, ...).
        xy : (n, 2) array
            The layer's points in core ``(x, y)``.

        Returns
        -------
        bool
            Whether anything changed (one undo step). Added and moved landmarks are
            pinned; landmarks absent from the layer are removed. A new point with no
            landmark left to place is dropped.
        """
        indices = np.asarray(indices, int).ravel()
        xy = np.asarray(xy, float).reshape(-1, 2)
        if len(indices) != len(xy):
            raise ValueError("one landmark index per layer point is needed")
        old, pts = self.points, np.full_like(self.points, np.nan)
        sts = np.full(self.n_landmarks, MISSING, object)
        for k, p in zip(indices, xy):
            if 0 <= k < self.n_landmarks:
                pts[k] = p
                sts[k] = self.states[k] if self.states[k] else PINNED
                if not np.all(np.abs(p - old[k]) <= _SAME):  # moved (or new: old is NaN)
                    sts[k] = PINNED
        target = self.current
        placed_any = False
        for p in xy[indices < 0]:
            if target is None:
                break
            pts[target], sts[target] = p, PINNED
            placed_any = True
            free = ~np.isfinite(pts).all(1)
            target = next((int(k) for k in np.roll(np.arange(self.n_landmarks), -target - 1)
                           if free[k]), None)
        changed = self._commit(pts, sts)
        if placed_any:
            self.current = target
        return changed

    def undo(self):
        """Revert the last edit; returns False when there is none."""
        return self._restore(self._undo, self._redo)

    def redo(self):
        """Re-apply the last undone edit; returns False when there is none."""
        return self._restore(self._redo, self._undo)

    def _restore(self, source, other):
        """Pop a snapshot from ``source``, pushing the current one onto ``other``."""
        if not source:
            return False
        other.append((self.points.copy(), self.states.copy(), self.current))
        self.points, self.states, self.current = source.pop()
        return True

    def step_target(self, delta):
        """Move the guided-placement target by ``delta`` landmarks (skip / back)."""
        start = self.current if self.current is not None else (-1 if delta > 0 else 0)
        self.current = (start + delta) % self.n_landmarks
        return self.current


class Project:
    """A dataset folder being annotated.

    Parameters
    ----------
    root : str or os.PathLike
        Folder of images and ``.pts`` files (see :func:`napari_gsm.io.load_dataset`).
    n_landmarks : int, optional
        Only needed when the folder has neither ``landmarks.txt`` nor any ``.pts``.

    Attributes
    ----------
    dataset : Dataset
    names : list of str
        Landmark names: ``landmarks.txt``, else ``'1'..'v'``.
    index : int
        The image being edited.
    """

    STATE_DIR = ".napari-gsm"

    def __init__(self, root, n_landmarks=None):
        self.root = Path(root)
        self.dataset = load_dataset(self.root, strict=False)
        if not self.dataset.items:
            raise ValueError(f"no images in {self.root}")
        names = self.dataset.landmark_names
        v = self.dataset.n_landmarks or n_landmarks
        if v is None:
            raise ValueError(f"{self.root} has no {'landmarks.txt'} and no .pts file: "
                             "the number of landmarks is unknown")
        self.names = list(names) if names is not None else [str(i + 1) for i in range(v)]
        self.index = 0
        self._states: dict[str, ImageState] = {}
        self._image_cache: tuple[str, np.ndarray] | None = None

    # -- paths -------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.root / self.STATE_DIR

    @property
    def drafts_dir(self) -> Path:
        return self.state_dir / "drafts"

    @property
    def model_path(self) -> Path:
        return self.state_dir / "model.npz"

    def draft_paths(self, stem):
        return self.drafts_dir / f"{stem}.pts", self.drafts_dir / f"{stem}.json"

    # -- images ------------------------------------------------------------------------
    @property
    def n_landmarks(self):
        return len(self.names)

    @property
    def items(self) -> list[DatasetItem]:
        return self.dataset.items

    @property
    def stems(self):
        return [it.stem for it in self.items]

    def __len__(self):
        return len(self.items)

    @property
    def item(self) -> DatasetItem:
        return self.items[self.index]

    def is_annotated(self, i):
        return self.items[i].points is not None

    @property
    def n_annotated(self):
        return sum(it.points is not None for it in self.items)

    def status(self, i):
        """``'annotated'``, ``'edited'`` (unsaved changes), ``'fitted'`` (only fitted) or ``''``."""
        it = self.items[i]
        st = self._states.get(it.stem)
        if st is None:
            if not self.draft_paths(it.stem)[0].exists():
                return "annotated" if it.points is not None else ""
            st = self.state(i)  # a draft: read it (a few hundred bytes) to tell fitted/edited
        if st.dirty:
            if (st.states[st.placed] == FITTED).all():
                return "fitted"
            return "edited"
        return "annotated" if it.points is not None else ""

    def image(self, i=None):
        """The image array of item ``i`` (default: current); the last one is cached."""
        it = self.items[self.index if i is None else i]
        if self._image_cache is None or self._image_cache[0] != it.stem:
            self._image_cache = (it.stem, read_image(it.image_path))
        return self._image_cache[1]

    # -- per-image state ---------------------------------------------------------------
    def state(self, i=None) -> ImageState:
        """The editing state of image ``i`` (default: current), restored from its draft."""
        it = self.items[self.index if i is None else i]
        st = self._states.get(it.stem)
        if st is None:
            st = self._load_state(it)
            self._states[it.stem] = st
        return st

    def _load_state(self, it):
        v = self.n_landmarks
        if it.points is not None:
            st = ImageState.from_saved(it.stem, it.points)
        else:
            st = ImageState.empty(it.stem, v)
        pts_path, json_path = self.draft_paths(it.stem)
        if pts_path.exists():
            try:
                pts = read_pts(pts_path, missing="negative")
            except LandmarkFileError:
                return st  # an unreadable draft is ignored (the file stays for inspection)
            if pts.shape != (v, 2):
                return st
            ok = np.isfinite(pts).all(1)
            states = np.where(ok, PINNED, MISSING).astype(object)
            current = None
            try:
                meta = json.loads(json_path.read_text(encoding="utf-8"))
                saved_states = np.array(meta["states"], object)
                if saved_states.shape == (v,) and set(saved_states) <= set(STATES) | {MISSING}:
                    states = np.where(ok, saved_states, MISSING).astype(object)
                    states[ok & (states == MISSING)] = PINNED
                current = meta.get("current")
            except (OSError, ValueError, KeyError, TypeError):
                pass
            st.points, st.states = pts, states
            st.current = current if isinstance(current, int) and 0 <= current < v \
                else st.next_missing(-1)
        return st

    def autosave(self, i=None):
        """Write (or remove) the draft of image ``i``: kept exactly while it has unsaved edits.

        Returns the draft path, or None when there is nothing unsaved.
        """
        st = self.state(i)
        pts_path, json_path = self.draft_paths(st.stem)
        if not st.dirty:
            for p in (pts_path, json_path):
                p.unlink(missing_ok=True)
            return None
        self.drafts_dir.mkdir(parents=True, exist_ok=True)
        meta = {"states": [str(s) for s in st.states], "current": st.current}
        atomic_write_text(json_path, json.dumps(meta) + "\n", backup=False)
        write_pts(pts_path, st.points, backup=False, missing="negative")
        return pts_path

    # -- navigation --------------------------------------------------------------------
    def go(self, i):
        """Make image ``i`` current (the previous one's edits stay, autosaved)."""
        if not 0 <= i < len(self):
            raise IndexError(f"image {i} out of range 0..{len(self) - 1}")
        self.autosave()
        self.index = int(i)
        return self.state()

    def step(self, delta):
        """Go ``delta`` images forward or back (clamped at the ends)."""
        return self.go(min(max(self.index + delta, 0), len(self) - 1))

    def next_unannotated(self, after=None):
        """Index of the next image without an accepted ``.pts`` after ``after`` (cyclic), or None."""
        after = self.index if after is None else after
        n = len(self)
        for d in range(1, n + 1):
            i = (after + d) % n
            if not self.is_annotated(i):
                return i
        return None

    def fit_candidates(self):
        """Indices of unannotated images nobody has placed or fitted anything on yet."""
        out = []
        for i, it in enumerate(self.items):
            if it.points is None and not self.state(i).placed.any():
                out.append(i)
        return out

    # -- accept, training data, export -------------------------------------------------
    def accept(self, i=None):
        """Write image ``i``'s landmarks to its ``.pts`` (atomic; old file kept as backup).

        Returns
        -------
        path : pathlib.Path
        was_new : bool
            True when the image had no annotation before (so a model update adds data).

        Raises
        ------
        ValueError
            If some landmarks are missing (named in the message).
        """
        i = self.index if i is None else i
        it, st = self.items[i], self.state(i)
        if not st.complete:
            missing = [self.names[k] for k in np.flatnonzero(~st.placed)]
            raise ValueError(f"{it.stem}: place every landmark before accepting; missing: "
                             + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
        was_new = it.points is None
        path = write_pts(it.default_pts_path, st.points, backup=True)
        it.pts_path = Path(path)
        it.points = st.points.copy()
        st.saved = st.points.copy()
        st.states = np.full(st.n_landmarks, CHECKED, object)
        self.autosave(i)  # removes the draft
        return Path(path), was_new

    def snapshot(self) -> Dataset:
        """A copy of the accepted annotations, safe to train on in another thread."""
        items = [DatasetItem(it.image_path, it.pts_path, it.points.copy())
                 for it in self.items if it.points is not None]
        return Dataset(root=self.root, items=items, landmark_names=list(self.names))

    def export(self, folder, *, tps_name=None):
        """Write every accepted annotation to ``folder``: one ``.pts`` per image and one TPS file.

        Parameters
        ----------
        folder : str or os.PathLike
            Created if needed. Existing files are kept as numbered backups.
        tps_name : str, optional
            Default: ``<project folder name>.tps``.

        Returns
        -------
        list of pathlib.Path
            The written files, the TPS file last.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        done = [it for it in self.items if it.points is not None]
        if not done:
            raise ValueError("no accepted annotations to export")
        written, specimens = [], []
        for it in done:
            written.append(Path(write_pts(folder / f"{it.stem}.pts", it.points, backup=True)))
            height = read_image(it.image_path).shape[0]
            specimens.append(TpsSpecimen(points=it.points.copy(), image=it.image_path.name,
                                         id=it.stem, image_height=int(height)))
        tps = folder / (tps_name or f"{self.root.resolve().name or 'landmarks'}.tps")
        written.append(Path(write_tps(tps, specimens, backup=True)))
        return written

    # -- model file --------------------------------------------------------------------
    def save_model(self, model):
        """Save ``model`` as ``.napari-gsm/model.npz`` (atomic: an interrupted save leaves the
        previous model intact; no numbered backups, since every accept saves)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return model.save(self.model_path, backup=False)

    def load_model(self):
        """The saved model, or None when there is none yet."""
        if not self.model_path.exists():
            return None
        from ..model import load_model

        return load_model(self.model_path)
