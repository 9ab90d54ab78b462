"""Landmarks and images as napari layers hold them, turned into training samples and back.

No napari import: the functions take the arrays a layer holds (``layer.data``,
``layer.features``), already in the image layer's pixel coordinates, so they are tested
without a viewer. A 2D image is one frame; a stack ``(T, H, W[, C])`` has ``T`` frames, and
its Points layer holds ``(t, row, col)`` rows.

Which landmark a point is comes from the layer's features (``landmark``, set by this plugin's
reader, or ``index``, set by the annotation widget), else from the points' order within
their frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._convert import layer_to_points, points_to_layer

__all__ = ["FrameLandmarks", "group_by_frame", "frame_count", "frame_image", "frames_to_layer",
           "IDENTITY_FEATURES"]

#: Feature columns that name a point's landmark (0-based), in order of preference.
IDENTITY_FEATURES = ("landmark", "index")


@dataclass
class FrameLandmarks:
    """A Points layer's landmarks sorted by frame.

    Attributes
    ----------
    n_landmarks : int
    frames : dict of int to (v, 2) ndarray
        Frame -> landmarks ``(x, y)`` in image pixels, NaN rows for missing ones.
    complete : list of int
        Frames with every landmark placed (the training samples), sorted.
    incomplete : list of int
        Frames with some but not all landmarks, sorted.
    """

    n_landmarks: int
    frames: dict = field(default_factory=dict)

    @property
    def complete(self):
        return sorted(t for t, p in self.frames.items() if np.isfinite(p).all())

    @property
    def incomplete(self):
        return sorted(t for t, p in self.frames.items() if not np.isfinite(p).all())


def _identity(features, n):
    """The landmark index of each of ``n`` points from the layer's features, or None."""
    if features is None:
        return None
    for name in IDENTITY_FEATURES:
        if name in getattr(features, "columns", features):
            ids = np.asarray(features[name])
            if len(ids) == n:
                try:
                    ids = ids.astype(float)
                except (TypeError, ValueError):
                    continue
                if np.all(np.isfinite(ids)) and np.all(ids >= 0) and np.all(ids == np.round(ids)):
                    return ids.astype(int)
    return None


def group_by_frame(data, features=None, *, n_landmarks=None, layer_name="Points layer"):
    """Sort a Points layer's points into frames of landmarks.

    Parameters
    ----------
    data : (n, 2) or (n, 3) array
        ``(row, col)`` or ``(t, row, col)`` in the image layer's pixel coordinates.
    features : pandas.DataFrame or dict, optional
        The layer's features; see :data:`IDENTITY_FEATURES`.
    n_landmarks : int, optional
        Landmarks per shape (a model's or a names file's). Default: the largest landmark
        index + 1, or without identities the largest number of points in a frame.
    layer_name : str
        Named in errors.

    Returns
    -------
    FrameLandmarks

    Raises
    ------
    ValueError
        If a frame has more points than landmarks, the same landmark twice, a landmark
        index beyond ``n_landmarks``, or the points are not 2D or 3D.
    """
    data = np.asarray(data, float)
    if data.size == 0:
        return FrameLandmarks(int(n_landmarks or 0))
    if data.ndim != 2 or data.shape[1] not in (2, 3):
        raise ValueError(f"{layer_name}: points must be (row, col) or (frame, row, col); "
                         f"this layer has {data.shape[1]} coordinates per point")
    t = np.zeros(len(data), int) if data.shape[1] == 2 else np.rint(data[:, 0]).astype(int)
    xy = layer_to_points(data[:, -2:])
    ids = _identity(features, len(data))
    if ids is not None:
        v = int(n_landmarks or ids.max() + 1)
        if ids.max() >= v:
            raise ValueError(f"{layer_name}: a point is landmark {ids.max() + 1}, but there are "
                             f"only {v} landmarks")
    else:
        v = int(n_landmarks or np.bincount(t - t.min()).max())
    out = FrameLandmarks(v)
    for frame in np.unique(t):
        rows = np.flatnonzero(t == frame)
        points = np.full((v, 2), np.nan)
        if ids is not None:
            k = ids[rows]
            twice = np.flatnonzero(np.bincount(k) > 1)
            if len(twice):
                raise ValueError(f"{layer_name}: frame {frame} has landmark {twice[0] + 1} "
                                 "more than once")
            points[k] = xy[rows]
        else:
            if len(rows) > v:
                raise ValueError(f"{layer_name}: frame {frame} has {len(rows)} points, but "
                                 f"there are {v} landmarks (the other frames' count)")
            points[: len(rows)] = xy[rows]
        out.frames[int(frame)] = points
    return out


def frame_count(shape, rgb):
    """Number of frames of an image layer's data: 1 for 2D, ``T`` for ``(T, H, W[, C])``.

    Raises
    ------
    ValueError
        For data of more dimensions (volumes, multi-channel stacks).
    """
    spatial = len(shape) - (1 if rgb else 0)
    if spatial == 2:
        return 1
    if spatial == 3:
        return int(shape[0])
    raise ValueError(f"images of shape {tuple(shape)} are not supported: napari-gsm fits 2D "
                     "images and (T, H, W) stacks of them")


def frame_image(data, rgb, t):
    """Frame ``t`` of an image layer's data as a numpy array (``(H, W)`` or ``(H, W, C)``)."""
    if frame_count(np.shape(data), rgb) == 1:
        return np.asarray(data)
    return np.asarray(data[t])


def point_confidence(data, landmark, stacked, records):
    """Each layer point's ``p_off`` and ``error_px`` from per-frame confidence records.

    Parameters
    ----------
    data : (n, 2) or (n, 3) array
        Points layer data (first column the frame when ``stacked``).
    landmark : (n,) int array
    stacked : bool
    records : dict
        ``str(frame)`` -> ``{"p_off": [v], "error_px": [v]}``; frames without a record
        give NaN.

    Returns
    -------
    p_off, error_px : (n,) ndarrays
    """
    n = len(landmark)
    p_off, error_px = np.full(n, np.nan), np.full(n, np.nan)
    frames = np.asarray(data)[:, 0].astype(int) if stacked and n else np.zeros(n, int)
    for i, (t, k) in enumerate(zip(frames, landmark)):
        rec = records.get(str(int(t)))
        if rec is not None and k < len(rec["p_off"]):
            p_off[i], error_px[i] = rec["p_off"][k], rec["error_px"][k]
    return p_off, error_px


def frames_to_layer(frames, stacked):
    """Points layer data and features for landmarks by frame.

    Parameters
    ----------
    frames : dict of int to (v, 2) array
        Frame -> ``(x, y)`` landmarks (NaN rows are left out).
    stacked : bool
        True for a stack: rows are ``(t, row, col)``; else ``(row, col)``.

    Returns
    -------
    data : (n, 2) or (n, 3) ndarray
    landmark : (n,) int ndarray
        Each row's landmark index.
    """
    rows, ids = [], []
    for t in sorted(frames):
        xy = np.asarray(frames[t], float)
        ok = np.isfinite(xy).all(1)
        rc = points_to_layer(xy[ok])
        if stacked:
            rc = np.column_stack([np.full(len(rc), float(t)), rc])
        rows.append(rc)
        ids.append(np.flatnonzero(ok))
    width = 3 if stacked else 2
    data = np.concatenate(rows) if rows else np.empty((0, width))
    return data, (np.concatenate(ids) if ids else np.empty(0, int))
