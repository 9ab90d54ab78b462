"""Re-fits around pinned landmarks: the others must not get worse, pins stay exact."""

from dataclasses import replace

import numpy as np
import pytest

from napari_gsm import GSMParams, TrainParams, train
from napari_gsm.features import Pyramid
from napari_gsm.methods.gsm import REFIT_SCALE_DEFAULT, fit_gsm, prior_scale
from napari_gsm.refit import REFIT_SCALES
from synthetic import make_set


PARAMS = TrainParams(features="grey", ref_size=20.0, sigma=2.0)


@pytest.fixture(scope="module")
def few_model():
    # Ten images: too few to hold any out, so lam and refit_scale are the defaults.
    return train(make_set(10, seed=3), "gsm", params=PARAMS)


def _pin_each_at_truth(model, image, truth, first):
    """Others' mean error before and after re-fitting with each landmark pinned in turn."""
    v = len(truth)
    out = []
    for k in range(v):
        pinned = np.arange(v) == k
        points = first.copy()
        points[k] = truth[k]
        res = model.fit(image, "points", points=points, pinned=pinned)
        np.testing.assert_array_equal(res.points[k], truth[k])
        out.append((np.linalg.norm(first - truth, axis=1)[~pinned].mean(),
                    np.linalg.norm(res.points - truth, axis=1)[~pinned].mean()))
    return np.array(out)


def test_pinning_a_landmark_at_its_truth_does_not_hurt_the_others(few_model):
    # Six new images are fitted from the prior placement, then every landmark in turn is
    # put at its truth and the rest re-fitted, as the widget's "Re-fit with pins" does.
    # Before the re-fit had its own prior scale, the pin dragged the others along through
    # the re-estimated pose: +0.04 px on average here, 88 % of the re-fits worse.
    errors = np.concatenate([_pin_each_at_truth(few_model, image, truth,
                                                few_model.fit(image, "prior").points)
                             for image, truth in make_set(6, seed=103)])
    change = errors[:, 1] - errors[:, 0]
    assert change.mean() < 0
    assert (change > 0).mean() < 0.5


def test_prior_scale_applies_only_at_the_finest_width_of_a_fit_with_pins():
    params = GSMParams(lam=0.1, refit_scale=0.125)
    pins = np.array([False, True, False])
    assert prior_scale(params, pins, 1, 2) == 0.125
    assert prior_scale(params, pins, 0, 2) == 1.0  # wide targets keep lam
    assert prior_scale(params, None, 1, 2) == 1.0
    assert prior_scale(params, np.zeros(3, bool), 1, 2) == 1.0
    # model files from before the scale existed get the default
    assert prior_scale(GSMParams(lam=0.1), pins, 1, 2) == REFIT_SCALE_DEFAULT


def test_fits_without_pins_do_not_depend_on_the_refit_scale(few_model):
    image, _ = make_set(1, seed=104)[0]
    pyramid = Pyramid(image)
    start = few_model.start(image, "prior")[0]
    fits = [fit_gsm(few_model, pyramid, start,
                    params=replace(few_model.gsm_params, refit_scale=scale)).points
            for scale in (0.0625, 2.0)]
    np.testing.assert_array_equal(*fits)


def test_training_chooses_the_refit_scale_on_held_out_images(few_model):
    assert few_model.gsm_params.refit_scale == REFIT_SCALE_DEFAULT  # nothing to hold out
    many = train(make_set(24, seed=3), "gsm", params=PARAMS)
    validation = many.summary["refit_validation"]
    assert list(validation) == [f"{s:g}" for s in REFIT_SCALES]
    best = min(validation, key=validation.get)
    assert many.gsm_params.refit_scale == float(best)
    given = train(make_set(24, seed=3), "gsm", gsm_params=GSMParams(refit_scale=0.3),
                  params=PARAMS)
    assert given.gsm_params.refit_scale == 0.3
