"""Fitting images given by path: one image (:func:`fit_file`), or many (:func:`fit_paths`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._model import ModelFile

__all__ = ["Start", "Fitted", "fit_file", "fit_paths"]


@dataclass(frozen=True, eq=False)
class Start:
    """How one image's fit starts; small, so it travels with the image's path.

    Given ``points`` win, then a ``box``, then ``init`` ('auto', 'detect', 'prior'; see
    :meth:`napari_gsm.model.Model.start`, also for ``box_kind``).
    """

    init: str = "auto"
    box: np.ndarray | None = None
    points: np.ndarray | None = None
    box_kind: str = "landmarks"
    off_fraction: float | None = None  # the fit's confidence threshold (Model.fit's)

    def fit(self, model, image):
        """Fit ``image``; returns ``(FitResult, label)``, the label naming the start used
        (``'prior (no face found)'`` when a face model's detector found no face)."""
        def fit(init, **kw):
            return model.fit(image, init, history=False, off_fraction=self.off_fraction, **kw)

        if self.points is not None:
            return fit("points", points=self.points), "points"
        if self.box is not None:
            res = fit("box", box=self.box, box_kind=self.box_kind)
            return res, res.init
        if self.init == "detect":
            try:
                return fit("detect"), "detect"
            except LookupError:
                return fit("prior"), "prior (no face found)"
        res = fit(self.init)
        if (self.init == "auto" and res.init == "prior"
                and model.starts.face_source == "viola-jones"):
            # auto with a face model only falls back to the prior when no face is found
            return res, "prior (no face found)"
        return res, res.init


@dataclass
class Fitted:
    """What fitting one image gave.

    Attributes
    ----------
    index : int
        The image's position in the list given to :func:`fit_paths`.
    path : pathlib.Path
    result : FitResult or None
        None when the image could not be fitted (see ``error``). Without ``history``.
    label : str or None
        The start used (:meth:`Start.fit`).
    error : str or None
        Why the image could not be fitted, naming the file (it cannot be read or decoded,
        or is too small).
    read_ms : float
        Time to read and decode the image, milliseconds (``result.fit_ms`` is the fit's).
    """

    index: int
    path: Path
    result: object = None
    label: str | None = None
    error: str | None = None
    read_ms: float = 0.0


def fit_file(model, path, start=None, index=0):
    """Read the image at ``path`` and fit ``model`` to it (one BLAS thread).

    An image that cannot be read, or is too small, gives a :class:`Fitted` with ``error``
    set; anything else that goes wrong raises.
    """
    from ..io import ImageFileError, read_image
    from ..model import check_image_size

    path = Path(path)
    t0 = time.perf_counter()
    try:
        image = read_image(path)
        check_image_size(image, str(path))
    except (ImageFileError, ValueError) as exc:  # only these two calls' user errors
        return Fitted(index, path, error=str(exc), read_ms=_ms(t0))
    read_ms = _ms(t0)
    result, label = (start or Start()).fit(model, image)
    return Fitted(index, path, result, label, read_ms=read_ms)


def _ms(t0):
    return (time.perf_counter() - t0) * 1e3


def fit_paths(model, paths, starts=None, *, client=None):
    """Fit the images at ``paths``; yield a :class:`Fitted` for each as it finishes.

    Parameters
    ----------
    model : str, os.PathLike or ModelFile
        The model file.
    paths : sequence of str or os.PathLike
        Images. With a client the workers read them, so they must see them at the same
        paths (a shared file system); relative paths are made absolute here.
    starts : Start or sequence of Start, optional
        One for every image, or one per image (default: ``Start()``, 'auto').
    client : distributed.Client, optional
        None: fit in this process, one image after the other, in order (Dask is not
        imported). Else on that client's cluster (:func:`connect` makes one), a few images
        per task (up to 8, fewer for small batches: a task's own cost is spread over its
        images), in the order the tasks finish.

    Yields
    ------
    Fitted

    Raises
    ------
    ClusterError
        When Dask cannot finish the job (an image on which every worker that tried it
        died, a lost scheduler, workers that cannot load the model); the images yielded
        before stay valid.

    Notes
    -----
    Closing the generator early (``break``, an exception in the loop) cancels the images
    still queued on the cluster.
    """
    mf = model if isinstance(model, ModelFile) else ModelFile(model)
    paths = [Path(p) for p in paths]
    if starts is None or isinstance(starts, Start):
        starts = [starts or Start()] * len(paths)
    starts = list(starts)
    if len(starts) != len(paths):
        raise ValueError(f"{len(starts)} starts for {len(paths)} images")
    if client is None:
        for i, (path, start) in enumerate(zip(paths, starts)):
            yield fit_file(mf.model, path, start, i)
        return
    from ._dask import fit_on_cluster

    yield from fit_on_cluster(client, mf, [p.absolute() for p in paths], starts)
