"""Drive napari the way a person does: real key presses and mouse events on the canvas.

Positions are given in data coordinates ``(x, y)`` of the 2D scene and mapped to the
canvas's pixels through the camera (napari draws world ``(row, col)`` at
``(col - centre_col) * zoom + width / 2``, likewise for rows).
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication

NO_MOD = Qt.KeyboardModifier.NoModifier
LEFT = Qt.MouseButton.LeftButton


def canvas(viewer):
    """The vispy canvas's Qt widget."""
    return viewer.window._qt_viewer.canvas.native


def settle(n=5):
    for _ in range(n):
        QApplication.processEvents()


def to_canvas(viewer, xy):
    """Canvas pixel of the data point ``xy = (x, y)``."""
    native = canvas(viewer)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    centre = np.asarray(camera.center)[-2:]  # (row, col)
    zoom = camera.zoom
    col = (xy[0] - centre[1]) * zoom + native.width() / 2
    row = (xy[1] - centre[0]) * zoom + native.height() / 2
    return QPoint(int(round(col)), int(round(row)))


def click(viewer, xy, modifiers=NO_MOD):
    """A left click at data point ``xy``."""
    QTest.mouseClick(canvas(viewer), LEFT, modifiers, to_canvas(viewer, xy))
    settle()


def drag(viewer, start_xy, end_xy, steps=8):
    """Press at ``start_xy``, move in ``steps`` to ``end_xy``, release (data coordinates)."""
    native = canvas(viewer)
    p0, p1 = to_canvas(viewer, start_xy), to_canvas(viewer, end_xy)
    QTest.mousePress(native, LEFT, NO_MOD, p0)
    for k in range(1, steps + 1):
        QTest.mouseMove(native, p0 + (p1 - p0) * (k / steps))
        settle(1)
    QTest.mouseRelease(native, LEFT, NO_MOD, p1)
    settle()


def hover(viewer, xy, tries=5):
    """Move the mouse onto data point ``xy`` as a real mouse moves: from a nearby pixel,
    again until napari's cursor is there (vispy drops the first move event after a click,
    and Qt may merge two quick moves into one)."""
    target = to_canvas(viewer, xy)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    for k in range(tries):
        for pos in (target + QPoint(2 + k, 2), target):
            QTest.mouseMove(canvas(viewer), pos)
            settle()
        at = np.asarray(viewer.cursor.position)[-2:][::-1]  # (row, col) -> (x, y)
        if np.allclose(at, xy, atol=2.0 / camera.zoom):
            return


_KEYS = {"Enter": Qt.Key.Key_Return, "[": Qt.Key.Key_BracketLeft, "]": Qt.Key.Key_BracketRight}
_MODS = {"Shift": Qt.KeyboardModifier.ShiftModifier,
         "Control": Qt.KeyboardModifier.ControlModifier}


def key(viewer, combo):
    """Press a key in napari's syntax (``'G'``, ``'Shift-Enter'``, ``'Control-Z'``) on the
    canvas, as a person does with the canvas focused."""
    *mods, name = combo.split("-")
    modifiers = NO_MOD
    for m in mods:
        modifiers |= _MODS[m]
    code = _KEYS.get(name) or getattr(Qt.Key, f"Key_{name.upper()}")
    native = canvas(viewer)
    native.setFocus()
    QTest.keyClick(native, code, modifiers)
    settle()


def click_list_row(list_widget, row):
    """A mouse click on row ``row`` of a QListWidget."""
    rect = list_widget.visualItemRect(list_widget.item(row))
    QTest.mouseClick(list_widget.viewport(), LEFT, NO_MOD, rect.center())
    settle()


def wait_idle(qtbot, widget, timeout=60000):
    """Wait until the annotation widget's background work is done and delivered."""
    jobs = getattr(widget, "jobs", None)  # older widgets ran jobs on the UI thread

    def idle():
        training = getattr(widget, "training", getattr(widget, "train_worker", None))
        return ((jobs is None or jobs.idle) and training is None and widget.fit_worker is None
                and getattr(widget, "validation", None) is None)

    qtbot.waitUntil(idle, timeout=timeout)
    settle()
