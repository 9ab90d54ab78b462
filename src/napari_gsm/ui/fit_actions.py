"""The fitting half of the annotation widget (mixed into it): Fit, Re-fit with pins, the
start box, and walking the landmarks the fit is least sure of.

A fit runs on the widget's :class:`~.jobs.JobRunner` and is applied only if the person is
still on that image and has not edited it meanwhile.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QTimer

from ..quality import fit_warnings
from .annotation_view import START_SOURCES
from .guard import USER_ERRORS, guarded

__all__ = ["FitActions"]


class FitActions:
    """Needs ``self.project``, ``self.model``, ``self.layers``, ``self.jobs``,
    ``self.start_combo``, ``self.set_status`` and ``self._after_edit``."""

    def _need_model(self):
        self._need_project()
        if self.model is None:
            raise ValueError("no model yet: annotate a few images and Train")

    def current_box(self):
        """The current image's start box ``(x0, y0, x1, y1)``, or None."""
        return self.layers.current_box()

    def draw_box(self):
        """Select the start-box layer in rectangle mode; the box start is chosen."""
        self.layers.draw_box_mode(self._on_box_drawn)
        self.start_combo.setCurrentIndex([s[1] for s in START_SOURCES].index("box"))
        self.set_status("draw a rectangle around the object: the fit starts when you release")

    def _on_box_drawn(self):
        # Deferred: the Shapes layer is still inside its data event.
        QTimer.singleShot(0, self._after_box_drawn)

    def _after_box_drawn(self):
        self.layers.keep_newest_box()
        if self.model is not None and self.start_combo.currentData() == "box":
            self.fit()

    @guarded
    def fit(self):
        """Fit the current image from the chosen start (in the background); pinned
        landmarks are held where they are."""
        self._need_model()
        init = self.start_combo.currentData()
        if init == "points":
            return self.refit()
        box = self.current_box() if init in ("box", "auto") else None
        if init == "box" and box is None:
            self.draw_box()
            return None
        st = self.project.state()
        # Pinned landmarks stay where a person put them; the others start from ``init``.
        pinned = st.pinned if st.pinned.any() else None
        image, points = self.project.image(), st.points.copy() if pinned is not None else None
        return self._submit_fit(lambda model: model.fit(image, init, box=box, points=points,
                                                        pinned=pinned), "fitted")

    @guarded
    def refit(self):
        """Re-fit from the current points with pinned (and checked) landmarks held fixed."""
        self._need_model()
        st = self.project.state()
        if st.placed.sum() < 2:
            raise ValueError("place at least two landmarks (or Fit) before re-fitting")
        image, points, pinned = self.project.image(), st.points.copy(), st.pinned
        return self._submit_fit(lambda model: model.fit(image, "points", points=points,
                                                        pinned=pinned),
                                f"re-fitted with {int(pinned.sum())} pinned")

    def _submit_fit(self, fit, what):
        """Run ``fit(model)`` in the background; apply it only if the person is still on the
        same image, unedited."""
        p = self.project
        i, st = p.index, p.state()
        version, keep, image = st.version, st.pinned, p.image()

        def job():
            model = self.model  # the newest, after updates queued before this job
            result = fit(model)
            return result, fit_warnings(model, result, image)

        def done(value):
            result, warnings = value
            if self.project is not p or p.index != i or st.version != version:
                self.set_status(f"a fit of {p.stems[i]} was dropped: you moved on or edited it")
                return
            st.set_fit(result.points, keep=keep, confidence=result.confidence)
            self.layers.select_mode(True)  # a drag now moves a point
            msg = (f"{what} from {result.init} in {result.fit_ms:.0f} ms "
                   f"({result.n_iter} iterations)")
            if warnings:
                self._after_edit(msg + " \u2014 check this fit: " + "; ".join(warnings),
                                 warning=True, next_step=("Draw a box and re-fit", self.draw_box))
            else:
                self._after_edit(msg)

        self.set_status(f"fitting {p.stems[i]}\u2026")
        self.jobs.submit(job, done, self._job_failed)
        return True

    def _job_failed(self, exc):
        if not isinstance(exc, USER_ERRORS):
            raise exc
        self.set_status(str(exc), error=True)

    def next_to_check_landmark(self):
        """Select the next fitted landmark to check, least confident first, and centre the
        view on it."""
        if self.project is None:
            return
        st = self.project.state()
        chosen = self.layers.selected_landmarks()
        k = st.next_to_check(int(chosen[-1]) if len(chosen) else -1)
        if k is None:
            self.set_status("no fitted landmark left to check" if st.confidence is not None
                            else "no confidence here: fit with a model trained by this version")
            return
        self.layers.focus(k)
        c = st.confidence
        rank = int(np.flatnonzero(st.doubt_order() == k)[0]) + 1
        self.set_status(f"{self.project.names[k]}: predicted error {c.error_px[k]:.1f} px, "
                        f"{100 * c.p_off[k]:.0f} % likely off (least confident #{rank}; "
                        f"{int(st.uncertain.sum())} likely off on this image; J for the next)")
