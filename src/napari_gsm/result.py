"""What a fit returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["FitResult"]


@dataclass
class FitResult:
    """The outcome of fitting one image.

    Attributes
    ----------
    points : (v, 2) array
        Final landmarks, ``(x, y)`` 0-based image pixels.
    n_iter : int
        Iterations (GSM, CLM) or cascade levels (GSM-CR) run.
    converged : bool
        Whether the stopping rule fired before the iteration limit.
    fit_ms : float
        Wall time of the fit in milliseconds, from the decoded image and the start to the
        final points (start included when it was computed, e.g. a face detection).
    history : list of (v, 2) arrays
        The start and the shape after every iteration.
    costs : list of float
        Cost before every iteration (empty for methods without a cost).
    pose : (4,) array
        Final pose ``(a, b, tx, ty)`` mapping the image into the reference frame.
    method : str
    init : str
        How the start was obtained ('detect', 'box', 'prior', 'points'; 'track' for the
        previous video frame's fit, see :func:`napari_gsm.track.track`).
    start : (v, 2) array or None
        The starting shape.
    extra : dict
        Method-specific outputs (e.g. GSM 2D+3D head pose and 3D landmarks).
    confidence : Confidence or None
        How much to trust each landmark (:class:`~napari_gsm.confidence.Confidence`),
        filled by :meth:`napari_gsm.model.Model.fit`; None when the model has no
        calibration or the fit was asked not to compute it.
    """

    points: np.ndarray
    n_iter: int
    converged: bool
    fit_ms: float
    history: list = field(default_factory=list)
    costs: list = field(default_factory=list)
    pose: np.ndarray = None
    method: str = ""
    init: str = ""
    start: np.ndarray = None
    extra: dict = field(default_factory=dict)
    confidence: object = None

    def to_json(self):
        """A JSON-serialisable summary (points as nested lists)."""
        out = {
            "method": self.method,
            "init": self.init,
            "n_iter": int(self.n_iter),
            "converged": bool(self.converged),
            "fit_ms": round(float(self.fit_ms), 3),
            "points": np.round(self.points, 4).tolist(),
        }
        for k, val in self.extra.items():
            out[k] = val.tolist() if isinstance(val, np.ndarray) else val
        out["confidence"] = None if self.confidence is None else self.confidence.to_json()
        return out
