"""The classical engine: OpenCV inpainting, no weights (the embedded default).

Telea's fast-marching method (or Navier-Stokes) fills small holes from their border. On wide holes it draws
radial streaks, so large holes are filled on a small copy (hole side ~``coarse_side`` px) by OpenCV's shift-map
patch inpainting (He & Sun 2012, opencv-contrib xphoto), which continues the surrounding structure, or by a
smooth push-pull membrane when xphoto is missing. The fill is upscaled; the harness then removes the step at
the boundary and matches tone and grain, so the patch carries the photo's texture at 1:1.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from crispedit.engines.base import Region, register_engine
from crispedit.errors import InputError
from crispedit.membrane import push_pull_fill

_METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}


class ClassicalEngine:
    """Object removal without a model. ``prompt`` is ignored (recorded in the info)."""

    working_size: int | None = None
    name = "classical"

    def __init__(self, method: str = "telea", radius: int = 5, small_hole: int = 160, coarse_side: int = 96):
        if method not in _METHODS:
            raise InputError(f"unknown classical method '{method}'", f"choose one of: {', '.join(_METHODS)}")
        self.method = method
        self.radius = radius
        self.small_hole = small_hole
        self.coarse_side = coarse_side
        self.calls: list[dict] = []

    def inpaint(self, image: Image.Image, mask: Image.Image, prompt: str | None = None, *, seed: int | None = None,
                strength: float = 1.0, region: Region | None = None) -> Image.Image:
        rgb = np.asarray(image.convert("RGB"))
        m = (np.asarray(mask.convert("L")) >= 128).astype(np.uint8) * 255
        self.calls.append({"kind": "inpaint", "size": list(image.size), "strength": strength})
        if not m.any():
            return image.convert("RGB")
        return Image.fromarray(self._fill(rgb, m))

    def _fill(self, rgb: np.ndarray, m: np.ndarray) -> np.ndarray:
        flag = _METHODS[self.method]
        # Telea when every separate hole is small, or the holes are thin (inscribed diameter <= small_hole / 4,
        # scratches and wires), however far they spread; the coarse fill works at the size of the largest hole
        mu = (m > 0).astype(np.uint8)
        _, _, stats, _ = cv2.connectedComponentsWithStats(mu, connectivity=8)
        hole = int(stats[1:, 2:4].max())
        width = 2.0 * float(cv2.distanceTransform(cv2.copyMakeBorder(mu, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0),
                                                  cv2.DIST_L2, 3).max())
        if hole <= self.small_hole or width <= self.small_hole / 4:
            return cv2.inpaint(rgb, m, self.radius, flag)
        inside = m > 0
        h, w = m.shape
        s = self.coarse_side / hole
        sw, sh = max(16, round(w * s)), max(16, round(h * s))
        small = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
        small_hole = cv2.resize(m, (sw, sh), interpolation=cv2.INTER_AREA) > 0
        up = cv2.resize(_coarse_fill(small, small_hole), (w, h), interpolation=cv2.INTER_CUBIC)
        out = rgb.copy()
        out[inside] = up[inside]
        return out


def _coarse_fill(small: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Fill ``hole`` in a small RGB image: shift-map patches when opencv-contrib is there, else push-pull."""
    xphoto = getattr(cv2, "xphoto", None)
    if xphoto is not None:
        dst = np.zeros_like(small)
        xphoto.inpaint(small, (~hole).astype(np.uint8) * 255, dst, xphoto.INPAINT_SHIFTMAP)
        return dst
    filled = push_pull_fill(small.astype(np.float32), ~hole)
    return np.clip(filled + 0.5, 0, 255).astype(np.uint8)


register_engine("classical", ClassicalEngine)
