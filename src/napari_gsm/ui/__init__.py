"""Everything napari: reader, writer, sample data (and, later, widgets and key bindings).

Nothing outside this package imports napari or Qt. The modules here are loaded lazily by
napari through the npe2 manifest (``napari.yaml``), so importing :mod:`napari_gsm.ui` stays
cheap and does not import napari itself.
"""

from .launch import launch  # cheap: napari is imported only when launch() runs
