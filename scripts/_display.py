"""Run a screenshot script on a display: re-run it under ``xvfb-run`` when there is none."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

#: A laptop screen: the smallest the plugin's docks are laid out for.
SIZE = (1366, 768)


def rerun_under_xvfb(script, *args):
    """Return the exit status of ``script`` re-run under Xvfb, or None when this process
    already has a display (or no ``xvfb-run``) and should go on itself."""
    if os.environ.get("DISPLAY") or not shutil.which("xvfb-run") or os.environ.get("_GSM_XVFB"):
        return None
    env = {**os.environ, "_GSM_XVFB": "1"}
    cmd = ["xvfb-run", "-a", "-s", f"-screen 0 {SIZE[0]}x{SIZE[1]}x24", sys.executable,
           str(script), *map(str, args)]
    return subprocess.call(cmd, env=env)
