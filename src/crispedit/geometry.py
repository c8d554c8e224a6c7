"""Boxes and tiles: the one geometry convention of the library.

**Box convention.** A :class:`Box` is ``(x0, y0, x1, y1)``: column then row, end-exclusive, in the px of the
array it refers to (image px, or latent px for latent tiles) — the order of PIL's ``Image.crop`` and of
``crispedit edit --box``. It is a :class:`~typing.NamedTuple`, so it compares equal to (and unpacks like) a
plain 4-tuple; index an ``H x W`` array with ``array[box.slices]`` (= ``array[y0:y1, x0:x1]``).

**Tiles.** Two tilings, with different jobs and names:

- :func:`pixel_tiles` (image px; the harness's native-scale refinement tiles): *balanced* — the fewest tiles
  that fit, shrunk to one common size (a multiple of 8) and spread evenly, so the overlap does not pile up at the
  far edge and engine work stays close to the area.
- :func:`latent_tiles` (latent px; tiled UNet sampling, window attention): fixed ``tile x tile`` tiles
  (``min(tile, side)``), consecutive ones overlapping by at least ``overlap``, the last flush with the end
  (:func:`tile_starts`), the layout of Mixture of Diffusers / MultiDiffusion.

Both return row-major lists (top row first, left to right) of :class:`Box`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["Box", "mask_bbox", "union", "overlaps", "tile_starts", "balanced_spans", "pixel_tiles", "latent_tiles"]


class Box(NamedTuple):
    """``(x0, y0, x1, y1)``: column then row, end-exclusive (the module docstring has the convention)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices: ``array[box.slices]`` is the box's part of an ``H x W[...]`` array."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def mask_bbox(mask: np.ndarray, pad: int = 0) -> Box | None:
    """Bounding box of the True pixels of ``mask``, grown by ``pad`` px and clamped to the array.

    Parameters
    ----------
    mask : numpy.ndarray
        Bool (or nonzero = True) array, shape ``(H, W)``.
    pad : int
        Margin added on every side (px), clamped to ``[0, W] x [0, H]``.

    Returns
    -------
    Box or None
        ``(x0, y0, x1, y1)`` as Python ints, end-exclusive; None when ``mask`` has no True pixel.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0]:rows[-1] + 1].any(axis=0))
    h, w = mask.shape[:2]
    return Box(max(0, int(cols[0]) - pad), max(0, int(rows[0]) - pad),
               min(w, int(cols[-1]) + 1 + pad), min(h, int(rows[-1]) + 1 + pad))


def union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> Box:
    """Smallest :class:`Box` holding boxes ``a`` and ``b``."""
    return Box(min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """True when boxes ``a`` and ``b`` share at least one pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)``, consecutive tiles overlapping by at
    least ``overlap``; the last tile is flush with the end.

    Raises
    ------
    ValueError
        ``length`` or ``tile`` not positive, or ``overlap`` outside ``[0, tile)``.

    Examples
    --------
    >>> tile_starts(64, 64, 16)
    [0]
    >>> tile_starts(160, 64, 16)
    [0, 48, 96]
    """
    if length <= 0 or tile <= 0:
        raise ValueError(f"length and tile must be positive, got length={length}, tile={tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def balanced_spans(length: int, tile: int, overlap: int, multiple: int = 8) -> list[tuple[int, int]]:
    """Fewest spans ``[a, b)`` of at most ``tile`` px covering ``[0, length)`` with at least ``overlap`` px
    overlap, all of one common size (rounded up to ``multiple``, at most ``tile``) and spread evenly.

    Examples
    --------
    >>> balanced_spans(1000, 512, 64)  # 3 spans of 376 px, not 512 + 512 + a 104-px sliver
    [(0, 376), (312, 688), (624, 1000)]
    """
    if length <= tile:
        return [(0, length)]
    n = -(-(length - overlap) // (tile - overlap))
    per_tile = math.ceil((length + (n - 1) * overlap) / n)  # smallest common size with n tiles
    size = min(tile, math.ceil(per_tile / multiple) * multiple)
    starts = np.linspace(0, length - size, n).round().astype(int)
    return [(int(a), int(a) + size) for a in starts]


def pixel_tiles(h: int, w: int, tile: int, overlap: int, multiple: int = 8) -> list[Box]:
    """Balanced tiles (image px) covering an ``h x w`` area with at least ``overlap`` px overlap.

    The fewest tiles of at most ``tile`` px that fit, shrunk to a common size (a multiple of ``multiple``) and
    spread evenly (:func:`balanced_spans` per axis); row-major list of :class:`Box`.

    Examples
    --------
    >>> pixel_tiles(100, 80, 512, 64)
    [Box(x0=0, y0=0, x1=80, y1=100)]
    """
    return [Box(x0, y0, x1, y1) for y0, y1 in balanced_spans(h, tile, overlap, multiple)
            for x0, x1 in balanced_spans(w, tile, overlap, multiple)]


def latent_tiles(h: int, w: int, tile: int, overlap: int) -> list[Box]:
    """Fixed-size tiles (latent px) of ``min(tile, h) x min(tile, w)`` covering an ``h x w`` latent.

    Consecutive tiles overlap by at least ``overlap`` (capped below the tile size), the last flush with the end
    (:func:`tile_starts` per axis); row-major list of :class:`Box` ``(x0, y0, x1, y1)``.

    Examples
    --------
    >>> latent_tiles(64, 100, 64, 16)
    [Box(x0=0, y0=0, x1=64, y1=64), Box(x0=36, y0=0, x1=100, y1=64)]
    """
    th, tw = min(tile, h), min(tile, w)
    return [Box(x, y, x + tw, y + th)
            for y in tile_starts(h, th, min(overlap, th - 1))
            for x in tile_starts(w, tw, min(overlap, tw - 1))]
