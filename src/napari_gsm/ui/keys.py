"""Every keyboard shortcut of the annotation widget, in one table.

The keys are bound on the viewer (so they work whichever layer is selected) and the same
table is shown in the widget. They avoid napari's own layer keys: the Points layer uses
1-5, P, S, Z, A, V, Delete and Backspace; the Shapes layer (the start box) also R, E, L,
T, D, F, B and Enter; the viewer Left/Right and Ctrl+ combinations for menus.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

__all__ = ["Shortcut", "SHORTCUTS", "bind_keys", "unbind_keys", "shortcuts_html"]


@dataclass(frozen=True)
class Shortcut:
    """A key (napari key-binding syntax), the widget method it calls, and what it does."""

    key: str
    action: str
    description: str

    @property
    def label(self) -> str:
        """The key as shown to people (``Control-Z`` -> ``Ctrl+Z``)."""
        return self.key.replace("Control", "Ctrl").replace("-", "+")


SHORTCUTS = (
    Shortcut("N", "next_image", "next image"),
    Shortcut("Shift-N", "previous_image", "previous image"),
    Shortcut("U", "next_unannotated", "next image still to annotate"),
    Shortcut("]", "skip_landmark", "skip: the next click places the next landmark"),
    Shortcut("[", "back_landmark", "back: the next click places the previous landmark"),
    Shortcut("G", "fit", "fit the landmarks (start from the chosen source)"),
    Shortcut("Shift-G", "refit", "re-fit the free landmarks, pinned ones held"),
    Shortcut("K", "toggle_pin", "pin / unpin the selected landmarks"),
    Shortcut("J", "next_to_check_landmark",
             "next fitted landmark to check, least confident first"),
    Shortcut("Shift-Enter", "accept", "accept: save .pts, update the model, go on"),
    Shortcut("Control-Z", "undo", "undo a landmark edit"),
    Shortcut("Control-Shift-Z", "redo", "redo"),
    Shortcut("H", "toggle_names", "show / hide landmark names"),
)


def _caller(widget, action):
    # napari passes the viewer; the widget already knows it.
    def call(viewer=None):
        getattr(widget, action)()

    call.__name__ = f"napari_gsm_{action}"
    call.__doc__ = next(s.description for s in SHORTCUTS if s.action == action)
    return call


def bind_keys(viewer, widget):
    """Bind every shortcut on ``viewer`` to the method of ``widget`` named in the table.

    Returns
    -------
    dict
        Key binding -> the bound function, for :func:`unbind_keys`.
    """
    from napari.utils.key_bindings import coerce_keybinding

    bound = {}
    for s in SHORTCUTS:
        if not callable(getattr(widget, s.action, None)):
            raise AttributeError(f"the widget has no action {s.action!r} for {s.key}")
        func = _caller(widget, s.action)
        viewer.bind_key(s.key, func, overwrite=True)
        bound[coerce_keybinding(s.key)] = func
    return bound


def unbind_keys(viewer, bound):
    """Remove the bindings made by :func:`bind_keys` that are still in place.

    A key since re-bound by another widget (a second copy of this one) is left alone.
    """
    for key, func in bound.items():
        if viewer.keymap.get(key) is func:
            viewer.bind_key(key, None)


def shortcuts_html() -> str:
    """The table as a small HTML table for a QLabel."""
    rows = "".join(f"<tr><td><b>{escape(s.label)}</b>&nbsp;&nbsp;</td><td>{escape(s.description)}</td></tr>"
                   for s in SHORTCUTS)
    extra = ("<tr><td><b>click</b>&nbsp;&nbsp;</td><td>place the next landmark "
             "(landmarks layer in add mode, P)</td></tr>"
             "<tr><td><b>drag</b>&nbsp;&nbsp;</td><td>move a landmark (select mode, S); "
             "it becomes pinned</td></tr>")
    return f"<table cellspacing='0' cellpadding='1'>{rows}{extra}</table>"
