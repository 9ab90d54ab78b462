"""Batch fitting in this process or on a Dask cluster, from a laptop's cores to many machines.

::

    from napari_gsm.distributed import connect, fit_paths

    with connect(workers=2) as client:   # or scheduler="tcp://host:8786"; neither: None
        for done in fit_paths("model.npz", paths, client=client):
            done.index, done.result.points, done.error   # as each image finishes

With ``client=None`` the images are fitted here, one after the other, in order, and Dask is
never imported. With a client the model file's bytes go to each worker once (a worker
plugin, so a worker that joins or is restarted later gets them too, and loads the model
from them as from any model file, never by unpickling), the images' *paths* travel and
the workers read the pixels, and a sliding window keeps each worker busy without queueing
the whole batch on the scheduler. Dask runs a task again when its worker dies; a task
whose workers keep dying (an image that runs a worker out of memory) ends the job with
:class:`ClusterError`, which names the image.

Training takes the same client (``napari_gsm.model.train(..., client=client)``): the
workers read the training images and return sums over them (:class:`OnCluster`).
"""

from ._client import ClusterError, connect, describe
from ._fit import Fitted, Start, fit_file, fit_paths
from ._model import ModelFile
from ._train import OnCluster

__all__ = ["connect", "describe", "ClusterError", "fit_paths", "fit_file", "Fitted", "Start",
           "ModelFile", "OnCluster"]
