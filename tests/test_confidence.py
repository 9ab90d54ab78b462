"""Per-landmark confidence: its features, its calibration, training-time cross-fits, files."""

from __future__ import annotations

import numpy as np
import pytest

from napari_gsm import GSMParams, TrainParams, load_model, train
from napari_gsm.calibration import MIN_IMAGES, Calibration, fit_logistic, logistic_loss
from napari_gsm.confidence import (FAILED_SHARE, OFF_FRACTION, _conditional_deviation,
                                   _laplace, _peak_offset, assess, bbox_diagonal,
                                   landmark_features)
from napari_gsm.crossfit import fold_out
from napari_gsm.evaluate import auroc, calibration_error, catch_rate, normaliser
from napari_gsm.features import Pyramid
from napari_gsm.io import load_model_file, save_model_file
from napari_gsm.model import Sample
from napari_gsm.quality import fit_warnings
from synthetic import make_set


@pytest.fixture(scope="module")
def data():
    return make_set(44, seed=11)


@pytest.fixture(scope="module")
def plain(data):
    """A GSM model of 20 images without a calibration (features only)."""
    return train(data[:20], "gsm", params=TrainParams(features="grey"),
                 gsm_params=GSMParams(lam=0.1), calibrate=False)


@pytest.fixture(scope="module")
def calibrated(data):
    """A GSM model of 20 images, calibrated on its cross-validated fits."""
    return train(data[:20], "gsm", params=TrainParams(features="grey"))


# -- the pieces, against their definitions ------------------------------------------------

def test_logistic_gradient_and_hessian_match_finite_differences():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(60, 4))
    group = rng.integers(0, 3, 60)
    y = (rng.random(60) < 0.4).astype(float)
    ridge = np.array([1.0, 0.5, 0.0, 2.0, 1.0, 0.0, 3.0])
    theta = rng.normal(size=7)
    # the same model with the one-hot group columns written out
    dense = np.hstack([A, np.eye(3)[group]])
    z = dense @ theta
    assert logistic_loss(theta, A, group, y, ridge)[0] == pytest.approx(
        np.sum(np.log1p(np.exp(z)) - y * z) + 0.5 * np.sum(ridge * theta ** 2))
    _, g, H = logistic_loss(theta, A, group, y, ridge)
    h = 1e-6
    for j in range(7):
        e = np.zeros(7)
        e[j] = h
        lp, gp, _ = logistic_loss(theta + e, A, group, y, ridge)
        lm, gm, _ = logistic_loss(theta - e, A, group, y, ridge)
        assert (lp - lm) / (2 * h) == pytest.approx(g[j], rel=1e-6, abs=1e-6)
        np.testing.assert_allclose((gp - gm) / (2 * h), H[:, j], rtol=1e-5, atol=1e-6)
    # and Newton's method finds the zero of that gradient
    best = fit_logistic(A, group, y, ridge)
    assert np.abs(logistic_loss(best, A, group, y, ridge)[1]).max() < 1e-6


def test_conditional_deviation_is_the_gaussian_conditional():
    rng = np.random.default_rng(1)
    v = 6
    M = rng.normal(size=(2 * v, 2 * v))
    cov = M @ M.T + 0.5 * np.eye(2 * v)
    r = rng.normal(size=2 * v)
    dev = _conditional_deviation(np.linalg.inv(cov), r)
    for i in range(v):
        own = [i, v + i]
        rest = [j for j in range(2 * v) if j not in own]
        K = cov[np.ix_(own, rest)] @ np.linalg.inv(cov[np.ix_(rest, rest)])
        mean = K @ r[rest]
        C = cov[np.ix_(own, own)] - K @ cov[np.ix_(rest, own)]
        d = r[own] - mean
        assert dev[i] == pytest.approx(np.sqrt(d @ np.linalg.solve(C, d)), rel=1e-8)


def test_laplace_blocks_are_the_inverse_hessian_on_the_free_parameters():
    rng = np.random.default_rng(2)
    v = 5
    n = 2 * v + 4
    M = rng.normal(size=(n, n))
    H = M @ M.T + np.eye(n)
    g = rng.normal(size=n)
    post, step = _laplace(g, H, v, None)
    C = np.linalg.inv(H)
    s = -C @ g
    for i in range(v):
        assert post[i] == pytest.approx(np.sqrt(C[i, i] + C[v + i, v + i]), rel=1e-8)
        assert step[i] == pytest.approx(np.hypot(s[i], s[v + i]), rel=1e-8)
    pinned = np.zeros(v, bool)
    pinned[[1, 3]] = True
    post, step = _laplace(g, H, v, pinned)
    free = np.r_[~pinned, ~pinned, np.ones(4, bool)]
    Cf = np.zeros((n, n))
    Cf[np.ix_(free, free)] = np.linalg.inv(H[np.ix_(free, free)])
    assert post[1] == 0 and step[3] == 0
    assert post[0] == pytest.approx(np.sqrt(Cf[0, 0] + Cf[v, v]), rel=1e-8)


