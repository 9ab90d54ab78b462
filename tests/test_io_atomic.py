"""Tests for napari_gsm.io.atomic: atomic replacement and numbered backups."""

import os

import pytest

from napari_gsm.io import atomic_write_bytes, atomic_write_text
from napari_gsm.io.atomic import next_backup_path


def _listing(folder):
    return sorted(os.listdir(folder))


def test_new_file_no_backup(tmp_path):
    p = atomic_write_text(tmp_path / "a.pts", "one")
    assert p == tmp_path / "a.pts" and p.read_text() == "one"
    assert _listing(tmp_path) == ["a.pts"]


def test_numbered_backups_keep_every_version(tmp_path):
    p = tmp_path / "a.pts"
    for text in ("v1", "v2", "v3", "v4"):
        atomic_write_text(p, text)
    assert p.read_text() == "v4"
    assert [(tmp_path / f"a.pts.~{k}~").read_text() for k in (1, 2, 3)] == ["v1", "v2", "v3"]
    assert _listing(tmp_path) == ["a.pts", "a.pts.~1~", "a.pts.~2~", "a.pts.~3~"]


def test_backup_never_overwrites_and_numbers_only_grow(tmp_path):
    p = tmp_path / "a.pts"
    (tmp_path / "a.pts.~1~").write_text("precious 1")
    (tmp_path / "a.pts.~7~").write_text("precious 7")
    (tmp_path / "b.pts.~9~").write_text("other file's backup")
    p.write_text("old")
    atomic_write_text(p, "new")
    assert (tmp_path / "a.pts.~1~").read_text() == "precious 1"
    assert (tmp_path / "a.pts.~7~").read_text() == "precious 7"
    assert (tmp_path / "a.pts.~8~").read_text() == "old"
    assert next_backup_path(p).name == "a.pts.~9~"


def test_backup_is_independent_of_new_content(tmp_path):
    # The backup must keep the old bytes even though the target is replaced (hard link
    # or copy, never the same inode as the new file).
    p = tmp_path / "a.txt"
    p.write_text("old")
    atomic_write_text(p, "new")
    assert (tmp_path / "a.txt.~1~").read_text() == "old"
    assert not os.path.samefile(p, tmp_path / "a.txt.~1~")


def test_backup_false(tmp_path):
    p = tmp_path / "a.pts"
    atomic_write_text(p, "v1")
    atomic_write_text(p, "v2", backup=False)
    assert p.read_text() == "v2" and _listing(tmp_path) == ["a.pts"]


def test_copy_fallback_when_hard_links_fail(tmp_path, monkeypatch):
    def no_link(*a, **k):
        raise PermissionError("no hard links here")

    monkeypatch.setattr(os, "link", no_link)
    p = tmp_path / "a.pts"
    p.write_text("old")
    atomic_write_text(p, "new")
    assert (tmp_path / "a.pts.~1~").read_text() == "old" and p.read_text() == "new"


def test_failed_replace_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "a.pts"
    p.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert _listing(tmp_path) == ["a.pts"]  # no temp file, no redundant backup


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "a.pts"
    p.write_bytes(b"old")

    def broken_fsync(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="I/O error"):
        atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"old"
    assert _listing(tmp_path) == ["a.pts"]


def test_failure_on_new_file_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "replace", lambda s, d: (_ for _ in ()).throw(OSError("nope")))
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "new.pts", "x")
    assert _listing(tmp_path) == []


def test_text_is_utf8_with_newlines_as_given(tmp_path):
    p = atomic_write_text(tmp_path / "n.txt", "é\nb\r\n")
    assert p.read_bytes() == "é\nb\r\n".encode()


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_permissions_are_kept(tmp_path):
    p = tmp_path / "a.pts"
    p.write_text("old")
    os.chmod(p, 0o640)
    atomic_write_text(p, "new")
    assert os.stat(p).st_mode & 0o777 == 0o640


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_symlink_target_is_replaced_and_link_kept(tmp_path):
    real = tmp_path / "real.pts"
    real.write_text("old")
    link = tmp_path / "link.pts"
    link.symlink_to(real)
    atomic_write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert (tmp_path / "real.pts.~1~").read_text() == "old"
