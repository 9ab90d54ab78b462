"""How much of the shape prior a fit around pinned landmarks uses, chosen on held-out images.

A person corrects a fit by moving a landmark (which pins it) and re-fits the rest
(:meth:`napari_gsm.model.Model.fit` with ``pinned``). The shape prior's weight at the
finest target width is then scaled by ``GSMParams.refit_scale``
(:func:`napari_gsm.methods.gsm.prior_scale` says why); training chooses the scale the way
it chooses ``lam``: by simulating that re-fit on training images held out of the detectors
and keeping the scale under which the other landmarks end up closest to their truth.
"""

from __future__ import annotations

import numpy as np

__all__ = ["REFIT_SCALES", "choose_refit_scale"]

REFIT_SCALES = (0.0625, 0.125, 0.25, 0.5, 1.0, 2.0)
#: About this many (image, pinned landmark) re-fits are simulated per scale.
CASES = 60


def choose_refit_scale(model, held, rng, grid=REFIT_SCALES, runner=None):
    """The ``refit_scale`` under which a pinned re-fit places the other landmarks best.

    Each held-out sample (``Sample``: image, true points) is fitted from the start a
    fit without a box or points uses (:meth:`~napari_gsm.model.Model.start`); then, for
    landmarks ``k`` drawn at random (about :data:`CASES` in all; drawn here from ``rng``),
    ``k`` is put at its truth, pinned, and the shape re-fitted from there with every scale
    of the grid (:func:`~napari_gsm.training.refit_errors`, where ``runner`` runs it;
    default: here). The scale with the lowest mean error of the other landmarks, in shape
    sizes, wins; the errors are kept in ``model.summary['refit_validation']``.
    """
    from .training import grid_errors, refit_errors

    per_image = -(-CASES // max(len(held), 1))
    pins = [rng.permutation(np.flatnonzero(np.isfinite(smp.points).all(1)))[:per_image]
            for smp in held]
    errors = grid_errors(runner, refit_errors, model, held, pins, grid,
                         "choosing the re-fit scale")
    model.summary["refit_validation"] = {f"{s:g}": round(float(e), 5)
                                         for s, e in zip(grid, errors)}
    return float(grid[int(np.argmin(errors))])
