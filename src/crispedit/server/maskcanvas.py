"""The full-resolution mask the browser paints on: strokes and shapes rasterised on the server, with undo/redo.

The mask is ``uint8`` H x W (0 = keep, 255 = edit); soft brush edges give values in between, which the library
reads as it reads any grey mask (``crispedit.mask.to_bool_mask``). Brush strokes are rasterised from the
distance to the stroke's centre line (OpenCV ``distanceTransform``, exact Euclidean ``DIST_MASK_PRECISE``):
``alpha = clip((r - d) / (r * (1 - hardness)), 0, 1)``, i.e. fully painted up to ``r * hardness`` and a linear
fall-off to 0 at the radius ``r``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Optional

import cv2
import numpy as np

from crispedit.errors import InputError

MAX_UNDO = 40
MAX_UNDO_BYTES = 512 * 1024 * 1024  # pixels kept for undo/redo (older steps are dropped first; the last is kept)
MAX_POINTS = 20_000
MAX_BRUSH = 2048  # px, brush diameter
STROKE_BLOCK = 1024  # px, side of the blocks a stroke is rasterised in

Box = tuple[int, int, int, int]


@dataclass
class _Change:
    """One undoable step: ``other`` holds the box's pixels of the state not shown now (before the change while it
    is on the undo stack, after it while on the redo stack), so undo and redo are the same swap. An invert keeps
    no pixels (``other is None``): it undoes itself."""

    box: Box  # x0, y0, x1, y1 (exclusive)
    other: Optional[np.ndarray]

    @property
    def nbytes(self) -> int:
        return 0 if self.other is None else self.other.nbytes


class MaskCanvas:
    """A ``uint8`` mask of ``width x height`` with stroke/shape operations, undo and redo.

    Every change bumps :attr:`rev`; operations return the changed box ``(x0, y0, x1, y1)`` in image pixels
    (None when nothing changed).
    """

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = int(width), int(height)
        self.array = np.zeros((self.height, self.width), np.uint8)
        self.rev = 0
        self._undo: list[_Change] = []
        self._redo: list[_Change] = []
        self.lock = threading.RLock()
        self.levels: dict[int, np.ndarray] = {}  # overlay pyramid below the top level, kept up to date
        from crispedit.server.tiles import max_level

        self.top = max_level(self.width, self.height)

    # -- bookkeeping -------------------------------------------------------------------------------------------
    def _commit(self, box: Box, after: np.ndarray) -> Optional[Box]:
        x0, y0, x1, y1 = box
        before = self.array[y0:y1, x0:x1].copy()
        if np.array_equal(before, after):
            return None
        self.array[y0:y1, x0:x1] = after
        self._push(_Change(box, before))
        return box

    def _push(self, ch: _Change) -> None:
        self._undo.append(ch)
        self._redo.clear()
        del self._undo[:-MAX_UNDO]
        total = sum(c.nbytes for c in self._undo)
        while len(self._undo) > 1 and total > MAX_UNDO_BYTES:  # e.g. many clears of a 300 MP mask
            total -= self._undo.pop(0).nbytes
        self._changed(ch.box)

    def _swap(self, ch: _Change) -> None:
        x0, y0, x1, y1 = ch.box
        if ch.other is None:
            np.subtract(255, self.array, out=self.array)
        else:
            shown = self.array[y0:y1, x0:x1].copy()
            self.array[y0:y1, x0:x1] = ch.other
            ch.other = shown

    def _changed(self, box: Optional[Box] = None) -> None:
        """Bump the revision and bring the cached overlay levels up to date inside ``box`` (all of them if None)."""
        self.rev += 1
        if box is None or (box[2] - box[0]) * (box[3] - box[1]) > self.width * self.height // 2:
            self.levels = {}
            return
        x0, y0, x1, y1 = box
        finer, lv = self.array, self.top - 1
        while lv in self.levels:  # cached levels form a chain below the top: update each from the one above
            fx0, fy0, fx1, fy1 = x0 - x0 % 2, y0 - y0 % 2, x1 + x1 % 2, y1 + y1 % 2
            half = _half(finer[fy0:fy1, fx0:fx1])
            arr = self.levels[lv]
            arr[fy0 // 2:fy0 // 2 + half.shape[0], fx0 // 2:fx0 // 2 + half.shape[1]] = half
            x0, y0, x1, y1 = fx0 // 2, fy0 // 2, fx1 // 2, fy1 // 2
            finer, lv = arr, lv - 1

    def level(self, lv: int) -> np.ndarray:
        """The mask at DZI level ``lv``: each pixel the mean of its 2**(top - lv) square block (zero-padded at the
        right and bottom), made by repeated exact 2x2 averaging (OpenCV ``INTER_AREA``) and cached."""
        with self.lock:
            if lv >= self.top:
                return self.array
            arr = self.levels.get(lv)
            if arr is None:
                arr = self.levels[lv] = _half(self.level(lv + 1))
            return arr

    def _clip(self, x0: float, y0: float, x1: float, y1: float) -> Optional[Box]:
        bx0, by0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        bx1, by1 = min(self.width, int(np.ceil(x1))), min(self.height, int(np.ceil(y1)))
        if bx1 <= bx0 or by1 <= by0:
            return None
        return bx0, by0, bx1, by1

    # -- operations --------------------------------------------------------------------------------------------
    def stroke(self, points: list, size: float, hardness: float = 1.0, erase: bool = False) -> Optional[Box]:
        """Paint (or erase) along the polyline ``points`` (image px) with a round brush of diameter ``size``."""
        pts = _points(points)
        r = _number(size, "brush size", f"use a size between 1 and {MAX_BRUSH} px") / 2.0
        if not (0.5 <= r <= MAX_BRUSH / 2):
            raise InputError(f"brush size {size} is out of range", f"use a size between 1 and {MAX_BRUSH} px")
        pad = r + 2  # centre-line points further off the image than this cannot paint inside it
        pts = np.stack([np.clip(pts[:, 0], -pad, self.width + pad), np.clip(pts[:, 1], -pad, self.height + pad)], 1)
        h = min(max(_number(hardness, "brush hardness", "use a hardness between 0 and 1"), 0.0), 1.0)
        box = self._clip(pts[:, 0].min() - r - 1, pts[:, 1].min() - r - 1,
                         pts[:, 0].max() + r + 2, pts[:, 1].max() + r + 2)
        if box is None:
            return None
        x0, y0, x1, y1 = box
        # the centre line rasterised on a canvas that also holds centre-line points outside the image (a brush
        # centred just off the edge still paints its part inside)
        fx0 = int(np.floor(min(pts[:, 0].min(), x0)))
        fy0 = int(np.floor(min(pts[:, 1].min(), y0)))
        fx1 = int(np.ceil(max(pts[:, 0].max() + 1, x1)))
        fy1 = int(np.ceil(max(pts[:, 1].max() + 1, y1)))
        line = np.full((fy1 - fy0, fx1 - fx0), 255, np.uint8)
        local = np.round(pts - [fx0, fy0]).astype(np.int32)
        if len(local) == 1:
            line[np.clip(local[0, 1], 0, fy1 - fy0 - 1), np.clip(local[0, 0], 0, fx1 - fx0 - 1)] = 0
        else:
            cv2.polylines(line, [local.reshape(-1, 1, 2)], False, 0, 1, lineType=cv2.LINE_8)
        soft = max(r * (1.0 - h), 1e-3)
        g = int(np.ceil(r)) + 2  # a block's window sees every centre-line pixel closer than r to the block
        with self.lock:
            new = self.array[y0:y1, x0:x1].copy()
            # distances block by block, so a long stroke with a big brush on a large image holds a few MB of float
            # at a time instead of several arrays the size of its bounding box; blocks far from the line are
            # skipped. Same result as one distance transform (up to float rounding, at most 1 grey level): below
            # r, a pixel's nearest line pixel lies in its block's window, and at r or more alpha is 0 either way.
            for by in range(y0, y1, STROKE_BLOCK):
                for bx in range(x0, x1, STROKE_BLOCK):
                    ex, ey = min(bx + STROKE_BLOCK, x1), min(by + STROKE_BLOCK, y1)
                    wx0, wy0 = max(bx - g - fx0, 0), max(by - g - fy0, 0)
                    win = line[wy0:ey + g - fy0, wx0:ex + g - fx0]
                    if win.all():
                        continue
                    ox, oy = bx - fx0 - wx0, by - fy0 - wy0
                    dist = cv2.distanceTransform(win, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[oy:oy + ey - by,
                                                                                           ox:ox + ex - bx]
                    alpha = np.clip((r - dist) / soft, 0.0, 1.0)
                    part = new[by - y0:ey - y0, bx - x0:ex - x0]
                    cur = part.astype(np.float32)
                    part[...] = np.round(cur * (1.0 - alpha) if erase else np.maximum(cur, alpha * 255.0))
            return self._commit(box, new)

    def shape(self, kind: str, box: list, erase: bool = False) -> Optional[Box]:
        """Fill (or erase) a rectangle or the ellipse inscribed in ``box = [x0, y0, x1, y1]`` (image px)."""
        if kind not in ("rect", "ellipse"):
            raise InputError(f"unknown mask shape '{kind}'", "use rect or ellipse")
        try:
            bx = [float(v) for v in box]
        except (TypeError, ValueError):
            bx = []
        if len(bx) != 4 or not all(np.isfinite(bx)):
            raise InputError(f"bad box {box!r}", "give four numbers x0, y0, x1, y1 in image pixels")
        ax0, ax1 = sorted(bx[0::2])
        ay0, ay1 = sorted(bx[1::2])
        clip = self._clip(ax0, ay0, ax1, ay1)
        if clip is None:
            return None
        x0, y0, x1, y1 = clip
        value = 0 if erase else 255
        with self.lock:
            cur = self.array[y0:y1, x0:x1].copy()
            if kind == "rect":
                cur[:] = value
            else:  # the library's ellipse (as ``crispedit edit --ellipse``), drawn in the clipped box only, in
                # float coordinates: a box far larger than the image cannot overflow (OpenCV's ellipse takes ints)
                from crispedit.mask import mask_from_ellipse

                cur[mask_from_ellipse((x1 - x0, y1 - y0), (ax0 - x0, ay0 - y0, ax1 - x0, ay1 - y0))] = value
            return self._commit(clip, cur)

    def invert(self) -> Optional[Box]:
        """Swap edit and keep everywhere (``255 - mask``)."""
        with self.lock:
            np.subtract(255, self.array, out=self.array)  # in place, and nothing kept for undo: it undoes itself
            self._push(_Change((0, 0, self.width, self.height), None))
            return 0, 0, self.width, self.height

    def clear(self) -> Optional[Box]:
        """Erase the whole mask."""
        with self.lock:
            return self._commit((0, 0, self.width, self.height), np.zeros_like(self.array))

    def undo(self) -> Optional[Box]:
        """Undo the last change (up to ``MAX_UNDO`` kept); None when there is nothing to undo."""
        with self.lock:
            if not self._undo:
                return None
            ch = self._undo.pop()
            self._swap(ch)
            self._redo.append(ch)
            self._changed(ch.box)
            return ch.box

    def redo(self) -> Optional[Box]:
        """Redo the last undone change; None when there is nothing to redo."""
        with self.lock:
            if not self._redo:
                return None
            ch = self._redo.pop()
            self._swap(ch)
            self._undo.append(ch)
            self._changed(ch.box)
            return ch.box

    def apply(self, op: dict[str, Any]) -> Optional[Box]:
        """Run one operation given as a dict (the JSON the page sends): ``{"op": "stroke" | "rect" | "ellipse" |
        "invert" | "clear" | "undo" | "redo", ...}``."""
        kind = op.get("op")
        if kind == "stroke":
            return self.stroke(op.get("points") or [], op.get("size", 32), op.get("hardness", 1.0),
                               bool(op.get("erase")))
        if kind in ("rect", "ellipse"):
            return self.shape(kind, op.get("box") or [], bool(op.get("erase")))
        if kind in ("invert", "clear", "undo", "redo"):
            return getattr(self, kind)()
        raise InputError(f"unknown mask operation '{kind}'",
                         "use stroke, rect, ellipse, invert, clear, undo or redo")

    def state(self) -> dict[str, Any]:
        """``rev``, ``painted_px`` (pixels > 0), ``can_undo``, ``can_redo`` — what the page shows."""
        with self.lock:
            painted = int(np.count_nonzero(self.array))
            return {"rev": self.rev, "painted_px": painted, "can_undo": bool(self._undo),
                    "can_redo": bool(self._redo)}

    def snapshot(self) -> np.ndarray:
        """A copy of the ``uint8`` H x W mask (what a job edits with, unaffected by later painting)."""
        with self.lock:
            return self.array.copy()


def _half(a: np.ndarray) -> np.ndarray:
    """Exact 2x2 block mean (odd sizes padded with one zero row/column), ``uint8``."""
    h, w = a.shape
    if h % 2 or w % 2:
        a = np.pad(a, ((0, h % 2), (0, w % 2)))
    return cv2.resize(a, (a.shape[1] // 2, a.shape[0] // 2), interpolation=cv2.INTER_AREA)


def _number(value: Any, what: str, fix: str) -> float:
    """``value`` as a finite float, else the one-line :class:`InputError` (JSON strings, lists, NaN, ...)."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        v = float("nan")
    if isinstance(value, bool) or not np.isfinite(v):
        raise InputError(f"{what} must be a finite number, got {value!r}", fix)
    return v


def _points(points: Any) -> np.ndarray:
    try:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise InputError("bad stroke points", "send a list of [x, y] pairs in image pixels") from None
    if len(pts) == 0 or len(pts) > MAX_POINTS or not np.isfinite(pts).all():
        raise InputError(f"a stroke needs 1 to {MAX_POINTS} finite [x, y] points", "send shorter strokes")
    return pts
