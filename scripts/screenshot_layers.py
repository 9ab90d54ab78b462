"""Make ``docs/layers.png``: napari-gsm working on plain napari layers, no project folder.

Opens four sample wings with napari's own image reader, adds the landmarks of three of them
as Points layers (as a person clicks them with the Points tool), trains from the layers in
the *Train from layers* dock, fits the fourth wing from the *Fit image layers* dock into a
new Points layer, and saves a screenshot of the whole 1366x768 window.

Usage::

    .venv/bin/python scripts/screenshot_layers.py [OUT.png]

Without a display it re-runs itself under ``xvfb-run`` (rendering needs an X server).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from _display import SIZE, save_window, screenshot_main, wait_until  # noqa: E402


def make(out):
    import napari
    import numpy as np

    from napari_gsm.io import read_pts

    wings = REPO / "sample_data" / "wings"
    viewer = napari.Viewer(title="napari-gsm: working with layers")
    viewer.window._qt_window.resize(*SIZE)
    stems = ["63002", "63003", "63004", "63006"]
    for s in stems:
        viewer.open(wings / f"{s}.jpg", plugin="napari")
    for s in stems[:3]:
        viewer.add_points(read_pts(wings / f"{s}.pts")[:, ::-1], name=f"{s} landmarks",
                          features={"landmark": np.arange(12)}, face_color="yellow", size=12)

    def wait(widget):
        wait_until(lambda: widget.run is None and getattr(widget, "worker", None) is None)

    _, train = viewer.window.add_plugin_dock_widget("napari-gsm", "Train from layers")
    train.all_pairs.value = True
    train.train()
    wait(train)
    _, fit = viewer.window.add_plugin_dock_widget("napari-gsm", "Fit image layers")
    fit.image.value = viewer.layers["63006"]
    fit.start.value = "learned prior"
    fit.fit()
    wait(fit)
    for layer in viewer.layers:
        layer.visible = layer.name.startswith("63006")
    viewer.layers.selection.active = viewer.layers["63006 landmarks"]
    viewer.reset_view()
    return save_window(viewer, out, f"{train.status.value}; {fit.status.value}")


if __name__ == "__main__":
    sys.exit(screenshot_main(__file__, REPO / "docs" / "layers.png", make))
