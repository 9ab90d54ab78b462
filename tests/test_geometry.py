import numpy as np
import pytest

from napari_gsm.geometry import (apply_similarity, from_base_mesh, generalized_procrustes,
                                 pose_from_shape, shape_size, similarity_fit, to_base_mesh)


def _sim(k, ang):
    return k * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])


def test_similarity_fit_recovers_known_transform():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(10, 2))
    A, t = _sim(1.7, 0.4), np.array([3.0, -2.0])
    A2, t2 = similarity_fit(src, apply_similarity(src, A, t))
    np.testing.assert_allclose(A2, A, atol=1e-12)
    np.testing.assert_allclose(t2, t, atol=1e-12)


def test_similarity_fit_ignores_missing_rows():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(6, 2))
    dst = apply_similarity(src, _sim(0.5, -1.0), [1, 1])
    dst[2] = np.nan
    A, _ = similarity_fit(src, dst)
    np.testing.assert_allclose(A, _sim(0.5, -1.0), atol=1e-12)


def test_similarity_fit_rejects_degenerate():
    with pytest.raises(ValueError):
        similarity_fit(np.zeros((4, 2)), np.ones((4, 2)))


def test_pose_maps_shape_onto_mean_and_back():
    rng = np.random.default_rng(3)
    s0 = rng.normal(size=(7, 2)) * 10 + 50
    sm = s0.mean(0)
    shape = apply_similarity(s0, _sim(2.3, 0.7), [100, -40])
    theta = pose_from_shape(shape, s0, sm)
    np.testing.assert_allclose(to_base_mesh(shape, theta, sm), s0, atol=1e-9)
    np.testing.assert_allclose(from_base_mesh(s0, theta, sm), shape, atol=1e-9)
    # The paper's pose: a = k cos, b = k sin of the image -> mean map.
    np.testing.assert_allclose(np.hypot(theta[0], theta[1]), 1 / 2.3)


def test_generalized_procrustes_aligns_similar_copies_exactly():
    rng = np.random.default_rng(4)
    base = rng.normal(size=(9, 2))
    shapes = np.stack([apply_similarity(base, _sim(rng.uniform(0.5, 2), rng.uniform(-1, 1)),
                                        rng.normal(size=2) * 20) for _ in range(6)])
    mean, aligned = generalized_procrustes(shapes)
    assert shape_size(mean) == pytest.approx(1.0)
    np.testing.assert_allclose(mean.mean(0), 0, atol=1e-12)
    for a in aligned:
        np.testing.assert_allclose(a, mean, atol=1e-9)


def test_generalized_procrustes_mean_is_turned_like_the_average_shape():
    """Not like the first shape: a tilted first image used to tilt every box start."""
    rng = np.random.default_rng(5)
    base = rng.normal(size=(9, 2))
    angles = np.r_[0.9, rng.uniform(-0.3, 0.5, 11)]
    shapes = np.stack([apply_similarity(base, _sim(rng.uniform(0.5, 2), a),
                                        rng.normal(size=2) * 20) for a in angles])
    mean, _ = generalized_procrustes(shapes)
    A, _ = similarity_fit(base, mean)
    expected = np.arctan2(np.sin(angles).sum(), np.cos(angles).sum())
    assert np.arctan2(A[1, 0], A[0, 0]) == pytest.approx(expected, abs=1e-9)
