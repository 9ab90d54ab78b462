"""Dataset folders: images with optional same-stem ``.pts`` files beside them.

::

    wings/
        landmarks.txt     optional: one landmark name per line, '#' comments
        63002.jpg
        63002.pts
        63003.jpg         not annotated yet
        old.pts           no image: reported in Dataset.orphans

This is also the layout of the 300-W folders. Loading reads only the small ``.pts``
files; images are decoded on demand by :meth:`DatasetItem.load_image`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .errors import LandmarkFileError
from .images import IMAGE_SUFFIXES, read_image, write_image
from .pts import _read_small_text, _split_lines, read_pts, write_pts

__all__ = ["Dataset", "DatasetItem", "load_dataset", "scan_annotated", "read_names", "write_names",
           "NAMES_FILE", "add_to_dataset"]

#: Name of the optional landmark-names sidecar in a dataset folder.
NAMES_FILE = "landmarks.txt"


@dataclass
class DatasetItem:
    """One image of a dataset and its landmarks, if any.

    Attributes
    ----------
    image_path : pathlib.Path
    pts_path : pathlib.Path or None
        The existing ``.pts`` beside the image, or None.
    points : (v, 2) ndarray of float64 or None
        0-based ``(x, y)``; None when not annotated (or, with ``strict=False``, when
        the ``.pts`` could not be read).
    """

    image_path: Path
    pts_path: Path | None = None
    points: np.ndarray | None = None

    @property
    def stem(self) -> str:
        """File name of the image without its suffix; the key of the item."""
        return self.image_path.stem

    @property
    def default_pts_path(self) -> Path:
        """Where this item's ``.pts`` is (or would be written): ``stem.pts`` beside the image."""
        return self.pts_path if self.pts_path is not None else self.image_path.with_suffix(".pts")

    @property
    def annotated(self) -> bool:
        return self.points is not None

    def load_image(self) -> np.ndarray:
        """Read the image (see :func:`read_image`)."""
        return read_image(self.image_path)


@dataclass
class Dataset:
    """A folder of images and landmark files.

    Attributes
    ----------
    root : pathlib.Path
    items : list of DatasetItem
        One per image, sorted by stem.
    landmark_names : list of str or None
    orphans : list of pathlib.Path
        ``.pts`` files without an image of the same stem.
    problems : list of LandmarkFileError
        With ``strict=False``, the ``.pts`` files that were skipped and why.
    """

    root: Path
    items: list[DatasetItem] = field(default_factory=list)
    landmark_names: list[str] | None = None
    orphans: list[Path] = field(default_factory=list)
    problems: list[LandmarkFileError] = field(default_factory=list)

    @property
    def annotated(self) -> list[DatasetItem]:
        """Items with landmarks."""
        return [it for it in self.items if it.points is not None]

    @property
    def unannotated(self) -> list[DatasetItem]:
        """Items without landmarks."""
        return [it for it in self.items if it.points is None]

    @property
    def n_landmarks(self) -> int | None:
        """Landmarks per shape; None when nothing is annotated and no names are known."""
        for it in self.items:
            if it.points is not None:
                return len(it.points)
        return len(self.landmark_names) if self.landmark_names is not None else None

    def item(self, stem: str) -> DatasetItem:
        """Return the item whose image has stem `stem`; KeyError if there is none."""
        for it in self.items:
            if it.stem == stem:
                return it
        raise KeyError(f"no image with stem {stem!r} in {self.root}")

    def __len__(self) -> int:
        return len(self.items)


def parse_names(text: str, path="<string>") -> list[str]:
    """Landmark names from sidecar text: one per line, blank and ``#`` lines skipped."""
    names = []
    for line in _split_lines(text):
        name = line.strip()
        if name and not name.startswith("#"):
            names.append(name)
    if not names:
        raise LandmarkFileError(path, "no landmark names in the file")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise LandmarkFileError(path, f"duplicate landmark names: {dup}")
    return names


