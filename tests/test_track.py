"""Tracking an image stack (napari_gsm.track) and the warm start it rests on.

Stacks are made from sample images moved by a known smooth similarity per frame (the image
by ``cv2.warpAffine``, the true landmarks by the same transform), so every frame's answer is
exact.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

import napari_gsm as gsm
from napari_gsm.evaluate import nme
from napari_gsm.methods import GSMParams
from napari_gsm.model import TrainParams, train
from napari_gsm.quality import response_score

from synthetic import make_set


def _moving_stack(image, points, n, *, step=(2.0, -1.5), turn=0.006, grow=0.004):
    """``n`` frames of ``image`` under a smooth similarity about the shape's centre that
    grows each frame (``step`` pixels, ``turn`` radians, ``grow`` log scale, with a slow
    sinusoidal wobble), and the landmarks ``(n, v, 2)`` moved alike."""
    c = points.mean(0)
    h, w = image.shape[:2]
    frames, truth = [], []
    for t in range(n):
        wob = np.sin(t / 3.0)
        a, k = turn * t * wob, np.exp(grow * t * wob)
        R = k * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        M = np.hstack([R, (c + np.multiply(step, t) - R @ c)[:, None]])
        frames.append(cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT101))
        truth.append(points @ R.T + M[:, 2])
    return np.stack(frames), np.stack(truth)


@pytest.fixture(scope="module")
def wings(sample_data_root):
    data = gsm.load_dataset(sample_data_root / "wings")
    items = sorted(data.annotated, key=lambda it: it.image_path.name)
    return [(np.asarray(it.load_image()), np.asarray(it.points, float)) for it in items]


@pytest.fixture(scope="module")
def wing_model(wings):
    return train(wings[:8], "gsm", params=TrainParams(), gsm_params=GSMParams(lam=0.1))


@pytest.fixture(scope="module")
def wing_stack(wings):
    return _moving_stack(*wings[8], 12)


def _errors(points, truth):
    return np.array([nme(p, q, "diagonal") for p, q in zip(points, truth)])


def test_tracking_follows_a_moving_wing_as_well_as_fitting_every_frame(wing_model, wing_stack):
    frames, truth = wing_stack
    per_frame = _errors([wing_model.fit(f, history=False).points for f in frames], truth)
    calls = []
    res = gsm.track(wing_model, frames, progress=lambda done, total: calls.append((done, total)))
    tracked = _errors(res.points, truth)
    assert res.points.shape == (12, 12, 2)
    assert tracked.mean() <= 1.5 * per_frame.mean()
    assert tracked.max() < 0.02  # no frame loses the wing (2 % of its diagonal)
    assert [f.init for f in res.fits] == ["prior"] + ["track"] * 11
    assert res.restarted == [] and res.n_detections == 0
    assert calls == [(t + 1, 12) for t in range(12)]
    assert len(res.frame_ms) == 12 and min(res.frame_ms) > 0
    # The same stack as a list of grey float images gives the same landmarks.
    grey = [gsm.io.to_grey(f) for f in frames]
    np.testing.assert_allclose(gsm.track(wing_model, grey).points, res.points, atol=1e-6)


def test_a_noise_frame_is_refitted_from_a_fresh_start_and_the_track_recovers(wing_model,
                                                                             wing_stack):
    frames, truth = wing_stack
    frames = frames.copy()
    frames[6] = np.random.default_rng(0).integers(0, 256, frames[6].shape, np.uint8)
    res = gsm.track(wing_model, frames)
    assert 6 in res.restarted
    assert any("poorly" in why for why in res.reasons[6])
    err = _errors(res.points, truth)
    assert err[:6].max() < 0.02 and err[7:].max() < 0.02  # the frames after it are found


def test_face_track_falls_back_to_the_detector_after_a_jump(sample_data_root):
    data = gsm.load_dataset(sample_data_root / "faces")
    pairs = [(np.asarray(it.load_image()), np.asarray(it.points, float))
             for it in sorted(data.annotated, key=lambda it: it.image_path.name)]
    model = train(pairs, "gsm", params=TrainParams(face_detector=True),
                  gsm_params=GSMParams(lam=0.1))
    image, points = pairs[0]
    frames, truth = _moving_stack(image, points, 8, step=(1.0, 0.5))
    width = np.ptp(points[:, 0])
    jump = np.float32([[1, 0, 0.3 * width], [0, 1, 0.1 * width]])  # frames 5..7 moved
    for t in range(5, 8):
        frames[t] = cv2.warpAffine(frames[t], jump, frames.shape[2:0:-1],
                                   borderMode=cv2.BORDER_REFLECT101)
        truth[t] += jump[:, 2]
    per_frame = [model.fit(f, history=False) for f in frames]
    assert all(r.init == "detect" for r in per_frame)
    res = gsm.track(model, frames)
    err = np.array([nme(p, q) for p, q in zip(res.points, truth)])
    err_frame = np.array([nme(r.points, q) for r, q in zip(per_frame, truth)])
    assert 5 in res.restarted and res.fits[5].init == "detect"
    assert err[5] <= 1.5 * err_frame[5] + 0.01
    assert err.mean() <= 1.5 * err_frame.mean()
    # One detection for the first frame and one per restart, against one per frame.
    assert res.n_detections == 1 + len(res.restarted) < len(frames)


def test_raising_from_progress_stops_tracking(wing_model, wing_stack):
    frames, _ = wing_stack
    seen = []

    class Stop(Exception):
        pass

    def progress(done, total):
        seen.append(done)
        if done == 3:
            raise Stop

    class CountingFrames:  # records which frames are read
        def __init__(self):
            self.read = []

        def __len__(self):
            return len(frames)

        def __getitem__(self, t):
            self.read.append(t)
            return frames[t]

    stack = CountingFrames()
    with pytest.raises(Stop):
        gsm.track(wing_model, stack, progress=progress)
    assert seen == [1, 2, 3] and stack.read == [0, 1, 2]


def test_bad_stacks_get_errors_that_name_the_problem(wing_model, wing_stack):
    frames, _ = wing_stack
    with pytest.raises(ValueError, match="no frames"):
        gsm.track(wing_model, [])
    with pytest.raises(ValueError, match="look like one image"):
        gsm.track(wing_model, frames[0])
    with pytest.raises(ValueError, match="look like one colour image"):
        gsm.track(wing_model, np.stack([frames[0]] * 3, axis=-1))
    with pytest.raises(ValueError, match="not 5"):
        gsm.track(wing_model, frames[None, ..., None])
    with pytest.raises(ValueError, match="frame 2: image too small"):
        gsm.track(wing_model, [frames[0], frames[1], np.zeros((4, 4))])
    with pytest.raises(ValueError, match="frame 1: .*dimensions"):
        gsm.track(wing_model, [frames[0], np.zeros((2, 9, 9, 3))])


# -- the warm start --------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth():
    data = make_set(30, seed=5)
    params = TrainParams(features="grey", ref_size=20.0, sigma=2.0)
    return data, params


def test_warm_start_is_the_finest_width_alone(synth):
    """A warm start on a model with coarse widths fits exactly as the same model trained
    with the finest width only (its filters are the same) fits from the same start."""
    data, params = synth
    lam = GSMParams(lam=0.1)
    coarse = train(data[:24], "gsm", params=params, gsm_params=lam)
    finest = train(data[:24], "gsm", params=replace(params, coarse=()), gsm_params=lam)
    assert len(coarse.detectors.sigmas) == 2 and len(finest.detectors.sigmas) == 1
    rng = np.random.default_rng(1)
    for image, truth in data[24:]:
        start = truth + rng.normal(0, 1.0, truth.shape)
        warm = coarse.fit(image, "points", points=start, warm_start=True)
        ref = finest.fit(image, "points", points=start)
        np.testing.assert_allclose(warm.points, ref.points, atol=1e-6)
        assert warm.n_iter == ref.n_iter
        # Off is the coarse-to-fine fit, as without the keyword.
        off = coarse.fit(image, "points", points=start, warm_start=False)
        np.testing.assert_array_equal(off.points, coarse.fit(image, "points",
                                                              points=start).points)


def test_warm_start_needs_fewer_iterations_near_the_answer(synth):
    data, params = synth
    model = train(data[:24], "gsm", params=params, gsm_params=GSMParams(lam=0.1))
    rng = np.random.default_rng(2)
    n_cold = n_warm = 0
    for image, truth in data[24:]:
        start = truth + rng.normal(0, 0.7, truth.shape) + rng.normal(0, 1.0, 2)
        cold = model.fit(image, "points", points=start)
        warm = model.fit(image, "points", points=start, warm_start=True)
        assert warm.converged
        err_w = np.linalg.norm(warm.points - truth, axis=1).mean()
        err_c = np.linalg.norm(cold.points - truth, axis=1).mean()
        assert err_w <= err_c + 0.2  # pixels
        n_cold, n_warm = n_cold + cold.n_iter, n_warm + warm.n_iter
    assert n_warm < 0.8 * n_cold


def test_fit_score_is_the_image_match_at_the_fitted_landmarks(wing_model, wings):
    """``extra['score']`` (free, from the last iteration) is the mean response that
    ``response_score`` measures afresh at the final landmarks."""
    for image, _ in wings[8:]:
        res = wing_model.fit(image)
        fresh = response_score(wing_model, gsm.io.to_grey(image), res.points)
        assert res.extra["score"] == pytest.approx(fresh, abs=0.02)
        assert res.extra["score"] > 0.5 * wing_model.summary["score_ref"]


def test_fit_records_a_detector_run_that_found_no_face(sample_data_root):
    """The face detector's time and count are reported even when it finds nothing (the
    start is then the prior): tracking counts detector calls from them."""
    data = gsm.load_dataset(sample_data_root / "faces")
    pairs = [(np.asarray(it.load_image()), np.asarray(it.points, float))
             for it in data.annotated][:6]
    model = train(pairs, "gsm", params=TrainParams(face_detector=True),
                  gsm_params=GSMParams(lam=0.1, max_iter=3))
    flat = np.full((120, 160), 0.5, np.float32)
    res = model.fit(flat)
    assert res.init == "prior"
    assert res.extra["n_faces"] == 0 and res.extra["detect_ms"] > 0


def test_cascade_warm_start_skips_the_coarse_levels(synth):
    """GSM-CR's warm start runs the levels after ``coarse_levels`` and nothing else: the
    same as a cascade made of those levels alone."""
    from napari_gsm.methods.cascade import CascadeState

    data, params = synth
    model = train(data[:24], "gsm-cr", params=params, gsm_params=GSMParams(lam=0.1),
                  levels=4, perturbations=8, coarse_levels=2)
    tail = _with_state(model, CascadeState(model.state.R[2:],
                                           {**model.state.info, "coarse_levels": 0}))
    image, truth = data[25]
    start = truth + np.random.default_rng(3).normal(0, 1.0, truth.shape)
    warm = model.fit(image, "points", points=start, warm_start=True)
    assert warm.n_iter == 2 and len(warm.extra["update_px"]) == 2
    np.testing.assert_allclose(warm.points, tail.fit(image, "points", points=start).points,
                               atol=1e-9)
    assert model.fit(image, "points", points=start).n_iter == 4


def _with_state(model, state):
    import copy

    out = copy.copy(model)
    out.state = state
    return out


@pytest.mark.parametrize("method", ["gsm3d", "clm"])
def test_other_methods_take_the_warm_start(synth, method):
    data, params = synth
    model = train(data[:24], method, params=params, gsm_params=GSMParams(lam=0.1))
    rng = np.random.default_rng(4)
    for image, truth in data[24:27]:
        start = truth + rng.normal(0, 0.7, truth.shape)
        cold = model.fit(image, "points", points=start)
        warm = model.fit(image, "points", points=start, warm_start=True)
        err = lambda r: np.linalg.norm(r.points - truth, axis=1).mean()  # noqa: E731
        assert err(warm) <= err(cold) + 0.2
        if method == "clm":  # the narrowest kernel only
            assert len(warm.extra["bandwidth_iters"]) == 1
        else:  # the finest width only: fewer iterations, the score recorded
            assert warm.n_iter < cold.n_iter and warm.extra["score"] is not None
