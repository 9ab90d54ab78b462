"""The plugin's items in the layer list's right-click menu.

napari 0.9 takes plugin menu items from an npe2 manifest only for the *Layers* menu's
submenus (``MenuId.contributables``); the layer list's right-click menu is not open to
manifests. :func:`add_layer_context_items` adds the items there at run time, as soon as any
part of the plugin is used in the session (a dock, the reader, a menu command): fit and
track on an Image layer, train and save on a Points layer.
"""

from __future__ import annotations

__all__ = ["add_layer_context_items", "CONTEXT_ITEMS"]

#: The layer list's right-click items: command id and when it is offered.
CONTEXT_ITEMS = (("napari-gsm.fit_image_layer", "active_layer_type == 'image'"),
                 ("napari-gsm.track_image_layer", "active_layer_type == 'image'"),
                 ("napari-gsm.train_from_layers", "active_layer_type == 'points'"),
                 ("napari-gsm.save_to_training_set", "active_layer_type == 'points'"))
_CONTEXT_GROUP = "9_napari_gsm"


def add_layer_context_items():
    """Put the plugin's actions in the layer list's right-click menu (once per session).

    Returns True when they are there. napari's application model is not a public API: if it
    changes, the items stay in the Layers menu only and nothing else breaks.
    """
    try:
        from app_model.expressions import parse_expression
        from app_model.types import CommandRule, MenuItem
        from napari._app_model import get_app_model
        from napari._app_model.constants import MenuId

        app = get_app_model()
        present = {getattr(getattr(i, "command", None), "id", None)
                   for i in app.menus.get_menu(MenuId.LAYERLIST_CONTEXT)}
        missing = [(cid, when) for cid, when in CONTEXT_ITEMS
                   if cid not in present and cid in app.commands]
        app.menus.append_menu_items(
            [(MenuId.LAYERLIST_CONTEXT,
              MenuItem(command=CommandRule(id=cid, title=app.commands[cid].title),
                       when=parse_expression(when), group=_CONTEXT_GROUP))
             for cid, when in missing])
        return all(cid in present or cid in dict(missing) for cid, _ in CONTEXT_ITEMS)
    except Exception:  # noqa: BLE001 - a private API: never break the plugin over a menu
        return False
