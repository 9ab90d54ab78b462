"""Make ``docs/screenshot.png``: the annotation widget on the sample faces, after a fit.

Copies ``sample_data/faces`` to a temporary folder, holds back one image's landmarks (the
image to annotate), opens it with :func:`napari_gsm.ui.launch` in a 1366x768 window (a
laptop screen), trains a HoG model with face-detector starts, fits the held-back face, drags
two landmarks with the mouse (so pinned points show next to fitted ones), re-fits with the
key a person presses, hovers a landmark (its name shows) and saves a screenshot of the whole
window.

Usage::

    .venv/bin/python scripts/screenshot.py [OUT.png]

Without a display it re-runs itself under ``xvfb-run`` (rendering needs an X server).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from _display import SIZE, rerun_under_xvfb  # noqa: E402


def main(out=None):
    out = Path(out or REPO / "docs" / "screenshot.png")
    status = rerun_under_xvfb(__file__, out)
    if status is not None:
        return status

    import numpy as np
    from qtpy.QtWidgets import QApplication

    sys.path.insert(0, str(REPO / "tests" / "ui"))
    from gui import drag, hover, key, settle  # the tests' real mouse and key events

    from napari_gsm.ui import launch
    from napari_gsm.ui.launch import find_widget

    def wait(w):
        while not (w.jobs.idle and w.training is None):
            QApplication.processEvents()
            time.sleep(0.01)
        settle(10)

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "faces"
        shutil.copytree(REPO / "sample_data" / "faces", project)
        held = project / "image_0552.pts"  # a frontal face: the detector finds it
        held.unlink()
        viewer = launch(project)
        viewer.window._qt_window.resize(*SIZE)
        w = find_widget(viewer)
        w.face_check.setChecked(True)
        w.train()
        wait(w)
        if w.model is None:
            raise RuntimeError(f"training failed: {w.status_label.text()}")
        w.show_image(w.project.stems.index("image_0552"))
        key(viewer, "G")
        wait(w)
        st = w.project.state()
        if not np.isfinite(st.points).all():
            raise RuntimeError(f"fitting failed: {w.status_label.text()}")
        # A person drags two landmarks (an eye corner and the chin tip): they become pinned.
        for k, shift in ((36, (-2.0, -1.5)), (8, (3.0, 0.0))):
            drag(viewer, st.points[k], st.points[k] + shift)
        key(viewer, "Shift-G")
        wait(w)
        hover(viewer, w.project.state().points[48])
        out.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(path=str(out), canvas_only=False, flash=False)
        print(f"wrote {out} ({w.status_label.text()})")
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
