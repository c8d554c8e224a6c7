"""BRISQUE, a no-reference naturalness score (Mittal, Moorthy & Bovik 2012, "No-reference image quality
assessment in the spatial domain", IEEE TIP 21(12)): MSCN coefficients, generalised-Gaussian and asymmetric
generalised-Gaussian fits by moment matching at two scales (36 features), scored by the epsilon-SVR (RBF kernel)
trained on the LIVE database that the ``brisque`` wheel ships (Apache-2.0, licence in
``crispedit/data/brisque_live.LICENSE``), converted once into plain arrays (``crispedit/data/brisque_live.npz``,
read with ``allow_pickle=False``: no pickle is ever loaded). Informational in the gate (the HTML report shows it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ["BRISQUE_MODEL_PATH", "brisque_available", "brisque_score"]


# ----------------------------------------------------------------------------------------------------------------
# BRISQUE (no-reference quality): features computed here, the fitted model shipped as plain arrays
# ----------------------------------------------------------------------------------------------------------------
_BRISQUE_MODEL: dict[str, Any] | None = None
_BRISQUE_TRIED = False
#: The LIVE-trained epsilon-SVR (RBF) and feature scaling of the ``brisque`` wheel (Apache-2.0, licence beside it),
#: converted once by ``bench/brisque_model.py`` into a numpy archive: no pickle is ever loaded.
BRISQUE_MODEL_PATH = Path(__file__).resolve().parents[1] / "data" / "brisque_live.npz"


def _load_brisque() -> dict[str, Any] | None:
    """The shipped BRISQUE model (``gamma``, ``rho``, ``coef``, ``sv``, ``min``, ``max``) or None when absent."""
    global _BRISQUE_MODEL, _BRISQUE_TRIED
    if _BRISQUE_TRIED:
        return _BRISQUE_MODEL
    _BRISQUE_TRIED = True
    try:
        with np.load(BRISQUE_MODEL_PATH, allow_pickle=False) as z:
            _BRISQUE_MODEL = {k: np.asarray(z[k], np.float64) for k in ("coef", "sv", "min", "max")}
            _BRISQUE_MODEL.update(gamma=float(z["gamma"]), rho=float(z["rho"]), source=str(BRISQUE_MODEL_PATH))
    except (OSError, KeyError, ValueError):  # a missing or broken optional model only disables the metric
        _BRISQUE_MODEL = None
    return _BRISQUE_MODEL


def brisque_available() -> bool:
    """True when the shipped BRISQUE model (``crispedit/data/brisque_live.npz``) can be read."""
    return _load_brisque() is not None


_GAMMA_GRID = np.arange(0.2, 10.0, 0.001)


def _rho_grid() -> np.ndarray:
    from scipy.special import gammaln

    g = _GAMMA_GRID
    return np.exp(2 * gammaln(2 / g) - gammaln(1 / g) - gammaln(3 / g))


_RHO = None


def _aggd(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian fit by moment matching (Lasmar et al. 2009), as in BRISQUE."""
    global _RHO
    from scipy.special import gammaln

    if _RHO is None:
        _RHO = _rho_grid()
    x = x.ravel().astype(np.float64)
    left, right = x[x < 0], x[x >= 0]
    sl = math.sqrt(np.mean(left**2)) if left.size else 1e-6
    sr = math.sqrt(np.mean(right**2)) if right.size else 1e-6
    gam = sl / max(sr, 1e-12)
    r_hat = np.mean(np.abs(x)) ** 2 / max(np.mean(x**2), 1e-12)
    R_hat = r_hat * (gam**3 + 1) * (gam + 1) / (gam**2 + 1) ** 2
    alpha = float(_GAMMA_GRID[np.argmin((_RHO - R_hat) ** 2)])
    const = math.exp(0.5 * (gammaln(1 / alpha) - gammaln(3 / alpha)))
    mean = (sr - sl) * const * math.exp(gammaln(2 / alpha) - gammaln(1 / alpha))
    return alpha, mean, sl, sr


def _brisque_features(gray: np.ndarray) -> np.ndarray:
    """36 BRISQUE features (Mittal, Moorthy & Bovik 2012) of a grey image in [0, 1], two scales."""
    feats = []
    img = gray.astype(np.float64)
    for _ in range(2):
        mu = cv2.GaussianBlur(img, (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE)
        var = cv2.GaussianBlur(img * img, (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE) - mu * mu
        mscn = (img - mu) / (np.sqrt(np.abs(var)) + 1.0 / 255.0)
        a, _, sl, sr = _aggd(mscn)
        feats += [a, (sl**2 + sr**2) / 2]
        for sh in (
            mscn[:, :-1] * mscn[:, 1:],
            mscn[:-1, :] * mscn[1:, :],
            mscn[:-1, :-1] * mscn[1:, 1:],
            mscn[1:, :-1] * mscn[:-1, 1:],
        ):
            a, m, sl, sr = _aggd(sh)
            feats += [a, m, sl**2, sr**2]
        img = cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    return np.array(feats)


def brisque_score(rgb_or_gray: np.ndarray) -> float | None:
    """BRISQUE score (lower = more natural, roughly 0..100) of a patch, or None without the model.

    The features are computed here; the fitted SVR (LIVE database, from the ``brisque`` wheel, Apache-2.0) is read
    from ``crispedit/data/brisque_live.npz`` with ``allow_pickle=False``.
    """
    from crispedit.quality.metrics import _luma, as_float  # (metrics re-exports this module's functions)

    model = _load_brisque()
    if model is None:
        return None
    f = as_float(rgb_or_gray)
    if f.ndim == 3:
        f = _luma(np.ascontiguousarray(f[:, :, :3])) if f.shape[2] >= 3 else f[:, :, 0]
    if min(f.shape) < 32:
        return None
    x = _brisque_features(f)
    xs = -1 + 2.0 * (x - model["min"]) / (model["max"] - model["min"])
    d2 = np.sum((model["sv"] - xs[None, :]) ** 2, axis=1)
    return float(np.dot(model["coef"], np.exp(-model["gamma"] * d2)) - model["rho"])
