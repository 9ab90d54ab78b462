"""The project's image list in the annotation widget: its marks, its order, its rows.

Rows are in folder order, or, with *worst predicted first*, the images with a fit still to
check by their fit's predicted error: fits predicted to have failed first, then the
highest predicted NME; the other images follow in folder order. Each row keeps the index
of its image (Qt item data), so the order never changes which image a click opens.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QListWidgetItem

__all__ = ["ImageListActions", "display_order", "LEGEND"]

# The check box says "accepted"; the mark says what else there is.
_MARK = {"annotated": "", "edited": "\u270e ", "fitted": "~ ", "": ""}
_BROKEN_MARK = "\u26a0 "
_FAILED_MARK = "\u2717 "
_INDEX = Qt.ItemDataRole.UserRole
LEGEND = ("\u2713 accepted, \u270e edited, ~ fitted (predicted error), \u2717 fit looks "
          "failed, \u26a0 unreadable")


def display_order(predicted, worst_first):
    """Image indices in list order.

    Parameters
    ----------
    predicted : list of (float or None, bool)
        Each image's ``(predicted NME, failed)`` (:meth:`.project.Project.fit_confidence`).
    worst_first : bool
        Failed fits, then the highest predicted NME first; images without a prediction
        after them, in folder order. False: folder order.
    """
    n = len(predicted)
    if not worst_first:
        return list(range(n))
    ranked = sorted((i for i in range(n) if predicted[i][0] is not None),
                    key=lambda i: (not predicted[i][1], -predicted[i][0], i))
    return ranked + [i for i in range(n) if predicted[i][0] is None]


class ImageListActions:
    """The list half of the annotation widget (mixed into it): needs ``self.project``,
    ``self.image_list``, ``self.worst_first_check``, ``self.count_label`` and
    ``self.show_image``."""

    def _connect_list(self):
        self._updating_list = False
        self.image_list.currentRowChanged.connect(self._on_list_row)
        self.worst_first_check.toggled.connect(lambda *_: self._fill_list())

    def _fill_list(self):
        """(Re)build the rows in the chosen order, marks included."""
        p = self.project
        if p is None:
            return
        order = display_order([p.fit_confidence(i) for i in range(len(p))],
                              self.worst_first_check.isChecked())
        self._updating_list = True
        try:
            self.image_list.clear()
            for i in order:
                item = QListWidgetItem(p.stems[i])
                item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                item.setData(_INDEX, i)
                self.image_list.addItem(item)
            self._rows = {i: row for row, i in enumerate(order)}
        finally:
            self._updating_list = False
        self._refresh_list()

    def _index_of_row(self, row):
        item = self.image_list.item(row)
        return None if item is None else int(item.data(_INDEX))

    def _on_list_row(self, row):
        i = self._index_of_row(row) if row >= 0 else None
        if not self._updating_list and self.project is not None and i is not None \
                and i != self.project.index:
            self.show_image(i)

    def _refresh_list(self, only=None):
        """Update the list's marks (all rows, or just image ``only``'s) and the counts."""
        p = self.project
        self._updating_list = True
        try:
            for i in range(len(p)) if only is None else [only]:
                self._mark(self.image_list.item(self._rows[i]), i)
            self.image_list.setCurrentRow(self._rows[p.index])
        finally:
            self._updating_list = False
        self.count_label.setText(f"{p.n_annotated} / {len(p)} annotated  ({LEGEND})")

    def _mark(self, item, i):
        p = self.project
        status, problem = p.status(i), p.problem(i)
        nme, failed = p.fit_confidence(i)
        mark = _BROKEN_MARK if problem else _FAILED_MARK if failed else _MARK[status]
        shown = "" if nme is None else f"  {100 * nme:.1f} %"
        item.setText(f"{mark}{p.stems[i]}{shown}")
        item.setCheckState(Qt.CheckState.Checked if p.is_annotated(i)
                           else Qt.CheckState.Unchecked)
        tip = problem or status or "not annotated"
        if nme is not None:
            tip += (f"; predicted NME {100 * nme:.1f} %"
                    + ("; the fit looks failed: most landmarks likely off" if failed else ""))
        item.setToolTip(tip)
        bad = problem or failed
        item.setForeground(QColor("#ff6b6b") if bad else self.palette().text().color())
