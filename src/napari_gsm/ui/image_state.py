"""The editing state of one image's landmarks, free of Qt and napari.

Per-landmark states: ``'fitted'`` (placed by the model, free in a re-fit), ``'pinned'``
(placed or moved by a person since the image was opened; held exactly in a re-fit) and
``'checked'`` (read from an accepted ``.pts``; also held). A missing landmark is a NaN row
with state ``''``. Every edit is one undo step and bumps :attr:`ImageState.version`, so a
result computed in the background for an older version can be recognised and dropped.

The last fit's confidence (:class:`FitConfidence`) stays with the image: a landmark is
*uncertain* while it is still as fitted and likely off (:data:`UNCERTAIN`); once a person
moves, pins or accepts it, it is theirs and no longer uncertain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ImageState", "FitConfidence", "FITTED", "CHECKED", "PINNED", "MISSING", "STATES",
           "UNCERTAIN"]

FITTED, CHECKED, PINNED, MISSING = "fitted", "checked", "pinned", ""
STATES = (FITTED, CHECKED, PINNED)

#: Undo steps kept per image.
MAX_UNDO = 200

#: Two positions closer than this (pixels) are the same: a point that did not move.
_SAME = 1e-9
_KEEP = object()  # "the confidence as it is" (None means: the fit has none)

#: A fitted landmark at least this likely to be off (``p_off``) is uncertain: drawn apart
#: and visited by the "next uncertain landmark" key. More likely off than not.
UNCERTAIN = 0.5


@dataclass(frozen=True)
class FitConfidence:
    """What a fit's confidence says about one image (from
    :class:`napari_gsm.confidence.Confidence`, or read back from a draft).

    Attributes
    ----------
    p_off : (v,) ndarray
        Probability that each landmark is off by more than the model's threshold.
    error_px : (v,) ndarray
        Each landmark's predicted error in image pixels.
    nme : float
        The image's predicted normalised mean error (a fraction).
    failed : bool
        The fit as a whole looks failed.
    """

    p_off: np.ndarray
    error_px: np.ndarray
    nme: float
    failed: bool

    @classmethod
    def of(cls, confidence):
        """From a fit's ``confidence`` (None and a FitConfidence are returned as they are)."""
        if confidence is None or isinstance(confidence, cls):
            return confidence
        return cls(np.asarray(confidence.p_off, float), np.asarray(confidence.error_px, float),
                   float(confidence.nme), bool(confidence.failed))

    def to_json(self):
        return {"p_off": [round(float(p), 4) for p in self.p_off],
                "error_px": [round(float(e), 3) for e in self.error_px],
                "nme": round(self.nme, 6), "failed": self.failed}

    @classmethod
    def from_json(cls, doc, n_landmarks):
        """Read back :meth:`to_json`; None when ``doc`` is not a record for ``n_landmarks``."""
        try:
            p_off = np.asarray(doc["p_off"], float)
            error_px = np.asarray(doc["error_px"], float)
            out = cls(p_off, error_px, float(doc["nme"]), bool(doc["failed"]))
        except (KeyError, TypeError, ValueError):
            return None
        return out if p_off.shape == error_px.shape == (n_landmarks,) else None


def _same_points(a, b):
    """Equal including NaN positions (within ``_SAME``)."""
    if a.shape != b.shape:
        return False
    na, nb = np.isnan(a), np.isnan(b)
    if not np.array_equal(na, nb):
        return False
    return bool(np.all(np.abs(a[~na] - b[~nb]) <= _SAME))


