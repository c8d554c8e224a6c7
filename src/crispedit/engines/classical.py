"""The classical engine: OpenCV inpainting, no weights (the embedded default).

Telea's fast-marching method (or Navier-Stokes) fills the hole from its border. Large holes are filled on a
downscaled copy first, so the fill is a smooth continuation of the surroundings instead of long smeared
streaks; the harness then matches grain so the patch carries the photo's texture at 1:1.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from crispedit.engines.base import Region, register_engine
from crispedit.errors import InputError

_METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}


class ClassicalEngine:
    """Object removal without a model. ``prompt`` is ignored (recorded in the info)."""

    working_size: int | None = None
    name = "classical"

    def __init__(self, method: str = "telea", radius: int = 5, coarse_side: int = 192):
        if method not in _METHODS:
            raise InputError(f"unknown classical method '{method}'", f"choose one of: {', '.join(_METHODS)}")
        self.method = method
        self.radius = radius
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
        ys, xs = np.nonzero(m)
        hole = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
        if hole <= self.coarse_side:
            return cv2.inpaint(rgb, m, self.radius, flag)
        # Coarse-to-fine: fill a small copy, upscale it into the hole, then let a thin native pass knit the rim.
        h, w = m.shape
        s = self.coarse_side / hole
        sw, sh = max(8, round(w * s)), max(8, round(h * s))
        small = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
        small_m = (cv2.resize(m, (sw, sh), interpolation=cv2.INTER_AREA) > 0).astype(np.uint8) * 255
        small_fill = cv2.inpaint(small, small_m, self.radius, flag)
        up = cv2.resize(small_fill, (w, h), interpolation=cv2.INTER_CUBIC)
        out = rgb.copy()
        inside = m > 0
        out[inside] = up[inside]
        rim = cv2.dilate(m, np.ones((3, 3), np.uint8)) - cv2.erode(m, np.ones((5, 5), np.uint8), iterations=2)
        return cv2.inpaint(out, (rim > 0).astype(np.uint8) * 255 & m, self.radius, flag)


register_engine("classical", ClassicalEngine)
