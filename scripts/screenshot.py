"""Make ``docs/screenshot.png``: the annotation widget on the sample faces, after a fit.

Copies ``sample_data/faces`` to a temporary folder, holds back three images' landmarks (the
images to annotate), opens it with :func:`napari_gsm.ui.launch` in a 1366x768 window (a
laptop screen), trains a HoG model with face-detector starts, fits the held-back faces
(Fit all) and orders the list worst predicted fit first, fits one face again with the key a
person presses, drags two landmarks with the mouse (so pinned points show next to fitted
ones), re-fits, presses J (the landmark the fit is least sure of is selected and named with
its predicted error; the likely-off ones are larger magenta rings) and saves a screenshot of
the whole window.

Usage::

    .venv/bin/python scripts/screenshot.py [OUT.png]

Without a display it re-runs itself under ``xvfb-run`` (rendering needs an X server).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from _display import SIZE, save_window, screenshot_main, wait_until  # noqa: E402


def make(out):
    import numpy as np

    sys.path.insert(0, str(REPO / "tests" / "ui"))
    from gui import drag, key  # the tests' real mouse and key events

    from napari_gsm.ui import launch
    from napari_gsm.ui.launch import find_widget

    def wait(w):
        wait_until(lambda: w.jobs.idle and w.training is None and w.fit_worker is None)

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "faces"
        shutil.copytree(REPO / "sample_data" / "faces", project)
        for stem in ("image_0552", "image_0697", "image_0850"):  # the detector finds these
            (project / f"{stem}.pts").unlink()
        viewer = launch(project)
        viewer.window._qt_window.resize(*SIZE)
        w = find_widget(viewer)
        w.face_check.setChecked(True)
        w.train()
        wait(w)
        if w.model is None:
            raise RuntimeError(f"training failed: {w.status_label.text()}")
        w.fit_all()
        wait(w)
        w.worst_first_check.setChecked(True)
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
        key(viewer, "J")
        return save_window(viewer, out, w.status_label.text())


if __name__ == "__main__":
    sys.exit(screenshot_main(__file__, REPO / "docs" / "screenshot.png", make))
