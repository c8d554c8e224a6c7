"""Deep Zoom (DZI) pyramids built lazily from an in-memory image, and the mask overlay tiles.

The browser never receives the full-resolution image: OpenSeadragon asks for the 256-px tiles of the level it
shows, and each level is made on first use by halving the next finer level that exists (OpenCV ``INTER_AREA``,
i.e. pixel-area averaging). Encoded tiles are kept in a small LRU cache.

Level numbering follows the Deep Zoom format (Microsoft, "Deep Zoom file format", as read by OpenSeadragon's
``DziTileSource``): level ``L`` has size ``ceil(W / 2**(max_level - L))`` with ``max_level = ceil(log2(max(W, H)))``;
level ``max_level`` is the image at 1:1.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Optional

import cv2
import numpy as np

TILE = 254  # + 1 px overlap each side = 256-px tiles, the DZI default
OVERLAP = 1


def max_level(width: int, height: int) -> int:
    """The DZI level that is the image at 1:1: ``ceil(log2(max(width, height)))``."""
    return int(math.ceil(math.log2(max(width, height, 1))))


def level_size(width: int, height: int, level: int) -> tuple[int, int]:
    """``(w, h)`` in pixels of DZI ``level`` for an image of ``width x height``."""
    f = 2 ** (max_level(width, height) - level)
    return max(1, math.ceil(width / f)), max(1, math.ceil(height / f))


def dzi_xml(width: int, height: int, fmt: str) -> str:
    """The ``.dzi`` descriptor (XML) for an image of ``width x height`` whose tiles are ``fmt`` (jpeg / png)."""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{fmt}" Overlap="{OVERLAP}" '
            f'TileSize="{TILE}"><Size Width="{width}" Height="{height}"/></Image>\n')


def tile_rect(width: int, height: int, level: int, col: int, row: int) -> Optional[tuple[int, int, int, int]]:
    """Pixel rectangle ``(x0, y0, x1, y1)`` of a tile (overlap included) inside its level, or None if outside."""
    if not 0 <= level <= max_level(width, height) or col < 0 or row < 0:
        return None  # checked before level_size: 2 ** (max_level - level) of a huge level would never end
    lw, lh = level_size(width, height, level)
    x0, y0 = col * TILE, row * TILE
    if x0 >= lw or y0 >= lh:
        return None
    return (max(0, x0 - OVERLAP), max(0, y0 - OVERLAP), min(lw, x0 + TILE + OVERLAP), min(lh, y0 + TILE + OVERLAP))


class _LRU:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            v = self.items.get(key)
            if v is not None:
                self.items.move_to_end(key)
            return v

    def put(self, key, value) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.capacity:
                self.items.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


class Pyramid:
    """A lazily built DZI pyramid of one 8-bit RGB image.

    Parameters
    ----------
    rgb8 : numpy.ndarray
        ``H x W x 3`` ``uint8`` pixels (the display copy; 16-bit images are rounded to 8 bits before).
    quality : int
        JPEG quality of the tiles (OpenCV ``imencode``).
    """

    def __init__(self, rgb8: np.ndarray, quality: int = 88, cache_tiles: int = 512) -> None:
        if rgb8.ndim != 3 or rgb8.shape[2] != 3 or rgb8.dtype != np.uint8:
            raise ValueError(f"Pyramid needs H x W x 3 uint8, got {rgb8.shape} {rgb8.dtype}")
        self.height, self.width = rgb8.shape[:2]
        self.max_level = max_level(self.width, self.height)
        self.quality = quality
        self._levels: dict[int, np.ndarray] = {self.max_level: rgb8}  # RGB, not copied
        self._lock = threading.Lock()
        self._tiles = _LRU(cache_tiles)

    def dzi(self) -> str:
        return dzi_xml(self.width, self.height, "jpeg")

    def level(self, level: int) -> np.ndarray:
        """The RGB pixels of ``level``, made by repeated 2x area averaging from the finest level (cached)."""
        with self._lock:
            if level in self._levels:
                return self._levels[level]
            src = min(k for k in self._levels if k > level)
            img = self._levels[src]
            for lv in range(src - 1, level - 1, -1):
                w, h = level_size(self.width, self.height, lv)
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
                self._levels[lv] = img
            return img

    def tile(self, level: int, col: int, row: int) -> Optional[bytes]:
        """JPEG bytes of one tile, or None when the tile does not exist."""
        key = (level, col, row)
        hit = self._tiles.get(key)
        if hit is not None:
            return hit
        rect = tile_rect(self.width, self.height, level, col, row)
        if rect is None:
            return None
        x0, y0, x1, y1 = rect
        bgr = np.ascontiguousarray(self.level(level)[y0:y1, x0:x1, ::-1])  # OpenCV encodes BGR
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        data = buf.tobytes()
        self._tiles.put(key, data)
        return data


_EMPTY_PNG: Optional[bytes] = None


def empty_png() -> bytes:
    """A 1 x 1 transparent PNG (served for mask tiles with nothing painted)."""
    global _EMPTY_PNG
    if _EMPTY_PNG is None:
        _EMPTY_PNG = cv2.imencode(".png", np.zeros((1, 1, 4), np.uint8))[1].tobytes()
    return _EMPTY_PNG


def mask_tile(canvas, level: int, col: int, row: int, colour: tuple[int, int, int] = (255, 40, 90),
              opacity: float = 0.5) -> Optional[bytes]:
    """PNG bytes (RGBA: ``colour``, alpha = mask x ``opacity``) of one overlay tile of a
    :class:`~crispedit.server.maskcanvas.MaskCanvas` (its ``level(lv)`` gives the mask at each level).
    Tiles with nothing painted are a 1 x 1 transparent PNG; returns None for a tile outside the pyramid."""
    rect = tile_rect(canvas.width, canvas.height, level, col, row)
    if rect is None:
        return None
    x0, y0, x1, y1 = rect
    with canvas.lock:
        m = canvas.level(level)[y0:y1, x0:x1].copy()
    if not m.any():
        return empty_png()
    out = np.empty(m.shape + (4,), np.uint8)
    out[..., 0], out[..., 1], out[..., 2] = colour[2], colour[1], colour[0]  # BGR for OpenCV
    out[..., 3] = (m.astype(np.uint16) * int(round(opacity * 255)) // 255).astype(np.uint8)
    return cv2.imencode(".png", out, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
