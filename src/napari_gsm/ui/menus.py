"""The commands napari's menus call (npe2 ``menus`` contributions in ``napari.yaml``).

*Layers > Annotate*: train from layers, fit landmarks, save to a training set; *Layers >
Track*: track landmarks through a stack; and the same on a layer's right-click menu in the
layer list (fit and track on an Image layer, train and save on a Points layer). Each docks
the matching widget (once) with the selected layer chosen; fit and track start at once when
a model is there.

The right-click items are added at run time: see :mod:`.context_menu`.
"""

from __future__ import annotations

import napari
from napari.layers import Image, Points

from .context_menu import add_layer_context_items
from .fit_layers import SCOPES
from .layers_common import pair_for

__all__ = ["train_from_layers", "fit_image_layer", "track_image_layer", "save_to_training_set",
           "WIDGET_NAMES"]

PLUGIN = "napari-gsm"
#: Display names of the layer docks in the manifest.
WIDGET_NAMES = {"train": "Train from layers", "fit": "Fit image layers",
                "save": "Save to training set"}


def _dock(viewer, which):
    add_layer_context_items()
    return viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET_NAMES[which])[1]


def _active(viewer, kind):
    """The selected layer of that kind, or the one that goes with the selected layer."""
    layer = viewer.layers.selection.active
    if isinstance(layer, kind):
        return layer
    return pair_for(viewer, layer) if layer is not None else None


def _dock_for_points(viewer, which):
    """Dock ``which`` with the selected Points layer (and, by pairing, its image) chosen."""
    widget = _dock(viewer, which)
    points = _active(viewer, Points)
    if points is not None:
        widget.points.reset_choices()
        widget.points.value = points
    return widget


def train_from_layers(viewer: napari.Viewer):
    """Dock *Train from layers* with the selected Points layer (and its image) chosen."""
    return _dock_for_points(viewer, "train")


def _fit(viewer, scope):
    widget = _dock(viewer, "fit")
    widget.select(_active(viewer, Image), scope)
    if widget.ready():
        widget.fit()
    else:
        widget.status.value = ("choose a model (train one from layers, or load a file), "
                               "then Fit")
    return widget


def fit_image_layer(viewer: napari.Viewer):
    """Fit the selected image's current frame with the session's model."""
    return _fit(viewer, SCOPES[0])


def track_image_layer(viewer: napari.Viewer):
    """Track landmarks through the selected stack from its current frame."""
    return _fit(viewer, SCOPES[2])


def save_to_training_set(viewer: napari.Viewer):
    """Dock *Save to training set* with the selected Points layer (and its image) chosen."""
    return _dock_for_points(viewer, "save")
