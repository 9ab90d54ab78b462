"""napari-gsm: semi-automatic landmark annotation with the Gradient Shape Model.

The core (this package minus :mod:`napari_gsm.ui`) imports neither napari nor Qt.
"""

from .io import load_dataset, read_pts, write_pts
from .methods import GSMParams
from .model import Model, TrainParams, load_model, train
from .result import FitResult
from .track import TrackResult, track

__version__ = "0.1.0"

__all__ = [
    "load_dataset",
    "read_pts",
    "write_pts",
    "train",
    "load_model",
    "Model",
    "TrainParams",
    "GSMParams",
    "FitResult",
    "track",
    "TrackResult",
]
