"""The ``napari-gsm`` command: train, fit, evaluate and the demo.

::

    napari-gsm train DATA_DIR... --method gsm -o model.npz
    napari-gsm fit model.npz IMAGE_OR_DIR... -o OUT_DIR [--unannotated] [--overwrite]
                   [--workers N | --scheduler ADDRESS] [--json]
    napari-gsm evaluate model.npz DATA_DIR [--norm auto] [--workers N | --scheduler ADDRESS]
                        [--json]
    napari-gsm demo [--out out/demo] [--no-viewer]

Mistakes a user can make (a missing or malformed file, a corrupt model, a landmark count
that does not match) end with one line ``napari-gsm: error: <file>: <what is wrong>`` and
exit status 2, like argparse's own usage errors. Results go to stdout (with ``--json``
exactly one JSON document); progress and warnings go to stderr. Errors people read are in
percent of the normaliser (NME), as are the JSON fields ending in ``_pct``.

Nothing here imports napari, except the demo's final step that opens the viewer, nor Dask,
except with ``--workers`` or ``--scheduler`` (:mod:`napari_gsm.distributed`).
"""

from ._output import CLIError
from ._parser import build_parser, main

__all__ = ["main", "build_parser", "CLIError"]