def test_peak_offset_is_where_the_detectors_quadratic_model_peaks():
    rng = np.random.default_rng(3)
    for _ in range(20):
        M = rng.normal(size=(2, 2))
        H = M @ M.T + 0.5 * np.eye(2)
        delta = rng.normal(size=2)
        g = H @ delta  # a quadratic cost with its minimum at -delta from here
        resp = np.array([[0.0, g[0], g[1], H[0, 0], H[1, 1], H[0, 1]]])
        assert _peak_offset(resp, 0.01)[0] == pytest.approx(np.hypot(*delta), rel=1e-9)
    # a saddle: the negative curvature counts by its size, as GSM's Newton step takes it
    resp = np.array([[0.0, 1.0, 2.0, 2.0, -4.0, 0.0]])
    assert _peak_offset(resp, 0.01)[0] == pytest.approx(np.hypot(0.5, 0.5))


def test_evaluate_metrics_on_known_answers():
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    labels = np.array([1, 0, 1, 0, 0, 0], bool)
    pairs = [(a > b) + 0.5 * (a == b) for a in scores[labels] for b in scores[~labels]]
    assert auroc(scores, labels) == pytest.approx(np.mean(pairs))
    assert auroc(scores, np.zeros(6, bool)) != auroc(scores, np.zeros(6, bool))  # NaN
    assert catch_rate(scores, labels, share=1 / 3) == pytest.approx(0.5)
    # probabilities equal to the frequencies in every bin: no calibration error
    p = np.repeat([0.05, 0.35, 0.75], 20)
    y = np.concatenate([np.arange(20) < k for k in (1, 7, 15)])
    assert calibration_error(p, y) == pytest.approx(0.0)
    assert calibration_error(np.full(10, 0.9), np.zeros(10)) == pytest.approx(0.9)


# -- calibration on synthetic sets with known errors --------------------------------------

def _known_errors(rng, n, v=8, k=3, informative=True):
    """Features and errors drawn from the model's own family: ``log e`` logistic around
    ``1.0 * x_0 - 0.5 * x_1`` (or around a constant), scale 0.4."""
    X = rng.normal(size=(n, v, k))
    loc = (X[..., 0] - 0.5 * X[..., 1]) if informative else np.zeros((n, v))
    u = rng.random((n, v))
    log_e = np.log(2.0) + loc + 0.4 * np.log(u / (1 - u))
    return X.astype(np.float32), np.exp(log_e).astype(np.float32), np.full(n, 100.0, np.float32)


@pytest.mark.parametrize("informative", [True, False])
def test_calibrated_on_a_synthetic_set_with_known_errors(informative):
    rng = np.random.default_rng(4)
    cal = Calibration(*_known_errors(rng, 300, informative=informative)).fit()
    X, e, D = _known_errors(rng, 300, informative=informative)
    t = OFF_FRACTION * D[0]  # 2 px
    p, expected = zip(*(cal.predict(x, t) for x in X))
    p, expected = np.concatenate(p), np.concatenate(expected)
    off = (e > t).ravel()
    assert calibration_error(p, off) < 0.03
    if informative:
        # the truth: P(e > t) = sigmoid((loc + log 2 - log t) / 0.4)
        loc = (X[..., 0] - 0.5 * X[..., 1]).ravel()
        truth = 1 / (1 + np.exp(-(loc + np.log(2.0) - np.log(t)) / 0.4))
        assert np.abs(p - truth).mean() < 0.02 and np.abs(p - truth).max() < 0.12
        assert auroc(p, off) > 0.9 and auroc(p, off) == pytest.approx(auroc(truth, off),
                                                                       abs=0.01)
        assert catch_rate(p, off) > 0.35  # at most 0.2 / off share, about 0.4 here
        # the expected error: the mean of a log-logistic with scale 0.4
        mean = np.exp(loc + np.log(2.0)) * (0.4 * np.pi) / np.sin(0.4 * np.pi)
        assert np.median(np.abs(expected / mean - 1)) < 0.05
        assert expected.mean() == pytest.approx(mean.mean(), rel=0.05)
    else:
        assert auroc(p, off) == pytest.approx(0.5, abs=0.05)
        assert p.mean() == pytest.approx(off.mean(), abs=0.03)
    # any threshold, from the same model: more lenient, fewer off
    p4 = np.concatenate([cal.predict(x, 2 * t)[0] for x in X])
    assert (p4 < p).all()
    assert calibration_error(p4, (e > 2 * t).ravel()) < 0.04


