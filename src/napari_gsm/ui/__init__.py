"""Everything napari: reader, writer, sample data (and, later, widgets and key bindings).

Nothing outside this package imports napari or Qt. The modules here are loaded lazily by
napari through the npe2 manifest (``napari.yaml``), so importing :mod:`napari_gsm.ui` stays
cheap and does not import napari itself.
"""


def __getattr__(name):  # lazy: `from napari_gsm.ui import launch` imports napari only then
    if name == "launch":
        from .launch import launch

        return launch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
