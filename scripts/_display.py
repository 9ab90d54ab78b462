"""What the screenshot scripts share: a display (re-run under ``xvfb-run`` when there is
none), the window size, waiting for background work, and saving the whole window."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

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


def screenshot_main(script, default_out, make):
    """A screenshot script's ``main``: the output path is the first argument (else
    ``default_out``); on a display ``make(out)`` draws and saves it and returns the exit
    status, without one the script runs again under Xvfb."""
    out = Path(sys.argv[1] if len(sys.argv) > 1 else default_out)
    status = rerun_under_xvfb(script, out)
    return make(out) if status is None else status


def process_events(n=10):
    from qtpy.QtWidgets import QApplication

    for _ in range(n):
        QApplication.processEvents()


def wait_until(done):
    """Let Qt run (background work delivering its results) until ``done()`` is true."""
    from qtpy.QtWidgets import QApplication

    while not done():
        QApplication.processEvents()
        time.sleep(0.01)
    process_events()


def save_window(viewer, out, note):
    """Save a screenshot of the whole napari window (docks included) to ``out``, say so
    with ``note`` (what the widgets reported), close the viewer; returns exit status 0."""
    process_events(20)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(path=str(out), canvas_only=False, flash=False)
    print(f"wrote {out} ({note})")
    viewer.close()
    return 0
