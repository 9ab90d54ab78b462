"""Fixtures for the napari tests: annotation projects and a docked annotation widget."""

from __future__ import annotations

import pytest

from napari_gsm.io import read_pts


def hold_out(folder, keep):
    """Delete every ``.pts`` of ``folder`` but the first ``keep`` (sorted); returns the
    true landmarks of all images by stem."""
    truth = {}
    for k, pts in enumerate(sorted(folder.glob("*.pts"))):
        truth[pts.stem] = read_pts(pts)
        if k >= keep:
            pts.unlink()
    return truth


@pytest.fixture
def wing_project(wings_copy):
    """10 wings; the first 3 annotated, the others' true landmarks kept aside."""
    return wings_copy, hold_out(wings_copy, 3)


@pytest.fixture
def open_annotator(make_napari_viewer):
    """``open_annotator(folder)``: a shown viewer with the annotation widget docked on
    ``folder`` (as the Plugins menu docks it), with grey features (fast to train)."""
    from napari_gsm.ui.widget import AnnotationWidget

    def make(folder, *, features="grey"):
        viewer = make_napari_viewer(show=True)
        viewer.window._qt_window.resize(1366, 768)
        w = AnnotationWidget(viewer)
        viewer.window.add_dock_widget(w, name="GSM annotation")
        w.open_project(folder)
        assert w.project is not None, w.status_label.text()
        w.features_combo.setCurrentText(features)
        w.validate_check.setChecked(False)  # tests that want it turn it on
        return w

    return make


@pytest.fixture
def widget(open_annotator, wing_project):
    return open_annotator(wing_project[0])
