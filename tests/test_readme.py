"""What the README tells a person to type works as written."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def _section(title):
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert m, f"README has no '## {title}' section"
    return m.group(1)


def test_setup_keeps_exactly_two_commands():
    (block,) = re.findall(r"```bash\n(.*?)```", _section("Set-up"), re.S)
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert [c for c in commands if c] == ["bash run.sh", "bash test.sh"]


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "activate").is_file(),
                    reason="no .venv: the set-up scripts were not run in this checkout")
def test_command_line_section_runs_as_written(tmp_path):
    """The first shell block of "Command line", run by bash in a copy of the repository
    root (the .venv the set-up made and sample_data/, linked) from a shell whose PATH does
    not know the venv: what a person gets after `bash run.sh` or `bash test.sh`."""
    block = re.findall(r"```bash\n(.*?)```", _section("Command line"), re.S)[0]
    for name in (".venv", "sample_data"):
        (tmp_path / name).symlink_to(REPO / name)
    venv_bin = str(REPO / ".venv" / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and Path(p).resolve() != Path(venv_bin).resolve())
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=path, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "usage: napari-gsm" in proc.stdout
    # whatever the block trains or fits lands in out/, and the fits are there
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()] \
        if (tmp_path / "out").is_dir() else []
    assert any(p.suffix == ".npz" for p in written)
    assert any(p.suffix == ".pts" for p in written)
