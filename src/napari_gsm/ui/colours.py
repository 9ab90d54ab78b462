"""The one colour table for landmarks, used by the reader, the sample data and the widgets.

Landmark ``i`` is drawn in ``LANDMARK_COLOR_CYCLE[i % 12]`` everywhere, so the same landmark
has the same colour in a layer opened from a file and in the annotation widget. The cycle is
matplotlib's tab10 followed by two distinct extras: neighbouring landmarks (which sit next to
each other on most layouts) always differ.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LANDMARK_COLOR_CYCLE", "UNCERTAIN_COLOUR", "UNCERTAIN_SCALE", "landmark_colours",
           "landmark_colormap", "uncertain_rgba"]

LANDMARK_COLOR_CYCLE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf", "#ffff33", "#00ff7f",
)


def _rgba(hex_colour):
    h = hex_colour.lstrip("#")
    return (int(h[0:2], 16) / 255.0, int(h[2:4], 16) / 255.0, int(h[4:6], 16) / 255.0, 1.0)


#: The ring of a fitted landmark that is likely off: a colour no landmark has, and a size.
UNCERTAIN_COLOUR = "#ff00ff"
UNCERTAIN_SCALE = 1.8


_RGBA = np.array([_rgba(c) for c in LANDMARK_COLOR_CYCLE])


def uncertain_rgba() -> np.ndarray:
    """RGBA ``(4,)`` of :data:`UNCERTAIN_COLOUR`."""
    return np.array(_rgba(UNCERTAIN_COLOUR))


def landmark_colours(indices) -> np.ndarray:
    """RGBA colours ``(n, 4)`` of the landmarks with these 0-based indices."""
    indices = np.asarray(indices, int).reshape(-1)
    return _RGBA[indices % len(_RGBA)].copy()


def landmark_colormap(v: int) -> dict:
    """A napari categorical colormap on the ``landmark`` feature for ``v`` landmarks."""
    return {"colormap": {i: LANDMARK_COLOR_CYCLE[i % len(LANDMARK_COLOR_CYCLE)]
                         for i in range(max(v, 128))},
            "fallback_color": list(LANDMARK_COLOR_CYCLE)}
