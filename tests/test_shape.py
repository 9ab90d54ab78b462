import numpy as np
import pytest

from napari_gsm.geometry import shape_size
from napari_gsm.shape import ShapeModel, from_vec, to_vec
from synthetic import random_shape


def _shapes(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([random_shape(rng) for _ in range(n)])


def test_vec_layout_is_x_block_then_y_block():
    pts = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    np.testing.assert_array_equal(to_vec(pts), [1, 3, 5, 2, 4, 6])
    np.testing.assert_array_equal(from_vec(to_vec(pts)), pts)


def test_mean_shape_at_reference_size_inside_frame():
    m = ShapeModel.train(_shapes(30), ref_size=25.0, margin=10.0)
    assert shape_size(m.s0) == pytest.approx(25.0)
    H, W = m.frame_shape
    assert m.s0.min() >= 10.0 - 1e-9
    assert m.s0[:, 0].max() <= W - 10 and m.s0[:, 1].max() <= H - 10


def test_covariance_is_regularised_and_shrinks_less_with_more_data():
    few = ShapeModel.train(_shapes(4), ref_size=25.0)
    many = ShapeModel.train(_shapes(400), ref_size=25.0)
    for m in (few, many):
        np.testing.assert_allclose(m.cov, m.cov.T)
        assert np.linalg.eigvalsh(m.cov).min() >= m.var_floor * 0.999
    assert few.shrinkage > many.shrinkage
    # One image still gives a usable (isotropic) model.
    one = ShapeModel.train(_shapes(1), ref_size=25.0)
    np.testing.assert_allclose(one.cov, one.var_floor * np.eye(16), atol=1e-9)


def test_add_updates_the_statistics_exactly():
    shapes = _shapes(10)
    m = ShapeModel.train(shapes[:9], ref_size=25.0)
    sum0, sq0, n0 = m.shape_sum.copy(), m.shape_sumsq.copy(), m.n_shapes
    m.add(shapes[9])
    vec = to_vec(m.align(shapes[9]))
    assert m.n_shapes == n0 + 1
    np.testing.assert_allclose(m.shape_sum, sum0 + vec)
    np.testing.assert_allclose(m.shape_sumsq, sq0 + np.outer(vec, vec))
    # the covariance is rebuilt from the new sums
    mean = m.shape_sum / m.n_shapes
    S = m.shape_sumsq / m.n_shapes - np.outer(mean, mean)
    expect = (1 - m.shrinkage) * S + (m.shrinkage * np.trace(S) / 16 + m.var_floor) * np.eye(16)
    np.testing.assert_allclose(m.cov, expect, atol=1e-9)


def test_round_trip_arrays():
    m = ShapeModel.train(_shapes(12), ref_size=25.0)
    m2 = ShapeModel.from_arrays(m.to_arrays())
    np.testing.assert_array_equal(m2.s0, m.s0)
    np.testing.assert_array_equal(m2.cov, m.cov)
    assert m2.frame_shape == m.frame_shape


def test_rejects_too_few_landmarks():
    with pytest.raises(ValueError):
        ShapeModel.train(np.zeros((3, 2, 2)))


def _in_parts(shapes, bounds):
    """``total`` over the shapes split at ``bounds``, as a cluster's parts would add up."""
    def total(func, *args):
        out = None
        for a, b in zip(bounds, bounds[1:]):
            r = func(shapes[a:b], *args)
            out = r if out is None else tuple(x + y for x, y in zip(out, r))
        return out
    return total


def test_model_from_sums_of_parts_is_the_model_of_all_shapes():
    """Procrustes iterated on the parts' sums of aligned shapes, and the scatter matrix
    added over parts, give the model trained on the shapes held together."""
    shapes = _shapes(23, seed=3)
    shapes[4, 2] = np.nan  # a missing landmark
    whole = ShapeModel.train(shapes, ref_size=25.0, margin=10.0)
    parts = ShapeModel.train_from_sums(shapes[0], _in_parts(shapes, [0, 5, 6, 17, 23]),
                                       ref_size=25.0, margin=10.0)
    for name in ("s0", "shape_sum", "shape_sumsq", "cov"):
        np.testing.assert_allclose(getattr(parts, name), getattr(whole, name), rtol=1e-12,
                                   atol=1e-9, err_msg=name)
    assert (parts.n_shapes, parts.frame_shape) == (23, whole.frame_shape)
