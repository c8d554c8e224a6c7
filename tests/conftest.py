"""Shared test setup: offline always, small generated images, helpers importable from tests/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CRISPEDIT_CACHE", str(Path(os.environ.get("TMPDIR", "/tmp")) / "crispedit-test-cache"))
sys.path.insert(0, str(Path(__file__).parent))


def photo_like(h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """A textured float image in [0, 1]: smooth gradients, mid-scale structure and fine grain, like a photo."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([0.35 + 0.3 * xx / w, 0.4 + 0.2 * yy / h, 0.5 - 0.2 * xx / w], axis=2)[..., :channels]
    mid = cv2.GaussianBlur(rng.normal(0, 1, (h, w, channels)).astype(np.float32), (0, 0), 6)
    mid = mid.reshape(h, w, channels)
    mid *= 0.08 / (mid.std() + 1e-6)
    grain = rng.normal(0, 0.02, (h, w, channels)).astype(np.float32)
    return np.clip(base + mid + grain, 0, 1)


@pytest.fixture
def photo8() -> np.ndarray:
    return (photo_like(240, 320) * 255 + 0.5).astype(np.uint8)
