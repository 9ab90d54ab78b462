"""The annotation project's state, free of Qt and napari (unit-testable on its own).

A project is a dataset folder (images + same-stem ``.pts``) plus a hidden sidecar folder::

    project/
        landmarks.txt            optional landmark names
        img01.jpg  img01.pts     annotated (accepted)
        img02.jpg                not yet
        .napari-gsm/
            model.npz            the model, replaced atomically after training / accepting
            drafts/img02.pts     unsaved edits of img02 (missing landmarks as ``-1 -1``)
            drafts/img02.json    their per-landmark states and the last fit's confidence

Every edit of an image's landmarks goes through :class:`ImageState` (one undo step each)
and is autosaved as a draft, so a crash or switching images loses nothing; accepting an
image writes its ``.pts`` (atomic, numbered backup of the previous version) and removes
the draft.

Broken files are never silently passed over: a ``.pts`` that cannot be read (malformed, wrong
landmark count) is listed in :attr:`Project.problems` with the reason, its image is not offered
for fitting, and accepting that image refuses to replace the file unless asked to (the old
file is then kept as a numbered backup). An image that cannot be decoded never becomes the
current image: :meth:`Project.go` reads it first.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..io import (Dataset, DatasetItem, TpsSpecimen, atomic_write_text, load_dataset, read_image,
                  read_pts, write_pts, write_tps)
from ..io.errors import ImageFileError, LandmarkFileError
from .image_state import CHECKED, FITTED, MISSING, PINNED, STATES, FitConfidence, ImageState

__all__ = ["Project", "ImageState", "FITTED", "CHECKED", "PINNED", "MISSING", "STATES"]


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
    problems : dict of str to str
        Stem -> what is wrong with that image's files: an unreadable ``.pts`` (found when
        the folder is opened) or an image that cannot be decoded (found when it is read).
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
        self.problems: dict[str, str] = {}
        self._broken_pts: set[str] = set()
        for err in self.dataset.problems:
            stem = Path(err.path).stem
            self.problems[stem] = f"{Path(err.path).name}" + (
                f", line {err.line}" if err.line else "") + f": {err.reason}"
            self._broken_pts.add(stem)
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

    def problem(self, i):
        """What is wrong with image ``i``'s files (see :attr:`problems`), or None."""
        return self.problems.get(self.items[i].stem)

    def pts_unreadable(self, i):
        """True when image ``i`` has a ``.pts`` that could not be read (left untouched)."""
        return self.items[i].stem in self._broken_pts

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

    def fit_confidence(self, i):
        """Image ``i``'s unchecked fit's confidence: ``(predicted NME or None, failed)``.

        None and False when the image has no fit whose landmarks are still as fitted, or
        the model gave no confidence.
        """
        it = self.items[i]
        if it.stem not in self._states and not self.draft_paths(it.stem)[0].exists():
            return None, False
        st = self.state(i)
        nme = st.predicted_nme
        return nme, nme is not None and st.confidence.failed

    def image(self, i=None):
        """The image array of item ``i`` (default: current); the last one is cached.

        Raises
        ------
        ImageFileError
            If the file cannot be read; the reason is also kept in :attr:`problems`.
        """
        it = self.items[self.index if i is None else i]
        if self._image_cache is None or self._image_cache[0] != it.stem:
            try:
                image = read_image(it.image_path)
            except ImageFileError as exc:
                self.problems[it.stem] = f"{it.image_path.name}: {exc.reason}"
                raise
            self._image_cache = (it.stem, image)
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
                st.confidence = FitConfidence.from_json(meta.get("confidence") or {}, v)
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
        meta = {"states": [str(s) for s in st.states], "current": st.current,
                "confidence": None if st.confidence is None else st.confidence.to_json()}
        atomic_write_text(json_path, json.dumps(meta) + "\n", backup=False)
        write_pts(pts_path, st.points, backup=False, missing="negative")
        return pts_path

    # -- navigation --------------------------------------------------------------------
    def go(self, i):
        """Make image ``i`` current (the previous one's edits stay, autosaved).

        The image is read first: if it cannot be decoded, the current image does not change
        (and :class:`~napari_gsm.io.ImageFileError` says why), so edits never go to an image
        that is not shown.
        """
        if not 0 <= i < len(self):
            raise IndexError(f"image {i} out of range 0..{len(self) - 1}")
        self.image(i)
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
        """Indices of unannotated images nobody has placed or fitted anything on yet.

        Images with a problem (an unreadable ``.pts`` or image) are left for a person.
        """
        out = []
        for i, it in enumerate(self.items):
            if it.points is None and it.stem not in self.problems \
                    and not self.state(i).placed.any():
                out.append(i)
        return out

    # -- accept, training data, export -------------------------------------------------
    def accept(self, i=None, *, replace_broken=False):
        """Write image ``i``'s landmarks to its ``.pts`` (atomic; old file kept as backup).

        An existing ``.pts`` that could not be read is replaced only with
        ``replace_broken=True`` (it is then kept as the numbered backup).

        Returns
        -------
        path : pathlib.Path
        was_new : bool
            True when the image had no annotation before (so a model update adds data).

        Raises
        ------
        ValueError
            If some landmarks are missing (named in the message), or the existing ``.pts``
            is unreadable and ``replace_broken`` is False.
        """
        i = self.index if i is None else i
        it, st = self.items[i], self.state(i)
        if it.stem in self._broken_pts and not replace_broken:
            raise ValueError(f"{self.problems[it.stem]}. That file is left as it is: fix or "
                             "remove it, or accept again and confirm replacing it (the old "
                             "file is kept as a backup)")
        if not st.complete:
            missing = [self.names[k] for k in np.flatnonzero(~st.placed)]
            raise ValueError(f"{it.stem}: place every landmark before accepting; missing: "
                             + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
        was_new = it.points is None
        path = write_pts(it.default_pts_path, st.points, backup=True)
        self._broken_pts.discard(it.stem)
        self.problems.pop(it.stem, None)
        it.pts_path = Path(path)
        it.points = st.points.copy()
        st.saved = st.points.copy()
        st.states = np.full(st.n_landmarks, CHECKED, object)
        st.version += 1
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
