"""Accuracy metrics against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_gsm.evaluate import (auc, ced, failure_rate, nme, normaliser, parse_norm,
                                 point_errors, summarise)


def test_point_errors_known_distances():
    truth = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    pred = np.array([[3.0, 4.0], [1.0, 1.0], [np.nan, 2.0]])
    e = point_errors(pred, truth)
    np.testing.assert_allclose(e[:2], [5.0, 0.0])
    assert np.isnan(e[2])
    with pytest.raises(ValueError):
        point_errors(pred[:2], truth)


def _face68(rng):
    pts = rng.uniform(0, 100, (68, 2))
    pts[36] = [10.0, 20.0]
    pts[45] = [40.0, 60.0]  # 30-40-50 triangle: eye distance 50
    return pts


def test_eye_normaliser_and_auto_on_68_points():
    truth = _face68(np.random.default_rng(0))
    assert normaliser(truth, "eyes") == pytest.approx(50.0)
    assert normaliser(truth, "auto") == pytest.approx(50.0)
    # every landmark off by (3, 4): error 5 px, NME 5 / 50
    assert nme(truth + [3.0, 4.0], truth) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="68"):
        normaliser(truth[:12], "eyes")


def test_pair_and_diagonal_normalisers():
    truth = np.array([[0.0, 0.0], [6.0, 0.0], [6.0, 8.0], [1.0, 2.0]])
    assert normaliser(truth, "diagonal") == pytest.approx(10.0)
    assert normaliser(truth, "auto") == pytest.approx(10.0)  # not 68 points -> diagonal
    assert normaliser(truth, ("pair", 1, 2)) == pytest.approx(8.0)
    assert parse_norm("pair:1,2") == ("pair", 1, 2)
    with pytest.raises(ValueError):
        normaliser(truth, ("pair", 1, 1))
    with pytest.raises(ValueError):
        parse_norm("pair:1")
    # a missing landmark is ignored both in the diagonal and in the mean error
    truth_nan = truth.copy()
    truth_nan[2] = np.nan
    assert normaliser(truth_nan, "diagonal") == pytest.approx(np.hypot(6.0, 2.0))
    pred = truth_nan + [[1.0, 0.0], [2.0, 0.0], [0.0, 0.0], [3.0, 0.0]]
    assert nme(pred, truth_nan, ("pair", 0, 1)) == pytest.approx(2.0 / 6.0)


def test_auc_hand_computed():
    # CED over [0, 0.08]: 0 up to 0.02, 1/3 up to 0.04, 2/3 up to 0.08; the third image
    # (0.1) and a NaN never count. Area = (1/4)(0.02) + (2/4)(0.04) = 0.025 over 4 images.
    errors = [0.02, 0.04, 0.1, np.nan]
    area = 0.25 * (0.04 - 0.02) + 0.5 * (0.08 - 0.04)
    assert auc(errors, 0.08) == pytest.approx(area / 0.08)
    assert auc(errors, 0.08) == pytest.approx(0.3125)
    assert auc([0.0, 0.0], 0.08) == pytest.approx(1.0)
    assert auc([0.08, 1.0], 0.08) == pytest.approx(0.0)


def test_auc_matches_fine_ced_integral():
    e = np.random.default_rng(1).uniform(0, 0.12, 50)
    t, f = ced(e, 0.08, n=200001)
    assert t[0] == 0 and t[-1] == pytest.approx(0.08)
    assert np.all(np.diff(f) >= 0)
    assert auc(e) == pytest.approx(np.trapezoid(f, t) / 0.08, abs=1e-4)


def test_ced_failure_rate_and_summary():
    errors = [0.02, 0.04, 0.1, np.nan]
    t, f = ced(errors, 0.08, n=5)  # thresholds 0, .02, .04, .06, .08
    np.testing.assert_allclose(t, [0, 0.02, 0.04, 0.06, 0.08])
    np.testing.assert_allclose(f, [0, 0.25, 0.5, 0.5, 0.5])
    assert failure_rate(errors, 0.08) == pytest.approx(0.5)
    assert failure_rate([0.08], 0.08) == 0.0  # at the cut-off is not a failure
    s = summarise(errors)
    assert s["n"] == 4
    assert s["mean"] == pytest.approx(np.mean([0.02, 0.04, 0.1]))
    assert s["median"] == pytest.approx(0.04)
    assert s["auc"] == pytest.approx(0.3125)
    assert s["failure_rate"] == pytest.approx(0.5)
