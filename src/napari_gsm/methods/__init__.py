"""Fitting methods, one module each, behind one interface.

Each :class:`Method` has ``fit(model, pyramid, start, *, pinned, history, **kw) -> FitResult``,
optionally ``train(model, samples, *, progress, **kw) -> state`` for what it learns beyond
the shared shape model and detectors, and ``load(arrays, params) -> state`` to read that
state back from a model file. A state object has ``to_arrays()`` and ``params()``. With
``train_folds``, ``train`` also takes ``folds`` (groups of sample indices) and leaves in
``state.fold_states`` the state learned without each group, for the confidence
calibration's cross-validated fits (:mod:`napari_gsm.crossfit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .cascade import fit_cascade, load_cascade
from .cascade_train import train_cascade
from .clm import fit_clm
from .gsm import GSMParams, fit_gsm
from .gsm3d import fit_gsm3d, load_gsm3d, train_gsm3d

__all__ = ["Method", "METHODS", "GSMParams"]


@dataclass(frozen=True)
class Method:
    name: str
    fit: Callable
    train: Callable | None = None
    load: Callable | None = None
    description: str = ""
    train_folds: bool = False


METHODS = {
    "gsm": Method("gsm", fit_gsm, description="GSM 2D: Newton on (s, theta), Algorithm 1"),
    "clm": Method("clm", fit_clm, description="CLM baseline: response maps + regularised "
                  "mean-shift (SCMS), same detectors and prior, section 2.3.3"),
    "gsm-cr": Method("gsm-cr", fit_cascade, train=train_cascade, load=load_cascade,
                     description="GSM-CR: cascade regression on GSM features, Algorithms 3-4",
                     train_folds=True),
    "gsm3d": Method("gsm3d", fit_gsm3d, train=train_gsm3d, load=load_gsm3d,
                    description="GSM 2D+3D: GSM plus an NRSfM 3D shape prior and a "
                    "scaled-orthographic projection residual, Algorithm 2"),
}