def read_names(path) -> list[str]:
    """Read a landmark names sidecar file (see :func:`parse_names`)."""
    return parse_names(_read_small_text(path), path)


def write_names(folder, names: Sequence[str], *, backup: bool = True) -> Path:
    """Write `names` to ``folder/landmarks.txt`` atomically.

    Parameters
    ----------
    folder : str or os.PathLike
    names : sequence of str
        Non-empty, unique, no line breaks, no leading ``#`` or edge spaces (so they
        read back unchanged).
    backup : bool, optional

    Returns
    -------
    pathlib.Path
        The written file.
    """
    names = [str(n) for n in names]
    if not names:
        raise ValueError("names must not be empty")
    for n in names:
        if not n or n != n.strip() or "\n" in n or "\r" in n or n.startswith("#"):
            raise ValueError(f"landmark name {n!r} would not read back unchanged")
    if len(set(names)) != len(names):
        raise ValueError("landmark names must be unique")
    return atomic_write_text(Path(folder) / NAMES_FILE, "\n".join(names) + "\n", backup=backup)


def load_dataset(folder, *, names=None, strict: bool = True) -> Dataset:
    """Index a dataset folder and read its ``.pts`` files.

    Parameters
    ----------
    folder : str or os.PathLike
        Folder of images (``IMAGE_SUFFIXES``, any case) with optional same-stem ``.pts``
        files. Not recursive; hidden files are ignored.
    names : str, os.PathLike or sequence of str, optional
        Landmark names, or a file of them. Default: ``folder/landmarks.txt`` if present.
    strict : bool, optional
        If True, an unreadable ``.pts`` or a point-count mismatch raises. If False, the
        item is kept as not annotated and the error goes to ``Dataset.problems``.

    Returns
    -------
    Dataset

    Raises
    ------
    LandmarkFileError
        Malformed ``.pts`` or names file; a ``.pts`` whose point count differs from the
        names or the first annotated file (the message names the file and the expected
        count); two images with the same stem.
    FileNotFoundError, NotADirectoryError
        If `folder` is not a folder.
    """
    root = _folder(folder)
    images, pts_files = _scan(root)
    landmark_names, expected, expected_from = _names(root, names)
    problems: list[LandmarkFileError] = []
    items = []
    for stem in sorted(images):
        item = DatasetItem(image_path=root / images[stem])
        if stem in pts_files:
            item.pts_path = root / pts_files[stem]
            try:
                item.points = read_pts(item.pts_path)
                expected, expected_from = _check_count(item.pts_path, item.points, expected,
                                                       expected_from)
            except LandmarkFileError as e:
                item.points = None
                if strict:
                    raise
                problems.append(e)
        items.append(item)

    orphans = sorted(root / name for stem, name in pts_files.items() if stem not in images)
    return Dataset(root=root, items=items, landmark_names=landmark_names, orphans=orphans, problems=problems)


def scan_annotated(folder, *, names=None):
    """The annotated images of a dataset folder, checked as :func:`load_dataset` checks
    them (``strict``), without keeping their landmarks: for a training that reads them
    where it runs, and keeps only file names here.

    Returns
    -------
    landmark_names : list of str or None
    n_landmarks : int or None
        None when nothing is annotated.
    images, pts : (n,) arrays of bytes
        The annotated images' and their ``.pts`` files' names (``os.fsencode``), sorted by
        stem.

    Raises
    ------
    LandmarkFileError, FileNotFoundError, NotADirectoryError
        As :func:`load_dataset` does.
    """
    root = _folder(folder)
    images, pts_files = _scan(root)
    landmark_names, expected, expected_from = _names(root, names)
    stems = sorted(stem for stem in images if stem in pts_files)
    for stem in stems:
        path = root / pts_files[stem]
        expected, expected_from = _check_count(path, read_pts(path), expected, expected_from)
    return (landmark_names, expected,
            np.array([os.fsencode(images[s]) for s in stems], dtype=bytes),
            np.array([os.fsencode(pts_files[s]) for s in stems], dtype=bytes))


