"""Issue #13, the model-quality dock: cross-validated errors after training, in the background."""

from __future__ import annotations

import numpy as np
from gui import wait_idle

from napari_gsm.ui.batch_actions import QUALITY_DOCK


def test_training_is_followed_by_a_cross_validation_in_its_dock(open_annotator, wings_copy,
                                                                qtbot, tmp_path):
    w = open_annotator(wings_copy)  # 10 annotated wings
    w.validate_check.setChecked(True)
    w.train_btn.click()
    wait_idle(qtbot, w, timeout=180000)
    panel = w.quality
    assert panel is not None and QUALITY_DOCK in w.viewer.window.dock_widgets
    cv = panel.result
    assert cv is not None, panel.verdict.text()
    assert cv.nme.shape == (10,) and np.isfinite(cv.nme).all()
    assert cv.landmark_errors.shape == (10, 12) and cv.folds == 5
    assert len(cv.sizes) == len(cv.curve) == 3 and cv.sizes[-1] == 8
    assert len(panel.figure.axes) == 3
    assert "error" in panel.verdict.text()
    # The panel's button runs it again, and Cancel stops it, leaving the last result.
    panel.rerun_btn.click()
    assert w.validation is not None and panel.cancel_btn.isVisible()
    panel.cancel_btn.click()
    wait_idle(qtbot, w, timeout=180000)
    assert panel.result is cv and panel.rerun_btn.isEnabled()
