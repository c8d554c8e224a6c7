"""An oracle engine for benchmarks: it knows the true image and degrades it the way SD 1.5 would.

``OracleEngine(truth)`` implements the engine protocol of :mod:`crispedit.engines.base`. It sees the truth only
through the ``region`` the harness passes (where the crop lies in the full-resolution input), so a harness that
calls it at the wrong place or scale gets the wrong content back.

- **Full-strength call** (``strength >= 0.99``) at about the working size: inside the mask, the true content of
  ``region`` resized to the size of the call (so a downscaled call lacks native detail); outside, the input.
- **Every call** (refinements included) is then decoded as SD's VAE decodes it: a Gaussian blur of
  ``softness`` px (default 0.8) at the size of the call, over the whole returned crop; optionally the engine's own
  grain (``noise``: white Gaussian noise of that std in 8-bit levels, slightly correlated, sigma 0.5 px); a small
  smooth tone drift (``drift=+1``: +2-4 % brightness, ``-1``: -2-4 %, plus a slight colour cast varying smoothly
  across the crop) and the rounding to 8 bits an SD pipeline does (one level).
- **Full-strength call far above the working size** (long side > 1.5 x ``working_size``): SD's composition
  breaks, the mask area is garbage (the truth shuffled in blocks, heavily blurred, plus noise); the rest gets the
  same drift.
- **Refine call** (``strength < 1``): keeps the coarse structure it was handed (Gaussian low-pass of the input,
  sigma 2.5 px) and brings the true fine detail (high-pass of the truth region at the call's scale) inside the
  mask; then the same decode (blur, grain, drift, quantisation) as a full-strength call.

:data:`VARIANTS` names the engine models the zoom benchmark runs (softness 0.4 / 0.8 / 1.2 px, drift up and down,
a noisy engine); ``OracleEngine.variant(name, truth)`` builds one. Every call is recorded in ``self.calls``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import cv2
import numpy as np
from PIL import Image
from pydantic import Field

from crispedit.options import EngineOptions, build

Region = tuple[int, int, int, int]

#: Gaussian sigma (px at the call size) of the VAE softening of every call (the default variant).
BLUR_SIGMA = 0.8
#: sigma (px) splitting "coarse structure" from "fine detail" in refine calls.
REFINE_SIGMA = 2.5
#: quantisation step (in 8-bit levels) of the returned crop. SD 1.5 pipelines decode to float and round once to
#: 8 bits (diffusers ``numpy_to_pil``: ``(x * 255).round()``): one level. (Until issue 9's second pass this was 2,
#: a 7-bit engine; that step's noise alone exceeded the fine detail of the smoothest photos.)
QUANT_STEP = 1.0
#: full-strength calls with a long side above GARBAGE_FACTOR x working_size return garbage.
GARBAGE_FACTOR = 1.5

#: Engine models of the zoom benchmark: constructor options of :class:`OracleEngine` per variant name.
VARIANTS: dict[str, dict[str, float]] = {
    "soft0.4": {"softness": 0.4, "drift": 1.0, "noise": 0.0},
    "soft0.8": {"softness": 0.8, "drift": 1.0, "noise": 0.0},
    "soft1.2": {"softness": 1.2, "drift": 1.0, "noise": 0.0},
    "drift-down": {"softness": 0.8, "drift": -1.0, "noise": 0.0},
    "noisy": {"softness": 0.8, "drift": 1.0, "noise": 2.0},
}


class OracleOptions(EngineOptions):
    """Constructor options of :class:`OracleEngine` (frozen; a misspelt name is refused with a did-you-mean)."""

    working_size: int | None = Field(512, ge=8)
    seed: int = 0
    refine_sigma: float = Field(REFINE_SIGMA, ge=0.0)
    softness: float = Field(BLUR_SIGMA, ge=0.0)
    drift: float = 1.0
    noise: float = Field(0.0, ge=0.0)


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


class OracleEngine:
    """An engine that knows the true full-resolution image.

    Parameters
    ----------
    truth : uint8 array HxWx3 (HxW or HxWx4 are converted), the full-resolution image the edit should reproduce.
    **options : the fields of :class:`OracleOptions` (defaults there), validated through it:
    working_size : square side at which it "composes" (like SD 1.5's 512).
    seed : base seed of the degradations (a call's ``seed`` is mixed in).
    softness : Gaussian sigma (px at the call's size) of the decode blur applied to every call; 0 = none.
    drift : +1 brightens by 2-4 %, -1 darkens by 2-4 % (plus the colour cast either way); 0 = no drift.
    noise : std (8-bit levels) of the engine's own grain added to every call's output; 0 = none.

    Examples
    --------
    >>> import numpy as np
    >>> from PIL import Image
    >>> truth = np.random.default_rng(0).integers(0, 255, (600, 800, 3), np.uint8)
    >>> eng = OracleEngine(truth)
    >>> crop = Image.fromarray(truth[100:356, 200:456])
    >>> mask = Image.new("L", crop.size, 255)
    >>> eng.inpaint(crop, mask, None, region=(200, 100, 456, 356)).size
    (256, 256)
    >>> eng.calls[0]["size"], eng.calls[0]["strength"]
    ((256, 256), 1.0)
    """

    name = "oracle"

    def __init__(self, truth: np.ndarray, **options: Any) -> None:
        o = build(OracleOptions, options, "oracle option")
        t = np.asarray(truth)
        if t.dtype != np.uint8:
            if t.dtype == np.uint16:
                t = ((t.astype(np.uint32) + 128) // 257).astype(np.uint8)
            else:
                raise TypeError(f"truth must be uint8 (or uint16), got {t.dtype}")
        if t.ndim == 2:
            t = np.repeat(t[..., None], 3, axis=2)
        elif t.shape[2] == 1:
            t = np.repeat(t, 3, axis=2)
        elif t.shape[2] == 2:
            t = np.repeat(t[..., :1], 3, axis=2)
        elif t.shape[2] == 4:
            t = t[..., :3]
        self._truth = np.ascontiguousarray(t)
        self.options = o
        self.working_size = o.working_size
        self.seed = o.seed
        self.refine_sigma = o.refine_sigma
        self.softness = o.softness
        self.drift = o.drift
        self.noise = o.noise
        self.calls: list[dict[str, Any]] = []

    @classmethod
    def variant(cls, name: str, truth: np.ndarray, **kwargs: Any) -> OracleEngine:
        """The oracle for one of :data:`VARIANTS` (``KeyError`` for an unknown name)."""
        return cls(truth, **{**VARIANTS[name], **kwargs})

    # -- helpers ---------------------------------------------------------------------------------------------
    def _truth_region(self, region: Region | None, size: tuple[int, int]) -> np.ndarray:
        """The truth inside ``region`` resized to ``size`` (w, h), float32 RGB in [0, 1]."""
        H, W = self._truth.shape[:2]
        if region is None:
            region = (0, 0, W, H)
        x0, y0, x1, y1 = (int(v) for v in region)
        x0, x1 = max(0, min(W, x0)), max(0, min(W, x1))
        y0, y1 = max(0, min(H, y0)), max(0, min(H, y1))
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"region {region} lies outside the {W}x{H} truth")
        crop = self._truth[y0:y1, x0:x1]
        w, h = size
        if (x1 - x0, y1 - y0) != (w, h):
            down = w * h < (x1 - x0) * (y1 - y0)
            crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if down else cv2.INTER_CUBIC)
        return crop.astype(np.float32) / 255.0

    def _rng(self, seed: int | None, region: Region | None, size: tuple[int, int], strength: float) -> np.random.Generator:
        region = None if region is None else tuple(region)  # a geometry.Box keys as the plain tuple it equals
        key = f"{self.seed}|{seed}|{region}|{size}|{strength:.4f}".encode()
        return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))

    @staticmethod
    def _drift(rgb: np.ndarray, rng: np.random.Generator, sign: float = 1.0) -> np.ndarray:
        """SD's VAE tone drift: +-2-4 % brightness and a slight colour cast, varying smoothly over the whole crop."""
        h, w = rgb.shape[:2]
        yy = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
        xx = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
        gain = 1.0 + sign * rng.uniform(0.02, 0.04)
        # smooth spatial variation of the gain (about +-1 %) and of the cast (about +-1 % per channel)
        ax, ay, ph = rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(0, 2 * np.pi)
        field = np.sin(np.pi * (ax * xx + ay * yy) + ph)  # one slow wave across the crop
        g = gain + 0.01 * field
        out = rgb * g[..., None]
        for c in range(3):
            base = rng.uniform(-0.012, 0.012)
            gx, gy = rng.uniform(-0.006, 0.006, size=2)
            out[..., c] += base + gx * xx + gy * yy
        return out

    @staticmethod
    def _quantise(rgb: np.ndarray) -> np.ndarray:
        q = np.round(np.clip(rgb, 0.0, 1.0) * 255.0 / QUANT_STEP) * QUANT_STEP
        return np.clip(q, 0, 255).astype(np.uint8)

    @staticmethod
    def _soft_mask(m: np.ndarray) -> np.ndarray:
        """The mask as SD's latent mask sees it: slightly soft at its edge."""
        return np.clip(_gauss(m.astype(np.float32), 1.5), 0.0, 1.0)[..., None]

    @staticmethod
    def _garbage(true: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """What SD composes far above its working size: the right colours, scrambled structure, noise."""
        h, w = true.shape[:2]
        b = max(16, min(h, w) // 8)
        nby, nbx = -(-h // b), -(-w // b)
        pad = np.pad(true, ((0, nby * b - h), (0, nbx * b - w), (0, 0)), mode="reflect")
        blocks = pad.reshape(nby, b, nbx, b, 3).transpose(0, 2, 1, 3, 4).reshape(nby * nbx, b, b, 3)
        blocks = blocks[rng.permutation(len(blocks))]
        blocks = np.rot90(blocks, k=int(rng.integers(1, 4)), axes=(1, 2))
        shuf = blocks.reshape(nby, nbx, b, b, 3).transpose(0, 2, 1, 3, 4).reshape(nby * b, nbx * b, 3)[:h, :w]
        shuf = _gauss(np.ascontiguousarray(shuf), 6.0)
        noise = _gauss(rng.normal(0.0, 0.25, (h, w, 3)).astype(np.float32), 2.0)
        return shuf + noise

    # -- the protocol ----------------------------------------------------------------------------------------
    def inpaint(self, image: Image.Image, mask: Image.Image, prompt: str | None, *, seed: int | None = None,
                strength: float = 1.0, region: Region | None = None) -> Image.Image:
        """Regenerate the masked part of ``image`` (RGB) from the truth inside ``region``; see the module doc."""
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        h, w = rgb.shape[:2]
        m = np.asarray(mask.convert("L").resize((w, h), Image.NEAREST)) > 127
        strength = float(strength)
        full = strength >= 0.99
        garbage = bool(full and self.working_size is not None and max(w, h) > GARBAGE_FACTOR * self.working_size)
        self.calls.append({"size": (w, h), "strength": strength, "region": None if region is None else tuple(region),
                           "garbage": garbage, "mask_fraction": float(m.mean())})
        rng = self._rng(seed, region, (w, h), strength)
        true = self._truth_region(region, (w, h))
        sm = self._soft_mask(m)
        if full:
            content = self._garbage(true, rng) if garbage else true
            out = rgb * (1.0 - sm) + content * sm
        else:
            amount = min(1.0, max(0.0, strength) / 0.25)  # very low strengths add less detail
            s = self.refine_sigma
            coarse = _gauss(rgb, s)
            fine = true - _gauss(true, s)
            inside = coarse + amount * fine
            out = rgb * (1.0 - sm) + inside * sm
        # the VAE decode of every call: soft, optionally grainy, drifting in tone
        if self.softness > 0:
            out = _gauss(np.ascontiguousarray(out, dtype=np.float32), self.softness)
        if self.noise > 0:
            grain = _gauss(rng.standard_normal(out.shape).astype(np.float32), 0.5)
            grain *= np.float32(self.noise / 255.0) / max(1e-6, float(grain.std()))
            out = out + grain
        if self.drift:
            out = self._drift(out, rng, 1.0 if self.drift > 0 else -1.0)
        return Image.fromarray(self._quantise(out), "RGB")
