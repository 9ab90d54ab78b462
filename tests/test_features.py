"""Dense HoG against a direct count of the votes; when the frame cache re-warps."""

import cv2
import numpy as np
import pytest

from napari_gsm.features import FeatureSpec, FrameCache, Pyramid, feature_map


def _reference_hog(img, cell, n_bins):
    """Dalal-Triggs votes counted one pixel at a time, in float64, then pooled as in the code."""
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=1)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=1)
    mag, ang = cv2.cartToPolar(gx, gy)
    pos = np.mod(ang.astype(np.float64), np.pi) / (np.pi / n_bins)
    lo = np.floor(pos).astype(int)
    w_hi = pos - lo
    pix = np.arange(img.size)
    votes = np.zeros((img.size, n_bins))
    np.add.at(votes, (pix, lo.ravel() % n_bins), (mag * (1 - w_hi)).ravel())
    np.add.at(votes, (pix, (lo.ravel() + 1) % n_bins), (mag * w_hi).ravel())
    hist = cv2.boxFilter(votes.reshape(img.shape + (n_bins,)).astype(np.float32), -1,
                         (cell, cell), borderType=cv2.BORDER_REFLECT)
    block = cv2.boxFilter(mag, -1, (2 * cell, 2 * cell), borderType=cv2.BORDER_REFLECT)
    return hist / (block + 0.02)[..., None]


@pytest.mark.parametrize("n_bins", [9, 6])
def test_dense_hog_matches_a_direct_count_of_the_votes(n_bins):
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.random((48, 52)).astype(np.float32) * 255, (0, 0), 1.5)
    # Rows with a steep rise in x and a tiny fall in y: OpenCV gives these gradients an
    # angle of exactly 2 pi, the top of its range, which must vote like an angle of 0.
    x = np.arange(52, dtype=np.float32)
    img[20:26] = 1000 * x - 1e-4 * np.arange(20, 26, dtype=np.float32)[:, None]
    _, ang = cv2.cartToPolar(cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=1),
                             cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=1))
    assert (ang == np.float32(2 * np.pi)).any()
    spec = FeatureSpec("hog", cell=3, n_bins=n_bins)
    got = feature_map(img, spec)
    assert got.shape == img.shape + (n_bins,)
    np.testing.assert_allclose(got, _reference_hog(img, 3, n_bins), rtol=1e-5, atol=1e-5)


def _cache():
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.random((80, 80)).astype(np.float32), (0, 0), 1.0)
    spec = FeatureSpec("hog", patch=5, cell=3)  # patches reach 6 px from their centre
    sm = np.array([20.0, 20.0])
    return FrameCache(Pyramid(img), sm, (40, 40), spec, tol=0.05), img, spec, sm


def test_frame_is_kept_while_the_pose_moves_within_tolerance():
    frames, *_ = _cache()
    shape = np.array([[15.0, 15.0], [25.0, 18.0], [20.0, 26.0]])
    frames.patches(shape, np.array([1.0, 0.0, 0.0, 0.0]))
    frames.patches(shape, np.array([1.03, 0.02, 0.4, -0.3]))
    assert frames.n_warps == 1
    frames.patches(shape, np.array([1.08, 0.0, 0.0, 0.0]))
    assert frames.n_warps == 2


def test_frame_is_rewarped_only_when_the_new_pose_holds_an_overhanging_patch():
    frames, img, spec, sm = _cache()
    # Landmark 0 sits 2 px from the frame's left edge: its patch overhangs by 4 px.
    shape = np.array([[2.0, 20.0], [25.0, 18.0], [20.0, 26.0]])
    frames.patches(shape, np.array([1.0, 0.0, 0.0, 0.0]))
    # A nearby pose's frame would overhang as much: re-warping would change nothing.
    frames.patches(shape, np.array([1.0, 0.0, 0.5, 0.0]))
    assert frames.n_warps == 1
    # This pose's frame holds the patch (4 px better, more than one sample spacing).
    theta = np.array([1.0, 0.0, 4.0, 0.0])
    frames.patches(shape, theta)
    assert frames.n_warps == 2
    np.testing.assert_array_equal(frames.theta, theta)
    fresh = feature_map(Pyramid(img).warp(theta, sm, (40, 40)), spec)
    np.testing.assert_array_equal(frames.fmap, fresh)


@pytest.mark.parametrize("n_bins", [9, 6])
def test_signed_hog_folds_onto_the_unsigned_and_tells_the_edge_polarity(n_bins):
    """Signed HoG (``2 n_bins`` channels over 360 degrees): its two halves sum to the
    unsigned HoG of ``n_bins``, and inverting the image (every gradient turned by 180
    degrees) leaves the unsigned HoG as it was but moves each signed vote by exactly
    ``n_bins`` channels."""
    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.random((48, 52)).astype(np.float32), (0, 0), 1.5)
    unsigned = FeatureSpec(n_bins=n_bins)
    signed = FeatureSpec(n_bins=n_bins, signed=True)
    assert (unsigned.channels, signed.channels) == (n_bins, 2 * n_bins)
    u, s = feature_map(img, unsigned), feature_map(img, signed)
    assert s.shape == img.shape + (2 * n_bins,)
    np.testing.assert_allclose(s[..., :n_bins] + s[..., n_bins:], u, atol=1e-5)
    inv = 1.0 - img
    np.testing.assert_allclose(feature_map(inv, unsigned), u, atol=1e-5)
    np.testing.assert_allclose(feature_map(inv, signed), np.roll(s, n_bins, axis=2),
                               atol=1e-5)
    # the polarity is information the unsigned HoG does not have
    assert np.abs(s[..., :n_bins] - s[..., n_bins:]).max() > 0.1 * s.max()


def test_signed_orientations_are_a_hog_option_only():
    with pytest.raises(ValueError, match="HoG option"):
        FeatureSpec(kind="grey", signed=True)
    with pytest.raises(ValueError, match="2 orientation bins"):
        FeatureSpec(n_bins=1)
