"""The membrane (harmonic interpolation) solver, and the boundary seam correction built on it.

A gradient-domain (Poisson) blend keeps the edit's gradients and forces its boundary to agree with the
surroundings: the correction is the harmonic interpolation of the boundary mismatch, the membrane. One solver,
:func:`membrane_solve`, serves every such step of crispedit: the local tone match of the harness
(``compositing.tone_match``, a soft fit to a ring), its seam correction (:func:`seam_correct`, pinned to the
border mismatch) and the classical engine's tone lock (pinned to the fill's surroundings). It solves the
membrane's sparse linear system exactly (scipy.sparse.linalg, SuperLU) on a coarse grid: the membranes are
smooth, so a grid cell of a few pixels to a few tens of pixels is enough, and a few thousand to a hundred
thousand cells take milliseconds to a fraction of a second.
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from crispedit.arrays import add_where
from crispedit.geometry import mask_bbox

__all__ = ["membrane_solve", "neumann_laplacian", "seam_correct"]


def neumann_laplacian(gh: int, gw: int) -> sp.csr_matrix:
    """Graph Laplacian of a ``gh`` x ``gw`` 4-connected grid (zero-flux, i.e. Neumann, borders).

    Returns
    -------
    scipy.sparse.csr_matrix, shape (gh * gw, gh * gw), float64
        ``D_x^T D_x + D_y^T D_y`` with forward differences; cells in row-major order. Positive
        semi-definite; its null space is the constants.
    """
    # built from its entries (the same matrix as D_x^T D_x + D_y^T D_y, without the sparse products): -1 between
    # 4-neighbours, each cell's degree on the diagonal
    n = gh * gw
    idx = np.arange(n).reshape(gh, gw)
    a = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    b = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    deg = np.bincount(a, minlength=n) + np.bincount(b, minlength=n)
    rows = np.concatenate([a, b, np.arange(n)])
    cols = np.concatenate([b, a, np.arange(n)])
    data = np.concatenate([np.full(2 * a.size, -1.0), deg.astype(np.float64)])
    lap = sp.csr_matrix((data, (rows, cols)), shape=(n, n))
    lap.eliminate_zeros()  # a lone cell's degree 0
    lap.sort_indices()
    return lap


def membrane_solve(values: np.ndarray, weight: np.ndarray, *, stiffness: float | None = None,
                   screening: float = 0.0) -> np.ndarray:
    """The membrane (harmonic interpolation) of ``values`` where ``weight`` holds them, on a grid.

    Minimises ``sum |grad u|^2 + stiffness * sum weight * (u - values)^2`` over the grid (4-neighbour
    differences, zero-flux borders), per channel, by a sparse direct solve of its normal equations
    ``(L + stiffness W) u = stiffness W values`` (scipy.sparse.linalg.splu, one factorisation for all
    channels). With ``stiffness=None`` the data are hard constraints: cells with ``weight > 0`` keep their
    values exactly (Dirichlet) and only the others are solved, ``L_ff u_f = -L_fc values_c``: the classical
    membrane interpolation (Pérez et al. 2003, "Poisson image editing"). The membrane reproduces constants
    and linear ramps and never overshoots the data (maximum principle). A group of free cells that touches no
    data gets 0. ``screening`` (``mu``) adds ``mu * sum u^2`` over the cells that are not hard data: the
    screened membrane (screened Poisson equation, Bhat et al. 2008, "Fourier analysis of the 2D screened
    Poisson equation for gradient domain problems") fades to 0 over about ``1 / sqrt(mu)`` cells away from
    its data; with hard data, cells farther than ``6 / sqrt(mu)`` from any (where it is below 0.25 % of the
    data) are set to 0 without solving.

    It replaces the push-pull pyramid approximation (Gortler et al. 1996) the seam correction and the
    classical tone lock used before (docs/benchmarks.md, "membrane solver": before/after figures).

    Parameters
    ----------
    values : ndarray, shape (gh, gw) or (gh, gw, C), float
        Data; only cells with ``weight > 0`` are read.
    weight : ndarray, shape (gh, gw), float in [0, 1] or bool
        Confidence of each cell's data (soft fit), or which cells are data (hard, ``stiffness=None``).
    stiffness : float or None
        Weight of the data term against smoothness, in cells^-2 (a soft fit pulls about ``1 / sqrt(stiffness)``
        cells away from noisy data); ``None`` for hard constraints.
    screening : float
        ``mu >= 0``, in cells^-2: the decay of the membrane away from its data (0: none, the plain membrane).

    Returns
    -------
    ndarray of float32, same shape as ``values``

    Raises
    ------
    ValueError
        If ``weight``'s shape is not ``values``'s first two dimensions, or ``stiffness`` or ``screening``
        is negative.

    Examples
    --------
    >>> v = np.zeros((1, 5), np.float32); v[0, 4] = 4.0
    >>> w = np.zeros((1, 5)); w[0, [0, 4]] = 1
    >>> membrane_solve(v, w).round(3).tolist()
    [[0.0, 1.0, 2.0, 3.0, 4.0]]
    """
    vals = np.asarray(values, np.float64)
    was_2d = vals.ndim == 2
    if was_2d:
        vals = vals[:, :, None]
    gh, gw, c = vals.shape
    wt = np.asarray(weight, np.float64)
    if wt.shape != (gh, gw):
        raise ValueError(f"weight has shape {wt.shape}, values {vals.shape[:2]}")
    if stiffness is not None and stiffness < 0:
        raise ValueError(f"stiffness must be >= 0 or None, got {stiffness}")
    if screening < 0:
        raise ValueError(f"screening must be >= 0, got {screening}")
    flat = vals.reshape(-1, c)
    lap = neumann_laplacian(gh, gw)
    # the systems are symmetric: a minimum-degree ordering of A^T + A fills in less than the default COLAMD
    if stiffness is None:
        fixed = wt.reshape(-1) > 0
        free = ~fixed
        out = np.where(fixed[:, None], flat, 0.0)
        if screening > 0 and free.any() and fixed.any():
            # a screened membrane decays as exp(-d sqrt(mu)): cells farther than 6 / sqrt(mu) from the data
            # (under 0.25 % of it) are left at 0 and not solved
            dist = cv2.distanceTransform(free.reshape(gh, gw).astype(np.uint8), cv2.DIST_L2, 5)
            free &= dist.reshape(-1) <= 6.0 / np.sqrt(screening)
        if free.any() and fixed.any():
            a = lap[free][:, free]
            # (a tiny diagonal keeps a free group without data solvable: it then solves to 0)
            a = (a + sp.identity(a.shape[0], format="csc") * max(float(screening), 1e-9)).tocsc()
            rhs = -(lap[free][:, fixed] @ flat[fixed])  # the pinned neighbours' pull
            out[free] = spla.splu(a, permc_spec="MMD_AT_PLUS_A").solve(np.asarray(rhs, np.float64))
    else:
        data = float(stiffness) * wt.reshape(-1)
        if not data.any():
            out = np.zeros_like(flat)
        else:
            system = (lap + sp.diags(data + float(screening))).tocsc()
            out = spla.splu(system, permc_spec="MMD_AT_PLUS_A").solve(data[:, None] * flat)
    res = out.reshape(gh, gw, c).astype(np.float32)
    return res[:, :, 0] if was_2d else res


class _AreaReduction:
    """``cv2.resize(a, (lw, lh), interpolation=cv2.INTER_AREA)`` of an ``h`` x ``w`` image that is zero except at a
    few pixels, from those pixels' values alone: each source pixel adds its overlap with every reduced cell (at
    most 2 x 2 of them), in float64 (OpenCV sums in float32: the same sums to float32 rounding)."""

    def __init__(self, h: int, w: int, lh: int, lw: int) -> None:
        self.w, self.lw, self.cells = w, lw, lh * lw
        self.y = self._axis(h, lh)
        self.x = self._axis(w, lw)

    @staticmethod
    def _axis(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per source pixel along an axis of ``n`` px reduced to ``m`` cells: (first cell, its weight, next cell,
        its weight); the weights are the overlaps divided by the cell size ``n / m``."""
        scale = n / m
        x = np.arange(n, dtype=np.float64)
        c0 = np.minimum(np.floor(x / scale).astype(np.int64), m - 1)
        w0 = np.minimum((c0 + 1) * scale, x + 1.0) - x
        c1 = np.minimum(c0 + 1, m - 1)
        return c0, w0 / scale, c1, (1.0 - w0) / scale

    def sums(self, idx: np.ndarray, vals: np.ndarray) -> np.ndarray:
        """The reduced ``(lh, lw, K)`` float32 image of the pixels at flat indices ``idx`` holding ``vals`` (N, K)."""
        yy, xx = np.divmod(idx, self.w)
        y0, wy0, y1, wy1 = (a[yy] for a in self.y)
        x0, wx0, x1, wx1 = (a[xx] for a in self.x)
        rows = np.concatenate([y0 * self.lw + x0, y0 * self.lw + x1, y1 * self.lw + x0, y1 * self.lw + x1])
        data = np.concatenate([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1])
        out = np.empty((self.cells, vals.shape[1]), np.float32)
        for j in range(vals.shape[1]):
            out[:, j] = np.bincount(rows, weights=data * np.tile(vals[:, j], 4), minlength=self.cells)
        return out.reshape(self.cells // self.lw, self.lw, -1)


def seam_correct(edited: np.ndarray, original: np.ndarray, region: np.ndarray, *, rim: int = 3,
                 sigma: float = 4.0, fade: float | None = None, order: int = 1) -> np.ndarray:
    """Remove the low-frequency step between ``edited`` inside ``region`` and ``original`` outside it.

    The mismatch is measured along the region's border (the original within ``rim`` px outside against the
    edit within ``rim`` px inside, Gaussian-weighted over ``sigma``), spread over the region as a membrane,
    and added to the edit there. With ``order=1`` (default) each side is a local linear fit in the distance
    from the border (first-order normalised convolution, Knutsson & Westin 1993), extrapolated to the border
    itself: a smooth gradient crossing the border (a bokeh edge, a sky darkening towards the horizon) is no
    step, while a plain difference of rim means (``order=0``) reads it as one of about the gradient times the
    rim width and "corrects" it into a visible band (bench/zoom.py, dragonfly r=150: boundary gradient ratio
    1.57 with order 0, 1.0 without any seam correction). The step taken is the minmod of both readings (the
    smaller where they agree in sign, else 0): an edge within the rim throws the extrapolation off, not both. The correction is smooth, so it is computed on a copy reduced by
    about ``sigma / 2`` and upsampled: cheap on 3000-px crops. The membrane is :func:`membrane_solve` pinned
    to the mismatch on the border and to 0 outside the region, screened so that it fades into the region over
    about ``fade`` px (default three cells of the reduced copy, about ``1.5 sigma``): the step is a border
    effect, and carrying it unchanged deep into the region cost 1.8 dB of lpPSNR in bench/zoom.py
    (docs/benchmarks.md, "membrane solver"). ``fade=0``: the plain membrane.
    """
    bb = mask_bbox(region, rim + int(3 * sigma) + 2)
    if bb is None:
        return edited
    box = bb.slices
    r = region[box].astype(np.uint8)
    h, w = r.shape
    k = max(1, int(sigma // 2))
    lw, lh = max(1, round(w / k)), max(1, round(h / k))

    def down(a: np.ndarray) -> np.ndarray:
        return cv2.resize(a, (lw, lh), interpolation=cv2.INTER_AREA).reshape(lh, lw, -1)

    inside = r
    kern = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rim + 1, 2 * rim + 1))
    eroded: np.ndarray = cv2.erode(inside, kern)
    dilated: np.ndarray = cv2.dilate(inside, kern)
    inner = inside & ~eroded
    inner_idx = np.flatnonzero(inner)
    outer_idx = np.flatnonzero(dilated & ~inside)
    if not inner_idx.size or not outer_idx.size:
        return edited
    s_low = max(0.5, sigma / k)
    # the rims are thin: their sums on the reduced grid (cv2.resize's INTER_AREA weights, applied to the rim
    # pixels only, in float64) instead of full-size products that are zero off the rims
    area = _AreaReduction(h, w, lh, lw)

    y_off, x_off = bb[1], bb[0]

    def local_mean(img: np.ndarray, idx: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The side's value at the border: its local mean and its local linear fit in ``dist`` taken at 0
        (``img``: the whole image; ``idx``, ``dist``: flat indices and distances in the box)."""
        full = np.ascontiguousarray(img if img.ndim == 3 else img[:, :, None])
        nc = full.shape[2]
        yy, xx = np.divmod(idx, w)
        vals = full.reshape(-1, nc).take((yy + y_off) * full.shape[1] + (xx + x_off), axis=0).astype(np.float64)
        dd = dist.reshape(-1).take(idx).astype(np.float64)
        cols = [np.ones_like(dd), dd, dd * dd, vals, vals * dd[:, None]] if order >= 1 else [np.ones_like(dd), vals]
        reduced = area.sums(idx, np.column_stack(cols))
        sums = cv2.GaussianBlur(reduced, (0, 0), s_low).reshape(lh, lw, -1)
        s0 = sums[..., :1]
        v0 = sums[..., -2 * nc:-nc] if order >= 1 else sums[..., 1:]
        mean = v0 / np.maximum(s0, 1e-6)
        if order < 1:
            return mean, mean
        s1, s2, v1 = sums[..., 1:2], sums[..., 2:3], sums[..., -nc:]
        det = s0 * s2 - s1 * s1
        # where the rim's distances barely vary (a corner of one pixel), the plain mean
        ok = det > 1e-3 * np.maximum(s0 * s0, 1e-12) * max(1.0, rim) ** 2
        fit = (s2 * v0 - s1 * v1) / np.where(ok, det, 1.0)
        return mean, np.where(ok, fit, mean)

    # distance of each rim pixel from the border (pixel centres half a pixel off it)
    d_out = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 5) - 0.5
    d_in = cv2.distanceTransform(inside, cv2.DIST_L2, 5) - 0.5
    mo0, mo1 = local_mean(original, outer_idx, d_out)
    me0, me1 = local_mean(edited, inner_idx, d_in)
    step0, step1 = mo0 - me0, mo1 - me1
    # minmod of the two readings (the smaller where they agree in sign, else none): a real step (an engine's
    # offset) reads the same both ways; a ramp reads only in the means, an edge in the rim mostly in the fit
    step = np.where(step0 * step1 > 0, np.where(np.abs(step0) < np.abs(step1), step0, step1), 0.0)
    inner_d = down(inner.astype(np.float32))[..., 0]
    region_d = down(inside.astype(np.float32))[..., 0]
    rim_d = inner_d > 0.25
    values = np.where(rim_d[..., None], step, 0.0).astype(np.float32)
    fade_cells = 3.0 if fade is None else float(fade) / k
    screening = 1.0 / fade_cells ** 2 if fade_cells > 0 else 0.0
    corr = membrane_solve(values, rim_d | (region_d < 0.5), screening=screening)
    corr = cv2.resize(corr, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
    out = edited.copy()
    add_where(out[box], corr.astype(out.dtype, copy=False), r.astype(bool))
    return out
