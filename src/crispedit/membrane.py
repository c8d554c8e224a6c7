"""Smooth membrane interpolation (push-pull) and the boundary seam correction built on it.

A gradient-domain (Poisson) blend keeps the edit's gradients and forces its boundary to agree with the
surroundings: the correction is the harmonic interpolation of the boundary mismatch. Push-pull over a Gaussian
pyramid (Gortler et al. 1996) gives a close, fast approximation of that membrane.
"""

from __future__ import annotations

import cv2
import numpy as np


def push_pull_fill(img: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill ``~valid`` pixels of ``img`` (H x W x C float32) with a smooth membrane of the valid ones.

    Down the pyramid, values and weights are averaged together; up the pyramid, holes take the coarser level's
    estimate where the local weight is small. Valid pixels come back unchanged.
    """
    w = valid.astype(np.float32)
    levels = [(img * w[..., None], w)]
    while min(levels[-1][1].shape) > 8:
        c, wt = levels[-1]
        c2 = cv2.pyrDown(c)
        levels.append((c2.reshape(c2.shape[0], c2.shape[1], -1), cv2.pyrDown(wt)))
    c, wt = levels[-1]
    fill = c / np.maximum(wt, 1e-6)[..., None]
    for c, wt in reversed(levels[:-1]):
        up = cv2.pyrUp(fill, dstsize=(wt.shape[1], wt.shape[0])).reshape(c.shape)
        est = c / np.maximum(wt, 1e-6)[..., None]
        alpha = np.clip(wt * 2.0, 0.0, 1.0)[..., None]
        fill = alpha * est + (1 - alpha) * up
    return fill


def seam_correct(edited: np.ndarray, original: np.ndarray, region: np.ndarray, *, rim: int = 3,
                 sigma: float = 4.0) -> np.ndarray:
    """Remove the low-frequency step between ``edited`` inside ``region`` and ``original`` outside it.

    The mismatch is measured along the region's border (local means of the original just outside against the
    edit just inside, Gaussian ``sigma``), spread over the region as a membrane, and added to the edit there.
    """
    inside = region.astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rim + 1, 2 * rim + 1))
    inner = (inside & ~cv2.erode(inside, k)).astype(bool)
    outer = (cv2.dilate(inside, k) & ~inside).astype(bool)
    if not inner.any() or not outer.any():
        return edited

    def local_mean(img: np.ndarray, sel: np.ndarray) -> np.ndarray:
        wsum = cv2.GaussianBlur(sel.astype(np.float32), (0, 0), sigma)
        vsum = cv2.GaussianBlur(img * sel[..., None], (0, 0), sigma).reshape(img.shape)
        return vsum / np.maximum(wsum, 1e-6)[..., None]

    mismatch = local_mean(original, outer) - local_mean(edited, inner)
    border = inner | ~region.astype(bool)
    values = np.where(inner[..., None], mismatch, 0.0).astype(np.float32)
    corr = push_pull_fill(values, border)
    out = edited.copy()
    sel = region.astype(bool)
    out[sel] = edited[sel] + corr[sel]
    return out
