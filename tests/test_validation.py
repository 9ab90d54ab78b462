"""Cross-validation and the learning curve, on models whose errors are known."""

from __future__ import annotations

import numpy as np
import pytest

from napari_gsm.validation import cross_validate, learning_verdict

V = 6


class _Fit:
    def __init__(self, points):
        self.points = points


class ErrModel:
    """A 'model' that knows every image and misses each by ``err(n_train)`` pixels in x."""

    def __init__(self, samples, err, log):
        self.trained_on = {id(img) for img, _ in samples}
        self.n, self.err = len(samples), err
        self.truth = {id(img): pts for img, pts in samples}
        log.append(self)

    def fit(self, image):
        assert id(image) not in self.trained_on, "an image was fitted by a model trained on it"
        pts = ALL[id(image)].copy()
        pts[:, 0] += self.err(self.n)
        return _Fit(pts)


ALL = {}


def _samples(n, rng):
    out = []
    for _ in range(n):
        img = np.zeros((4, 4))
        pts = rng.uniform(0, 100, (V, 2))
        pts[0], pts[1] = (0, 0), (30, 40)  # bounding-box diagonal 100 px... at least
        ALL[id(img)] = pts
        out.append((img, pts))
    return out


@pytest.mark.parametrize("shrinking", [True, False])
def test_every_image_is_fitted_without_itself_and_errors_are_exact(shrinking):
    rng = np.random.default_rng(1)
    samples = _samples(20, rng)
    err = (lambda n: 40.0 / np.sqrt(n)) if shrinking else (lambda n: 2.0)
    log = []
    cv = cross_validate(samples, lambda s: ErrModel(s, err, log), folds=5, sizes=3)
    assert cv.folds == 5 and len(log) == 15 and cv.sizes == [5, 11, 16]
    diag = np.array([np.hypot(*np.ptp(p, 0)) for _, p in samples])
    np.testing.assert_allclose(cv.nme, 100 * err(16) / diag)
    np.testing.assert_allclose(cv.landmark_errors, np.repeat((100 * err(16) / diag)[:, None], V, 1))
    # the learning curve is the mean NME at each size
    for size, value in zip([5, 11, 16], cv.curve):
        # each fold trains on round(frac * 16) images: the sizes above
        assert value == pytest.approx(np.mean(100 * err(size) / diag), rel=1e-9)
    verdict = learning_verdict(cv)
    assert ("still falls" in verdict) == shrinking and ("flat" in verdict) == (not shrinking)


def test_progress_can_stop_it_and_too_few_images_are_refused():
    rng = np.random.default_rng(2)
    samples = _samples(8, rng)

    def stop(done, total, what):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cross_validate(samples, lambda s: ErrModel(s, lambda n: 1.0, []), progress=stop)
    with pytest.raises(ValueError, match="at least 4"):
        cross_validate(samples[:3], lambda s: None)


def test_real_models_on_the_wing_sample(sample_data_root):
    import napari_gsm as gsm

    data = gsm.load_dataset(sample_data_root / "wings")
    samples = [(it.load_image(), it.points) for it in data.annotated]
    params = gsm.TrainParams(features="grey")
    cv = cross_validate(samples, lambda s: gsm.train(s, "gsm", params=params), folds=5,
                        sizes=2)
    assert cv.nme.shape == (10,) and np.isfinite(cv.nme).all()
    assert 0.05 < cv.mean_nme < 5.0  # percent of the wing's diagonal: a working model
    assert cv.landmark_errors.shape == (10, 12)
