"""Helpers shared by the server tests and bench/serve.py: a photo-like test image and a live uvicorn server."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from crispedit.server.cli import serve_in_thread

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def chromium_path() -> Optional[str]:
    """Debian's chromium binary, if installed."""
    for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(p).exists():
            return p
    return None


def photo_like(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An ``height x width x 3`` uint8 RGB image with smooth shading, edges and fine grain (fast at 8K)."""
    rng = np.random.default_rng(seed)
    small = rng.random((max(2, height // 256), max(2, width // 256), 3)).astype(np.float32)
    base = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    mid = cv2.resize(rng.random((max(2, height // 32), max(2, width // 32), 3)).astype(np.float32),
                     (width, height), interpolation=cv2.INTER_LINEAR)
    img = 0.6 * base + 0.3 * mid
    yy, xx = np.mgrid[0:height:64, 0:width:64]
    for _ in range(6):  # a few hard-edged shapes
        cx, cy = rng.integers(0, width), rng.integers(0, height)
        r = int(rng.integers(height // 20, height // 6))
        cv2.circle(img, (int(cx), int(cy)), r, tuple(float(v) for v in rng.random(3)), -1, cv2.LINE_AA)
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


live_server = serve_in_thread  # crispedit.server.cli.serve_in_thread
