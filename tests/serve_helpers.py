"""Helpers shared by the server tests and bench/serve.py: a photo-like test image and a live uvicorn server."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

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
    for k in range(6):  # a few hard-edged shapes
        cx, cy = rng.integers(0, width), rng.integers(0, height)
        r = int(rng.integers(height // 20, height // 6))
        cv2.circle(img, (int(cx), int(cy)), r, tuple(float(v) for v in rng.random(3)), -1, cv2.LINE_AA)
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


@contextmanager
def live_server(cfg) -> Iterator[str]:
    """Run ``create_app(cfg)`` on uvicorn in a thread (port 0 = any free port); yields the base URL."""
    import uvicorn

    from crispedit.server.app import create_app

    app = create_app(cfg)
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", lifespan="on"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not t.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(timeout=10)