def test_landmarks_moved_by_known_amounts_are_flagged_and_calibrated(plain, data):
    """Landmarks put at known distances from the truth on synthetic images: the features
    read there predict the distance (the calibration is fitted on 30 images, tested on
    30 others)."""
    rng = np.random.default_rng(5)

    def moved(pairs):
        X, E, D = [], [], []
        for img, pts in pairs:
            d = np.exp(rng.normal(np.log(1.5), 0.9, len(pts)))
            a = rng.uniform(0, 2 * np.pi, len(pts))
            fit = pts + d[:, None] * np.column_stack([np.cos(a), np.sin(a)])
            f, scale = landmark_features(plain, Pyramid(img), fit)
            X.append(f)
            E.append(d * scale)
            D.append(bbox_diagonal(fit) * scale)
        return [np.asarray(x, np.float32) for x in (X, E, D)]

    cal = Calibration(*moved(data[20:32] * 3)).fit()
    X, E, D = moved(data[32:44] * 3)
    p = np.concatenate([cal.predict(x, OFF_FRACTION * d)[0] for x, d in zip(X, D)])
    off = np.concatenate([e > OFF_FRACTION * d for e, d in zip(E, D)])
    assert 0.2 < off.mean() < 0.8
    assert auroc(p, off) > 0.95
    assert calibration_error(p, off) < 0.06


# -- training, fitting, updating, files ---------------------------------------------------

def test_taking_out_what_updates_added_gives_the_model_back(plain, data):
    import copy

    model = copy.deepcopy(plain)
    fold = [Sample(f"x{i}", img, pts) for i, (img, pts) in enumerate(data[20:23])]
    for s in fold:
        model.update(s.grey, s.points)
    back = fold_out(model, fold)
    np.testing.assert_allclose(back.detectors.S, plain.detectors.S, atol=1e-9)
    np.testing.assert_allclose(back.detectors.filters, plain.detectors.filters, atol=1e-5)
    assert back.detectors.n == plain.detectors.n and back.shape.n_shapes == plain.shape.n_shapes
    np.testing.assert_allclose(back.shape.cov, plain.shape.cov, atol=1e-8)
    assert model.detectors.n == plain.detectors.n + 3  # the original is left alone


def test_fit_fills_a_calibrated_confidence(calibrated, data):
    cal = calibrated.calibration
    assert cal.ready and cal.n_images == 20 and cal.info["folds"] == 10
    assert calibrated.confidence_note is None
    assert calibrated.summary["calibration_seconds"] > 0
    img, truth = data[30]
    res = calibrated.fit(img)
    c = res.confidence
    v = calibrated.n_landmarks
    assert c.p_off.shape == (v,) and c.error_px.shape == (v,)
    assert ((0 <= c.p_off) & (c.p_off <= 1)).all() and (c.error_px > 0).all()
    assert c.threshold == pytest.approx(OFF_FRACTION * bbox_diagonal(res.points))
    assert c.nme == pytest.approx(c.error_px.mean() / normaliser(res.points))
    assert c.failed == (c.p_off.mean() >= FAILED_SHARE)
    assert res.extra["confidence_ms"] > 0
    # a stricter threshold: every landmark more likely off; the errors do not change
    strict = calibrated.fit(img, off_fraction=0.005).confidence
    assert (strict.p_off > c.p_off).all() and strict.threshold == pytest.approx(c.threshold / 4)
    np.testing.assert_allclose(strict.error_px, c.error_px)
    assert calibrated.fit(img, confidence=False).confidence is None
    # pinned landmarks were placed by a person
    pinned = np.zeros(v, bool)
    pinned[2] = True
    pc = calibrated.fit(img, "points", points=truth, pinned=pinned).confidence
    assert pc.p_off[2] == 0 and pc.error_px[2] == 0
    json = res.to_json()["confidence"]
    assert set(json) >= {"p_off", "error_px", "nme", "failed"}
    assert len(json["p_off"]) == len(json["error_px"]) == v


