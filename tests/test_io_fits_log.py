"""fit's journal: which .pts files in a folder fit wrote, and with which model."""

from __future__ import annotations

from napari_gsm.io.fits_log import FITS_LOG_NAME, FitsLog


def test_a_file_is_fits_own_only_while_unchanged(tmp_path):
    a, b = tmp_path / "a.pts", tmp_path / "b.pts"
    with FitsLog(tmp_path) as log:
        for p, data in ((a, b"fit a"), (b, b"fit b")):
            p.write_bytes(data)
            log.append(p, data, "m1")
    log = FitsLog(tmp_path)
    assert log.owner(a)[0] == "m1" and log.owner(b)[0] == "m1"
    b.write_bytes(b"a person's b")
    assert FitsLog(tmp_path).owner(b) is None
    assert FitsLog(tmp_path).owner(tmp_path / "c.pts") is None  # never written
    assert FitsLog(tmp_path / "absent").owner(a) is None


def test_a_line_cut_short_is_ignored_and_the_next_starts_afresh(tmp_path):
    a, b = tmp_path / "a.pts", tmp_path / "b.pts"
    a.write_bytes(b"fit a")
    b.write_bytes(b"fit b")
    with FitsLog(tmp_path) as log:
        log.append(a, b"fit a", "m1")
    with open(tmp_path / FITS_LOG_NAME, "a") as f:
        f.write('{"file": "b.pts", "sha256": "12')  # the crash
    log = FitsLog(tmp_path)
    assert log.owner(b) is None and log.owner(a)[0] == "m1"
    with log:
        log.append(b, b"fit b", "m2")
    log = FitsLog(tmp_path)
    assert log.owner(b)[0] == "m2" and log.owner(a)[0] == "m1"


def test_superseded_lines_are_compacted_away(tmp_path):
    a = tmp_path / "a.pts"
    for k in range(150):  # 150 runs re-fitting the same file with a new model each time
        data = f"fit {k}".encode()
        a.write_bytes(data)
        with FitsLog(tmp_path) as log:
            log.append(a, data, f"m{k}")
    lines = (tmp_path / FITS_LOG_NAME).read_text().splitlines()
    assert len(lines) <= 102
    assert FitsLog(tmp_path).owner(a)[0] == "m149"
