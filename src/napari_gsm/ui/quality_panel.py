"""Dock: how good is the model on this project's own images, and will more annotation help?

Shows a :class:`napari_gsm.validation.CrossValidation` (computed in the background after
training): the cumulative error curve, each landmark's cross-validated error (mean and
spread: which landmarks the model finds hard), and the learning curve with a sentence on
whether annotating more images will still lower the error.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..validation import learning_verdict

__all__ = ["QualityPanel"]


class QualityPanel(QWidget):
    """Three plots and a verdict; ``show_result(cv, names)`` fills them."""

    def __init__(self, on_rerun=None, on_cancel=None):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        super().__init__()
        self.figure = Figure(figsize=(3.2, 6.0), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(360)
        self.verdict = QLabel("train a model: its cross-validated errors show here")
        self.verdict.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.rerun_btn = QPushButton("Validate again")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setVisible(False)
        if on_rerun is not None:
            self.rerun_btn.clicked.connect(lambda *_: on_rerun())
        if on_cancel is not None:
            self.cancel_btn.clicked.connect(lambda *_: on_cancel())
        lay = QVBoxLayout(self)
        lay.addWidget(self.verdict)
        lay.addWidget(self.progress)
        lay.addWidget(self.canvas, 1)
        lay.addWidget(self.rerun_btn)
        lay.addWidget(self.cancel_btn)
        self.result = None

    def busy(self, on, total=1):
        self.progress.setVisible(on)
        self.cancel_btn.setVisible(on)
        self.rerun_btn.setEnabled(not on)
        if on:
            self.progress.setRange(0, max(total, 1))
            self.progress.setValue(0)

    def on_progress(self, done, total, what):
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.progress.setFormat(f"{what} %v/%m")

    def show_result(self, cv, names):
        """Draw a cross-validation result; ``names`` label the landmarks."""
        self.result = cv
        fig = self.figure
        fig.clear()
        ced, lm, lc = fig.subplots(3, 1)
        errors = np.sort(cv.nme[np.isfinite(cv.nme)])
        share = np.arange(1, len(errors) + 1) / max(len(cv.nme), 1)
        ced.step(errors, share, where="post")
        ced.set_xlabel("NME (%)")
        ced.set_ylabel("images")
        ced.set_title(f"{cv.folds}-fold cross-validation: mean {cv.mean_nme:.2f} %",
                      fontsize=9)
        ced.set_ylim(0, 1.02)
        means = np.nanmean(cv.landmark_errors, axis=0)
        spread = np.nanstd(cv.landmark_errors, axis=0)
        x = np.arange(len(means))
        lm.bar(x, means, yerr=spread, color="tab:orange", ecolor="gray", capsize=1)
        lm.set_ylabel("error (%)")
        lm.set_title("per landmark (worst named)", fontsize=9)
        worst = np.argsort(means)[::-1][: min(3, len(means))]
        lm.set_xticks(worst, [names[i] if i < len(names) else str(i + 1) for i in worst],
                      fontsize=7, rotation=30)
        lc.errorbar(cv.sizes, cv.curve, yerr=cv.curve_spread, marker="o")
        lc.set_xlabel("training images")
        lc.set_ylabel("mean NME (%)")
        lc.set_title("learning curve", fontsize=9)
        for ax in (ced, lm, lc):
            ax.tick_params(labelsize=7)
        self.canvas.draw_idle()
        self.verdict.setText(learning_verdict(cv))
