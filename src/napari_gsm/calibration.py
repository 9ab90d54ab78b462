"""Calibrated landmark errors: a logistic model of the error given the confidence features.

The model says how a landmark's error ``e`` (reference-frame pixels) is distributed given
its features ``x`` (:func:`~napari_gsm.confidence.landmark_features`, standardised)::

    P(e > t | x) = sigmoid(w . x + b + d_i - beta log t)

for any threshold ``t``, where ``d_i`` is landmark ``i``'s own offset (some landmarks are
harder to place than others whatever the image): ``log e`` is logistic with location
``a / beta``, ``a = w . x + b + d_i``, and scale ``1 / beta``. So one fitted model gives
the probability of being off by more than any threshold (the default, 2 % of the shape's
bounding-box diagonal, or one a person sets) and the expected error
``E[e] = exp(a / beta) (pi / beta) / sin(pi / beta)``.

It is fitted by logistic regression (Newton's method; a small ridge on ``w`` and ``d``,
which keeps a landmark that was never off finite) on the landmarks of cross-validated
fits, each row repeated at five thresholds spanning half to twice the default, so it is
calibrated around the thresholds people use, not only at one. With fewer than
:data:`MIN_IMAGES` fitted images it is not fitted (no confidence).

The fits are kept in the model file (features, errors, the fitted shapes' diagonals), so
an incremental update adds the fit of its image and refits the model
(:meth:`Calibration.add`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .confidence import FEATURES, OFF_FRACTION

__all__ = ["Calibration", "MIN_IMAGES", "MAX_IMAGES", "logistic_loss", "fit_logistic"]

#: Fewer fitted images than this give no calibration (too few to fit the model on).
MIN_IMAGES = 4
#: At most this many fitted images are kept (the oldest go first).
MAX_IMAGES = 400
#: Thresholds, as multiples of the default, each training row is repeated at.
THRESHOLD_STEPS = 2.0 ** np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
#: Ridge weight on the standardised feature weights and the landmarks' offsets.
RIDGE = 1.0
#: ``beta`` is kept above this for the expected error (the mean of ``e`` needs beta > 1).
_MIN_BETA = 1.2


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def logistic_loss(theta, A, group, y, ridge):
    """Negative log-likelihood of a logistic regression with a per-group offset, its
    gradient and Hessian.

    The linear predictor of row ``r`` is ``A[r] @ theta[:p] + theta[p + group[r]]``: a
    dense design plus a one-hot group (here: which landmark), without building the one-hot
    columns (``v`` of them, mostly zeros).

    Parameters
    ----------
    theta : (p + g,) array
    A : (n, p) array
        Dense design matrix.
    group : (n,) int array
        Each row's group, in ``0..g-1``.
    y : (n,) array of 0/1
    ridge : (p + g,) array
        ``0.5 * sum(ridge * theta**2)`` is added (0 for unpenalised entries).

    Returns
    -------
    loss : float
    grad : (p + g,) array
    hess : (p + g, p + g) array
    """
    p = A.shape[1]
    g = len(theta) - p
    z = A @ theta[:p] + theta[p:][group]
    # log(1 + exp(z)) without overflow
    loss = float((np.logaddexp(0.0, z) - y * z).sum() + 0.5 * (ridge * theta * theta).sum())
    prob = _sigmoid(z)
    r, w = prob - y, prob * (1 - prob)
    grad = np.concatenate([A.T @ r, np.bincount(group, r, g)]) + ridge * theta
    Aw = A * w[:, None]
    hess = np.empty((p + g, p + g))
    hess[:p, :p] = Aw.T @ A
    cross = np.stack([np.bincount(group, Aw[:, j], g) for j in range(p)])  # (p, g)
    hess[:p, p:] = cross
    hess[p:, :p] = cross.T
    hess[p:, p:] = np.diag(np.bincount(group, w, g))
    hess[np.diag_indices(p + g)] += ridge
    return loss, grad, hess


def fit_logistic(A, group, y, ridge, theta=None, max_iter=50, tol=1e-8):
    """Minimise :func:`logistic_loss` by Newton's method with step halving."""
    theta = np.zeros(len(ridge)) if theta is None else np.array(theta, float)
    loss, grad, hess = logistic_loss(theta, A, group, y, ridge)
    for _ in range(max_iter):
        step = -np.linalg.solve(hess + 1e-9 * np.eye(len(theta)), grad)
        t = 1.0
        while True:
            new = theta + t * step
            new_loss, new_grad, new_hess = logistic_loss(new, A, group, y, ridge)
            if new_loss <= loss + 1e-12 * abs(loss) or t < 1e-4:
                break
            t *= 0.5
        done = loss - new_loss <= tol * max(abs(loss), 1.0)
        theta, loss, grad, hess = new, new_loss, new_grad, new_hess
        if done:
            break
    return theta