def test_a_far_off_fit_is_flagged_failed(calibrated, data):
    img, truth = data[31]
    far = truth + [25.0, -18.0]  # the whole shape displaced by a third of its size
    c = assess(calibrated, Pyramid(img), far)
    good = assess(calibrated, Pyramid(img), truth)
    assert c.failed and not good.failed
    assert c.p_off.mean() > 0.9 and good.p_off.mean() < 0.2
    res = calibrated.fit(img)
    res.points = far
    res.confidence = c
    assert any("looks failed" in w for w in fit_warnings(calibrated, res, img))
    res.points, res.confidence = truth, good
    assert not any("looks failed" in w for w in fit_warnings(calibrated, res, img))


def test_update_learns_from_the_image_and_keeps_the_calibration(calibrated, data):
    import copy

    model = copy.deepcopy(calibrated)
    coef = model.calibration.coef.copy()
    img, truth = data[32]
    model.update(img, truth)
    cal = model.calibration
    assert cal.n_images == 21 and cal.info["n_added"] == 1 and cal.ready
    assert not np.allclose(cal.coef, coef)
    # the image's fit joined before the image did: its error is that of an unseen image
    before = calibrated.fit(img, history=False, confidence=False).points
    f, scale = landmark_features(calibrated, Pyramid(img), before)
    np.testing.assert_allclose(cal.errors[-1], np.linalg.norm(before - truth, axis=1) * scale,
                               rtol=1e-5)
    np.testing.assert_allclose(cal.X[-1], f, rtol=1e-5, atol=1e-6)
    assert model.fit(img).confidence is not None


def test_few_images_calibrate_as_updates_come(data):
    model = train(data[:3], "gsm", params=TrainParams(features="grey"))
    assert not model.calibration.ready and model.fit(data[10][0]).confidence is None
    assert "3 image" in model.confidence_note
    for img, pts in data[3:3 + MIN_IMAGES]:
        model.update(img, pts)
    assert model.calibration.ready and model.confidence_note is None
    assert model.fit(data[10][0]).confidence is not None


def test_calibration_survives_the_model_file(calibrated, data, tmp_path):
    again = load_model(calibrated.save(tmp_path / "m.npz"))
    a, b = calibrated.calibration, again.calibration
    np.testing.assert_array_equal(a.coef, b.coef)
    np.testing.assert_array_equal(a.X, b.X)
    assert b.info["folds"] == a.info["folds"] and b.off_fraction == a.off_fraction
    assert b.info["cv"] == a.info["cv"] and set(a.info["cv"]) >= {"auroc", "calibration_error"}
    img = data[33][0]
    np.testing.assert_allclose(again.fit(img).confidence.p_off,
                               calibrated.fit(img).confidence.p_off)


def _as_old_file(path, out):
    """``path`` rewritten as the code before the calibration wrote it."""
    arrays, meta = load_model_file(path)
    arrays = {k: v for k, v in arrays.items() if not k.startswith("calib_")}
    meta = {k: v for k, v in meta.items() if k != "calibration"}
    meta["training_set"] = {k: v for k, v in meta["training_set"].items()
                            if k != "calibration_seconds"}
    return save_model_file(out, arrays, meta)


def test_a_model_from_before_the_calibration_loads_and_says_it_has_none(calibrated, data,
                                                                        tmp_path):
    old = load_model(_as_old_file(calibrated.save(tmp_path / "new.npz"), tmp_path / "old.npz"))
    assert old.calibration is None
    assert "retrain" in old.confidence_note
    img, truth = data[34]
    res = old.fit(img)
    assert res.confidence is None and "confidence_ms" not in res.extra
    assert res.to_json()["confidence"] is None
    np.testing.assert_allclose(res.points, calibrated.fit(img).points)
    old.update(img, truth)  # updates work; the model still has no calibration
    assert old.calibration is None
    assert fit_warnings(old, res, img) == fit_warnings(old, res, img)  # no confidence needed


def test_gsm_cr_calibrates_on_cascades_without_the_fold(data):
    from napari_gsm.crossfit import calibration_folds
    from napari_gsm.methods.cascade_train import train_cascade

    model = train(data[:16], "gsm-cr", params=TrainParams(features="grey"), perturbations=8)
    cal = model.calibration
    assert cal.ready and cal.info["state_without_fold"] and model.state.fold_states is None
    # the folds leave the cascade itself as it was, and give one cascade per fold
    samples = [Sample(str(i), img, pts) for i, (img, pts) in enumerate(data[:16])]
    folds = calibration_folds(16)
    with_folds = train_cascade(model, samples, perturbations=8, folds=folds)
    plain = train_cascade(model, samples, perturbations=8)
    np.testing.assert_allclose(with_folds.R, plain.R)
    assert len(with_folds.fold_states) == len(folds) == 10
    for st in with_folds.fold_states:
        assert st.R.shape == plain.R.shape and not np.allclose(st.R, plain.R)
