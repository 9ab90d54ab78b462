"""Which ``.pts`` files in a folder ``napari-gsm fit`` wrote, and with which model.

A re-run of ``fit`` must tell its own earlier output from a person's annotation: the first
may be replaced (it was fitted with another model, or the run was interrupted), the second
never without being asked. The folder's journal ``.napari-gsm-fits.jsonl`` has one JSON
line per file fit wrote::

    {"file": "image_0001.pts", "sha256": "<the file's bytes>", "model": "<the model file's>"}

A file is fit's own only while its bytes still hash to the last line naming it: once a
person edits it, or anything else replaces it, it is theirs. A line is appended after its
``.pts`` has been written (atomically), so a crash in between, or a line cut short, only
makes that one file count as not fit's own: it is then left alone, the safe side.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .atomic import atomic_write_text

__all__ = ["FitsLog", "FITS_LOG_NAME", "sha256_hex"]

#: The journal's file name, in the folder the ``.pts`` files are written to.
FITS_LOG_NAME = ".napari-gsm-fits.jsonl"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FitsLog:
    """The journal of one folder (empty when the folder or the journal does not exist).

    Parameters
    ----------
    folder : str or os.PathLike
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / FITS_LOG_NAME
        self._entries = {}  # file name -> (sha256, model digest), the last line wins
        self._n_lines = 0
        self._file = None
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            return
        for line in text.splitlines():
            try:
                doc = json.loads(line)
                entry = (str(doc["sha256"]), str(doc["model"]))
                name = str(doc["file"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash, or edited by hand: not counted
            self._entries[name] = entry
            self._n_lines += 1

    def owner(self, path):
        """``(model digest, sha256)`` when ``path``'s bytes are what fit last wrote there,
        else None (no such file, never written by fit, or changed since)."""
        path = Path(path)
        entry = self._entries.get(path.name) if path.parent == self.folder else None
        if entry is None:
            return None
        try:
            data = path.read_bytes()
        except OSError:
            return None
        sha = sha256_hex(data)
        return (entry[1], sha) if sha == entry[0] else None

    def append(self, path, data: bytes, model: str):
        """Record that fit wrote ``data`` to ``path`` (in this folder) with ``model``."""
        path = Path(path)
        if path.parent != self.folder:
            raise ValueError(f"{path} is not in {self.folder}")
        sha = sha256_hex(data)
        if self._file is None:
            self._compact()
            self._file = open(self.path, "a+b")
            self._file.seek(0, os.SEEK_END)
            if self._file.tell():  # a line cut short by a crash must not swallow this one
                self._file.seek(-1, os.SEEK_END)
                if self._file.read(1) != b"\n":
                    self._file.write(b"\n")
        # One short line per write() of an O_APPEND file: two fits writing into one
        # folder interleave whole lines.
        line = json.dumps({"file": path.name, "sha256": sha, "model": model}) + "\n"
        self._file.write(line.encode("utf-8"))
        self._file.flush()
        self._entries[path.name] = (sha, model)
        self._n_lines += 1

    def _compact(self):
        """Rewrite the journal without superseded lines once they are most of it."""
        if self._n_lines <= 2 * len(self._entries) + 100:
            return
        lines = [json.dumps({"file": name, "sha256": sha, "model": model})
                 for name, (sha, model) in self._entries.items()]
        atomic_write_text(self.path, "".join(line + "\n" for line in lines), backup=False)
        self._n_lines = len(lines)

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