@dataclass
class Calibration:
    """Fitted landmarks with known errors, and the error model fitted on them.

    Attributes
    ----------
    X : (n, v, k) float32 array
        :func:`~napari_gsm.confidence.landmark_features` of ``n`` fits.
    errors : (n, v) float32 array
        Their landmarks' true errors, reference-frame pixels (NaN: no truth).
    diagonals : (n,) float32 array
        Bounding-box diagonal of each fitted shape, reference-frame pixels.
    off_fraction : float
        The default off threshold, a fraction of the fitted shape's diagonal.
    mean, std : (k,) arrays or None
        Feature standardisation.
    coef : (k + v + 2,) array or None
        ``w``, ``b``, ``-beta`` (the weight of ``log t``) and the landmarks' offsets ``d_i``;
        None until :meth:`fit` has run on at least :data:`MIN_IMAGES` images.
    info : dict
        JSON-able record: ``source`` (how the fits were made), ``n_images``, ``n_added``
        (images added by incremental updates), ``beta``, and after training ``cv``
        (:meth:`cross_validate`).
    """

    X: np.ndarray
    errors: np.ndarray
    diagonals: np.ndarray
    off_fraction: float = OFF_FRACTION
    mean: np.ndarray = None
    std: np.ndarray = None
    coef: np.ndarray = None
    info: dict = field(default_factory=dict)

    @classmethod
    def empty(cls, v, *, source=""):
        k = len(FEATURES)
        return cls(X=np.zeros((0, v, k), np.float32), errors=np.zeros((0, v), np.float32),
                   diagonals=np.zeros(0, np.float32), info={"source": source})

    @property
    def n_images(self):
        return len(self.X)

    @property
    def ready(self):
        """Whether the error model has been fitted."""
        return self.coef is not None

    # -- fitting -------------------------------------------------------------------------
    def _design(self, X, log_t):
        """Dense rows ``[standardised x, 1, log t]`` for features ``(m, k)`` and ``(m,)``
        log t (the landmark's offset is :func:`logistic_loss`'s group)."""
        return np.column_stack([(X - self.mean) / self.std, np.ones(len(X)), log_t])

    def fit(self):
        """(Re)fit the error model on the kept fits; returns self.

        With fewer than :data:`MIN_IMAGES` images the model stays unfitted.
        """
        if self.n_images < MIN_IMAGES:
            self.coef = None
            return self
        n, v, k = self.X.shape
        X = self.X.reshape(-1, k).astype(float)
        e = self.errors.reshape(-1).astype(float)
        diag = np.repeat(self.diagonals.astype(float), v)
        landmark = np.tile(np.arange(v), n)
        ok = np.isfinite(e) & np.isfinite(X).all(1)
        X, e, diag, landmark = X[ok], e[ok], diag[ok], landmark[ok]
        self.mean = X.mean(0)
        self.std = X.std(0) + 1e-6
        t = self.off_fraction * diag[:, None] * THRESHOLD_STEPS[None, :]  # (m, 5)
        r = len(THRESHOLD_STEPS)
        A = self._design(np.repeat(X, r, 0), np.log(t).reshape(-1))
        y = (e[:, None] > t).reshape(-1).astype(float)
        ridge = np.full(k + 2 + v, RIDGE)
        ridge[k:k + 2] = 0.0  # the intercept and the weight of log t
        start = self.coef if self.coef is not None and len(self.coef) == len(ridge) else None
        self.coef = fit_logistic(A, np.repeat(landmark, r), y, ridge, start)
        self.info["n_images"] = self.n_images
        self.info["beta"] = round(float(-self.coef[k + 1]), 4)
        return self

    def add(self, X, errors, diagonal):
        """Add one fit (``(v, k)`` features, ``(v,)`` errors, its diagonal) and refit."""
        self.X = np.concatenate([self.X, np.asarray(X, np.float32)[None]])[-MAX_IMAGES:]
        self.errors = np.concatenate([self.errors, np.asarray(errors, np.float32)[None]])[
            -MAX_IMAGES:]
        self.diagonals = np.append(self.diagonals, np.float32(diagonal))[-MAX_IMAGES:]
        self.info["n_added"] = self.info.get("n_added", 0) + 1
        return self.fit()

    def cross_validate(self, folds=5, seed=0):
        """How well the error model predicts fits it was not fitted on.

        The kept fits are split by image into ``folds``; each fold's landmarks are
        predicted by the model fitted on the others, at the default threshold. Returns
        (and keeps in ``info['cv']``) :func:`~napari_gsm.evaluate.confidence_summary`'s
        numbers, the NME being the mean error over the fitted shape's diagonal; None with
        fewer than ``2 * MIN_IMAGES`` images.
        """
        from .evaluate import confidence_summary

        n = self.n_images
        if n < 2 * MIN_IMAGES:
            return None
        order = np.random.default_rng(seed).permutation(n)
        p_off, off, predicted, true = [], [], [], []
        for f in range(folds):
            test = order[f::folds]
            train = np.setdiff1d(order, test)
            part = Calibration(self.X[train], self.errors[train], self.diagonals[train],
                               self.off_fraction).fit()
            for i in test:
                t = self.off_fraction * float(self.diagonals[i])
                p, expected = part.predict(self.X[i], t)
                ok = np.isfinite(self.errors[i])
                p_off.append(p[ok])
                off.append(self.errors[i][ok] > t)
                predicted.append(expected.mean() / self.diagonals[i])
                true.append(np.nanmean(self.errors[i]) / self.diagonals[i])
        # plain JSON for the model file: NaN (e.g. no landmark off) becomes None
        cv = {k: x if isinstance(x, int) else round(float(x), 4) if np.isfinite(x) else None
              for k, x in confidence_summary(p_off, off, predicted, true).items()}
        self.info["cv"] = cv
        return cv

    # -- prediction ----------------------------------------------------------------------
    def predict(self, X, threshold):
        """Off probability and expected error of landmarks with features ``(v, k)``.

        ``threshold`` is in the features' unit (reference-frame pixels), a scalar or
        ``(v,)``. Returns ``(p_off, expected_error)``, both ``(v,)``.
        """
        if not self.ready:
            raise ValueError("the calibration has not been fitted")
        k = len(self.mean)
        a = self._design(np.asarray(X, float), np.zeros(len(X))) @ self.coef[:k + 2] \
            + self.coef[k + 2:]
        beta = -self.coef[k + 1]
        p_off = _sigmoid(a - beta * np.log(threshold))
        return p_off, self.expected_error(a, beta)

    @staticmethod
    def expected_error(a, beta):
        """``E[e]`` when ``log e`` is logistic with location ``a / beta``, scale ``1/beta``."""
        b = max(float(beta), _MIN_BETA)
        return np.exp(np.asarray(a) / b) * (np.pi / b) / np.sin(np.pi / b)

    # -- files ---------------------------------------------------------------------------
    def to_arrays(self):
        out = {"calib_X": self.X, "calib_errors": self.errors,
               "calib_diagonals": self.diagonals}
        if self.ready:
            out.update(calib_mean=self.mean, calib_std=self.std, calib_coef=self.coef)
        return out

    def params(self):
        return {**self.info, "off_fraction": self.off_fraction, "features": list(FEATURES)}

    @classmethod
    def from_arrays(cls, arrays, params):
        """Read back :meth:`to_arrays` / :meth:`params`; None if the file has none."""
        if "calib_X" not in arrays:
            return None
        params = dict(params or {})
        names = params.pop("features", list(FEATURES))
        off = float(params.pop("off_fraction", OFF_FRACTION))
        out = cls(X=np.asarray(arrays["calib_X"], np.float32),
                  errors=np.asarray(arrays["calib_errors"], np.float32),
                  diagonals=np.asarray(arrays["calib_diagonals"], np.float32),
                  off_fraction=off, info=params)
        if list(names) != list(FEATURES):
            # Features of another version: refit on what can be read, else drop the data.
            return cls.empty(out.X.shape[1], source="features of another version")
        if "calib_coef" in arrays:
            out.mean = np.asarray(arrays["calib_mean"], float)
            out.std = np.asarray(arrays["calib_std"], float)
            out.coef = np.asarray(arrays["calib_coef"], float)
        return out
