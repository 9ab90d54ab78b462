"""Crash-safe file replacement with GNU-style numbered backups.

A landmark file is hours of a person's work, so it is never truncated in place: the new
content goes to a temporary file in the same folder (same file system, so the final
rename is atomic), is flushed to disk, and only then renamed over the target. Readers
therefore see either the old or the new file, never half of one.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "backup_path", "next_backup_path"]


def next_backup_path(path) -> Path:
    """Return the next free numbered backup name for `path`: ``name.~N~``.

    ``N`` is one more than the highest existing backup number (GNU ``cp --backup=numbered``
    style), so numbers only grow and deleting an old backup never causes reuse.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    pattern = re.compile(re.escape(path.name) + r"\.~([0-9]+)~")
    highest = 0
    try:
        siblings = os.listdir(path.parent if str(path.parent) else ".")
    except FileNotFoundError:
        siblings = []
    for name in siblings:
        m = pattern.fullmatch(name)
        if m:
            highest = max(highest, int(m.group(1)))
    return path.with_name(f"{path.name}.~{highest + 1}~")


def backup_path(path, number: int) -> Path:
    """Return the name of backup number `number` of `path` (``name.~number~``)."""
    path = Path(path)
    return path.with_name(f"{path.name}.~{int(number)}~")


def _make_backup(target: Path) -> Path:
    """Preserve the current content of `target` under a fresh numbered name."""
    while True:
        dest = next_backup_path(target)
        try:
            # A hard link keeps the old inode under the backup name at no cost, and
            # os.link refuses to overwrite, so an existing backup can never be lost
            # even if another process picked the same number in the meantime.
            os.link(target, dest)
            return dest
        except FileExistsError:
            continue
        except OSError:
            pass  # file system without hard links (FAT, some network shares)
        try:
            with open(target, "rb") as src, open(dest, "xb") as dst:  # "x": never overwrite
                shutil.copyfileobj(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
            shutil.copystat(target, dest)
            return dest
        except FileExistsError:
            continue


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable on POSIX; not possible (nor needed) on Windows.
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path, data: bytes, *, backup: bool = True) -> Path:
    """Atomically replace the file at `path` with `data`.

    Parameters
    ----------
    path : str or os.PathLike
        Target file. Its folder must exist. A symlink is followed: the file it points to
        is replaced and the link kept.
    data : bytes
        The complete new content.
    backup : bool, optional
        When the target exists, first keep its old content as ``name.~N~`` with the next
        free number (existing backups are never overwritten). ``False`` replaces it
        without keeping anything.

    Returns
    -------
    pathlib.Path
        `path`, as a :class:`pathlib.Path`.

    Notes
    -----
    If anything fails before the final rename (disk full, interrupted, ...) the old file
    is untouched and the temporary file is removed; the exception propagates.
    """
    given = Path(path)
    target = given.resolve() if given.is_symlink() else given
    folder = target.parent
    data = bytes(data)

    while True:
        tmp = folder / f".{target.name}.{secrets.token_hex(4)}.tmp"
        try:
            # 0o666 through the umask, like open(): mkstemp's 0o600 would silently make
            # shared dataset files private.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
        except OSError as e:  # e.g. an unwritable folder: name the file asked for, not tmp
            raise type(e)(e.errno, e.strerror, os.fspath(given)) from None

    made_backup = None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if target.exists():
            shutil.copymode(target, tmp)
            if backup:
                made_backup = _make_backup(target)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if made_backup is not None:
            # The old file is still in place, so this fresh backup is a redundant copy.
            try:
                os.unlink(made_backup)
            except OSError:
                pass
        raise
    _fsync_dir(folder)
    return given


def atomic_write_text(path, text: str, *, backup: bool = True) -> Path:
    """Atomically replace the file at `path` with `text` encoded as UTF-8.

    Newlines are written exactly as they are in `text` (no platform translation), so
    files are byte-identical across operating systems.

    Parameters
    ----------
    path : str or os.PathLike
    text : str
    backup : bool, optional
        See :func:`atomic_write_bytes`.

    Returns
    -------
    pathlib.Path
    """
    return atomic_write_bytes(path, text.encode("utf-8"), backup=backup)