def _folder(folder):
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"no such dataset folder: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    return root


def _scan(root):
    """``{stem: file name}`` of a folder's images and of its ``.pts`` files (names, not
    paths: a folder may hold many files)."""
    images: dict[str, str] = {}
    pts_files: dict[str, str] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        # Hidden files include macOS "._name.jpg" resource forks, which look like images.
        if entry.name.startswith(".") or not entry.is_file():
            continue
        stem, suffix = os.path.splitext(entry.name)
        suffix = suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            if stem in images:
                raise LandmarkFileError(
                    root / entry.name, f"two images share the stem {stem!r} ({images[stem]}); the .pts would be ambiguous"
                )
            images[stem] = entry.name
        elif suffix == ".pts":
            pts_files[stem] = entry.name
    return images, pts_files


def _names(root, names):
    """The landmark names (or None), the landmark count they give and where it is from."""
    landmark_names, names_source = None, None
    if names is None:
        sidecar = root / NAMES_FILE
        if sidecar.is_file():
            landmark_names, names_source = read_names(sidecar), sidecar
    elif isinstance(names, (str, os.PathLike)):
        landmark_names, names_source = read_names(names), Path(names)
    else:
        landmark_names, names_source = parse_names("\n".join(map(str, names)), "<names>"), None
        if len(landmark_names) != len(list(names)):
            raise ValueError("names contain blank, '#' or multi-line entries")
    if landmark_names is None:
        return None, None, None
    return (landmark_names, len(landmark_names),
            f"{len(landmark_names)} landmark names" + (f" in {names_source}" if names_source else ""))


def _check_count(pts_path, points, expected, expected_from):
    """Raise if ``points`` of ``pts_path`` are not the ``expected`` count; the count
    expected from now on and where it is from (the first file, when nothing fixed it)."""
    if expected is None:
        return len(points), f"{pts_path.name}"
    if len(points) != expected:
        raise LandmarkFileError(
            pts_path, f"has {len(points)} points, expected {expected} (as in {expected_from})"
        )
    return expected, expected_from


def add_to_dataset(folder, stem, image, points, *, names=None):
    """Add one annotated image to a dataset folder: ``<stem>.png`` and ``<stem>.pts``.

    Both writes are atomic. An existing ``.pts`` of that stem is kept as a numbered backup,
    an existing different ``.png`` likewise; an identical image is not written again.

    Parameters
    ----------
    folder : str or os.PathLike
        Created if needed.
    stem : str
        File name without suffix.
    image : array
        Written losslessly (see :func:`napari_gsm.io.write_image`).
    points : (v, 2) array
        0-based ``(x, y)``.
    names : sequence of str, optional
        Written to ``landmarks.txt`` when the folder has none yet.

    Returns
    -------
    (image_path, pts_path) : tuple of pathlib.Path

    Raises
    ------
    ValueError
        If the folder holds another image of that stem (``stem.jpg`` ...: the ``.pts`` would
        be ambiguous), a different landmark count than its other annotations or names, or
        the stem is not a plain file name.
    """
    folder = Path(folder)
    stem = str(stem)
    if not stem or Path(stem).name != stem or stem.startswith("."):
        raise ValueError(f"{stem!r} is not a usable file name")
    points = np.asarray(points, float)
    folder.mkdir(parents=True, exist_ok=True)
    image_path = folder / f"{stem}.png"
    others = [q for q in folder.iterdir() if q.stem == stem and q != image_path
              and q.suffix.lower() in IMAGE_SUFFIXES]
    if others:
        raise ValueError(f"{others[0]}: another image named {stem!r} is already in {folder}")
    existing = load_dataset(folder, strict=False)
    v = existing.n_landmarks
    if v is not None and v != len(points):
        raise ValueError(f"{folder}: its annotations have {v} landmarks, these {len(points)}")
    if names is not None and existing.landmark_names is None:
        write_names(folder, names)
    write_image(image_path, image)
    return image_path, Path(write_pts(folder / f"{stem}.pts", points, backup=True))