@dataclass
class ImageState:
    """Landmarks of one image while it is being edited.

    Attributes
    ----------
    stem : str
    points : (v, 2) ndarray
        0-based ``(x, y)``; NaN rows are missing landmarks.
    states : (v,) ndarray of str
        ``'fitted'``, ``'checked'``, ``'pinned'`` or ``''`` (missing).
    saved : (v, 2) ndarray or None
        What the accepted ``.pts`` holds (None when the image is not annotated).
    current : int or None
        The landmark the next placed point becomes (guided placement); None when all are
        placed and no landmark was chosen.
    version : int
        Incremented by every change of ``points`` or ``states`` (edits, undo, redo, accept).
    confidence : FitConfidence or None
        The last fit's confidence (None: never fitted, or the model has no calibration).
    """

    stem: str
    points: np.ndarray
    states: np.ndarray
    saved: np.ndarray | None = None
    current: int | None = 0
    version: int = 0
    confidence: FitConfidence | None = None
    _undo: list = field(default_factory=list, repr=False)
    _redo: list = field(default_factory=list, repr=False)

    @classmethod
    def empty(cls, stem, n_landmarks):
        return cls(stem, np.full((n_landmarks, 2), np.nan), np.full(n_landmarks, MISSING, object))

    @classmethod
    def from_saved(cls, stem, points):
        points = np.array(points, float)
        ok = np.isfinite(points).all(1)
        states = np.where(ok, CHECKED, MISSING).astype(object)
        st = cls(stem, points.copy(), states, saved=points.copy())
        st.current = st.next_missing(-1)
        return st

    # -- queries -----------------------------------------------------------------------
    @property
    def n_landmarks(self):
        return len(self.points)

    @property
    def placed(self):
        """``(v,)`` bool: landmarks with a position."""
        return np.isfinite(self.points).all(1)

    @property
    def complete(self):
        return bool(self.placed.all())

    @property
    def dirty(self):
        """True when the points differ from the accepted file (or there is none and some exist)."""
        if self.saved is None:
            return bool(self.placed.any())
        return not _same_points(self.points, self.saved)

    @property
    def pinned(self):
        """``(v,)`` bool: landmarks a re-fit must hold (pinned or checked, and placed)."""
        return self.placed & np.isin(self.states, [PINNED, CHECKED])

    @property
    def can_undo(self):
        return bool(self._undo)

    @property
    def can_redo(self):
        return bool(self._redo)

    @property
    def uncertain(self):
        """``(v,)`` bool: landmarks still as fitted that are likely off (:data:`UNCERTAIN`)."""
        if self.confidence is None:
            return np.zeros(self.n_landmarks, bool)
        return self.placed & (self.states == FITTED) & (self.confidence.p_off >= UNCERTAIN)

    @property
    def predicted_nme(self):
        """The last fit's predicted NME while some landmark is still as fitted, else None."""
        if self.confidence is None or not (self.placed & (self.states == FITTED)).any():
            return None
        return self.confidence.nme

    def doubt_order(self):
        """The landmarks still as fitted, least confident first (highest ``p_off``; ties
        in landmark order); empty without confidence."""
        if self.confidence is None:
            return np.zeros(0, int)
        ks = np.flatnonzero(self.placed & (self.states == FITTED))
        return ks[np.argsort(-self.confidence.p_off[ks], kind="stable")]

    def next_to_check(self, after):
        """The landmark to check after landmark ``after`` in :meth:`doubt_order` (cyclic;
        the least confident when ``after`` is not in it), or None."""
        order = self.doubt_order()
        if not len(order):
            return None
        at = np.flatnonzero(order == after)
        return int(order[(at[0] + 1) % len(order)] if len(at) else order[0])

    def next_missing(self, after):
        """First missing landmark after index ``after`` (cyclic), or None if all are placed."""
        v = self.n_landmarks
        for d in range(1, v + 1):
            k = (after + d) % v
            if not self.placed[k]:
                return k
        return None

    # -- edits (each one undo step) ----------------------------------------------------
    def _push(self):
        self._undo.append(self._snapshot())
        del self._undo[:-MAX_UNDO]
        self._redo.clear()

    def _snapshot(self):
        return self.points.copy(), self.states.copy(), self.current, self.confidence

    def _commit(self, points, states, confidence=_KEEP):
        """Record an edit if it changes anything; returns whether it did. A fit passes its
        ``confidence`` (None: it has none), a person's edit keeps the last fit's."""
        confidence = self.confidence if confidence is _KEEP else confidence
        if _same_points(points, self.points) and np.array_equal(states, self.states) \
                and confidence is self.confidence:
            return False
        self._push()
        self.points, self.states, self.confidence = points, states, confidence
        self.version += 1
        return True

    def set_point(self, k, xy, state=PINNED):
        """Place or move landmark ``k`` to ``xy`` (a person's edit: pinned by default)."""
        pts, sts = self.points.copy(), self.states.copy()
        pts[k] = np.asarray(xy, float)
        sts[k] = state
        changed = self._commit(pts, sts)
        if changed and k == self.current:
            self.current = self.next_missing(k)
        return changed

    def remove_point(self, k):
        pts, sts = self.points.copy(), self.states.copy()
        pts[k] = np.nan
        sts[k] = MISSING
        return self._commit(pts, sts)

    def set_fit(self, points, keep=None, confidence=None):
        """Take a fit result ``(v, 2)``; landmarks in ``keep`` (bool mask) keep their state.

        The others become ``'fitted'``. ``confidence`` (a fit's, or a
        :class:`FitConfidence`) replaces the last fit's.
        """
        points = np.array(points, float)
        if points.shape != self.points.shape:
            raise ValueError(f"expected {self.points.shape} points, got {points.shape}")
        keep = np.zeros(self.n_landmarks, bool) if keep is None else np.asarray(keep, bool)
        sts = np.where(keep, self.states, FITTED).astype(object)
        sts[~np.isfinite(points).all(1)] = MISSING
        changed = self._commit(points, sts, FitConfidence.of(confidence))
        self.current = self.next_missing(-1)
        return changed

    def toggle_pin(self, ks):
        """Pin the given landmarks, or unpin them (-> 'fitted') if all are pinned already."""
        ks = [k for k in np.atleast_1d(ks).astype(int) if self.placed[k]]
        if not ks:
            return False
        sts = self.states.copy()
        new = FITTED if all(sts[k] in (PINNED, CHECKED) for k in ks) else PINNED
        sts[ks] = new
        return self._commit(self.points.copy(), sts)

    def apply_layer(self, indices, xy):
        """Take the content of a Points layer after a person edited it.

        Parameters
        ----------
        indices : (n,) int array
            Landmark index of each layer point; ``-1`` for a point just added, which
            becomes the current target landmark (then the next missing one, ...).
        xy : (n, 2) array
            The layer's points in core ``(x, y)``.

        Returns
        -------
        bool
            Whether anything changed (one undo step). Added and moved landmarks are
            pinned; landmarks absent from the layer are removed. A new point with no
            landmark left to place is dropped.
        """
        indices = np.asarray(indices, int).ravel()
        xy = np.asarray(xy, float).reshape(-1, 2)
        if len(indices) != len(xy):
            raise ValueError("one landmark index per layer point is needed")
        old, pts = self.points, np.full_like(self.points, np.nan)
        sts = np.full(self.n_landmarks, MISSING, object)
        for k, p in zip(indices, xy):
            if 0 <= k < self.n_landmarks:
                pts[k] = p
                sts[k] = self.states[k] if self.states[k] else PINNED
                if not np.all(np.abs(p - old[k]) <= _SAME):  # moved (or new: old is NaN)
                    sts[k] = PINNED
        target = self.current
        placed_any = False
        for p in xy[indices < 0]:
            if target is None:
                break
            pts[target], sts[target] = p, PINNED
            placed_any = True
            free = ~np.isfinite(pts).all(1)
            target = next((int(k) for k in np.roll(np.arange(self.n_landmarks), -target - 1)
                           if free[k]), None)
        changed = self._commit(pts, sts)
        if placed_any:
            self.current = target
        return changed

    def undo(self):
        """Revert the last edit; returns False when there is none."""
        return self._restore(self._undo, self._redo)

    def redo(self):
        """Re-apply the last undone edit; returns False when there is none."""
        return self._restore(self._redo, self._undo)

    def _restore(self, source, other):
        """Pop a snapshot from ``source``, pushing the current one onto ``other``."""
        if not source:
            return False
        other.append(self._snapshot())
        self.points, self.states, self.current, self.confidence = source.pop()
        self.version += 1
        return True

    def step_target(self, delta):
        """Move the guided-placement target by ``delta`` landmarks (skip / back)."""
        start = self.current if self.current is not None else (-1 if delta > 0 else 0)
        self.current = (start + delta) % self.n_landmarks
        return self.current
