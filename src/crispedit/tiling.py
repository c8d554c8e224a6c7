"""Tiled diffusion sampling and a tiled VAE whose GroupNorm statistics are shared across tiles.

Two independent tools for working on latents and images far larger than Stable Diffusion's 512 px:

* :func:`tiled_noise_prediction` splits a latent into overlapping tiles, runs a noise predictor on batches of
  tiles and blends the predictions with Gaussian weights (Mixture-of-Diffusers style), so a whole 4K latent can be
  denoised with a 512 px model.
* :func:`tiled_vae_encode` / :func:`tiled_vae_decode` run a diffusers ``AutoencoderKL`` tile by tile and give the
  same result as the untiled VAE (within float rounding), because

  - every tile carries a **halo** of context at least as large as the receptive-field growth of the convolutions
    it goes through (computed from the network, see :func:`vae_halo`), so the core of every tile sees exactly the
    pixels the untiled network would see; zero padding only ever happens at the true image border;
  - every **GroupNorm** is normalised with statistics of the whole feature map: before a GroupNorm is applied
    anywhere, every tile is run up to it and the per-group count, mean and sum of squared deviations of the
    tile's core (the non-overlapping part, so each pixel counts once) are merged (Chan's parallel algorithm, in
    float64); all tiles are then normalised with the same mean and variance. This is what removes the tone steps
    of a VAE that normalises each tile alone;
  - the **attention** of the VAE mid block (at 1/8 resolution, 512 channels for SD) is global. The feature map at
    its input is assembled at that resolution and attention is computed exactly over all positions, in query
    chunks (memory: the map plus its keys and values, about 8 bytes x 3 x 512 per latent pixel in float32).
    Beyond ``max_attention_tokens`` positions it switches to overlapping windows blended with Gaussian weights
    (an approximation, smooth, no grid); the tokens are still normalised with the global GroupNorm statistics.

Memory is bounded by the tile size plus a cache budget, not by the image: tile states (activations at a
GroupNorm) are kept between GroupNorm passes only while the whole set fits ``max_cache_bytes``; past that, each
pass recomputes the tiles from the last state that fitted (exact, slower). The only image-sized buffers are the
input, the output and the latent-resolution map around the mid-block attention.

Halos for SD1.5's VAE (:func:`vae_halo`): encoder 88 image px before the attention, 3 latent px after it;
decoder 3 latent px before the attention, 15 latent px after it. A 64-latent-px decode tile is computed on
94 x 94 latent px (2.2x the work of its core), a 128 px tile on 158 (1.5x): use larger tiles on a GPU.

Using it for a whole-image SD1.5 edit (img2img) or a hires text-to-image::

    sf = vae.config.scaling_factor
    z0 = tiled_vae_encode(vae, image_m1p1, tile=512) * sf        # [1, 4, H/8, W/8], H, W multiples of 8
    latents = scheduler.add_noise(z0, noise, timesteps[:1])      # noise for the whole latent, seeded
    for t in timesteps:
        def predict(x):                                          # x: [n, 4 (+5), 64, 64], n tiles
            lat = scheduler.scale_model_input(x[:, :4], t)       # pointwise, safe per tile
            x_in = torch.cat([lat, x[:, 4:]], 1).repeat(2, 1, 1, 1)
            emb = torch.cat([uncond.expand(len(x), -1, -1), cond.expand(len(x), -1, -1)])
            e_u, e_c = unet(x_in, t, encoder_hidden_states=emb).sample.chunk(2)
            return e_u + guidance * (e_c - e_u)
        eps = tiled_noise_prediction(predict, latents, tile=64, overlap=16, batch=4)
        latents = scheduler.step(eps, t, latents).prev_sample   # one step on the whole latent
    image = tiled_vae_decode(vae, latents / sf, tile=64)         # [1, 3, H, W] in about [-1, 1]

The scheduler steps once on the whole latent (multistep schedulers keep history); only the UNet is tiled.
For the 9-channel inpainting UNet pass ``extra=torch.cat([mask, masked_image_latents * sf], 1)``.

Examples
--------
>>> import torch
>>> from crispedit.geometry import tile_starts
>>> from crispedit.tiling import tiled_noise_prediction
>>> tile_starts(100, 64, 16)
[0, 36]
>>> z = torch.randn(1, 4, 96, 160)
>>> eps = tiled_noise_prediction(lambda x: x[:, :4] * 2, z, tile=64, overlap=16)
>>> bool(torch.allclose(eps, z * 2, atol=1e-5))
True
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crispedit.geometry import Box, latent_tiles

__all__ = [
    "gaussian_weights",
    "tile_weights",
    "tiled_noise_prediction",
    "tiled_vae_encode",
    "tiled_vae_decode",
    "vae_halo",
    "vae_memory_estimate",
]

Progress = Callable[[int, int], None]
#: A diffusers ``AutoencoderKL`` or one of its blocks: duck-typed (its sub-modules are attributes that torch's
#: ``Module.__getattr__`` types as ``Tensor | Module``).
VaeModule = Any


# --------------------------------------------------------------------------------------------------------------
# tile geometry
# --------------------------------------------------------------------------------------------------------------
def gaussian_weights(h: int, w: int, sigma_frac: float = 0.3, *, device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Separable Gaussian tile weights of shape ``(h, w)``, 1 at the centre, ``sigma = sigma_frac * size``.

    As in Mixture of Diffusers, overlapping tile predictions are blended with these weights (normalised by their
    sum), so each tile's centre dominates and its borders fade. Never exactly 0 (floored at 1e-6), so a pixel
    covered by a single tile keeps a well-defined weight.

    Examples
    --------
    >>> w = gaussian_weights(8, 8)
    >>> tuple(w.shape), bool(w.min() > 0), round(float(w.max()), 3)
    ((8, 8), True, 0.958)
    """
    if h <= 0 or w <= 0 or sigma_frac <= 0:
        raise ValueError("h, w and sigma_frac must be positive")

    def axis(n: int) -> torch.Tensor:
        x = torch.arange(n, dtype=torch.float64)
        sigma = sigma_frac * n
        return torch.exp(-0.5 * ((x - (n - 1) / 2) / sigma) ** 2)

    weights = torch.outer(axis(h), axis(w)).clamp_min(1e-6)
    return weights.to(device=device, dtype=dtype)


def tile_weights(box: Box | tuple[int, int, int, int], h: int, w: int, overlap: int, sigma_frac: float = 0.3, *,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Blend weights of one tile ``box = (x0, y0, x1, y1)`` (latent px, :class:`~crispedit.geometry.Box`) of an
    ``h x w`` area: :func:`gaussian_weights` times
    a smoothstep taper over the ``overlap`` pixels next to each side that is inside the area (sides on the area's
    border are not tapered).

    A plain Gaussian is still well above 0 at a tile's edge (e^-1.4 = 0.25 for ``sigma_frac=0.3``), so where
    neighbouring tiles disagree the blend steps at every tile edge; the taper brings a tile's weight to ~0 at its
    edges, spreading the hand-over across the overlap. Never exactly 0.

    Examples
    --------
    >>> w = tile_weights((48, 0, 112, 64), 64, 160, 16)
    >>> float(w[32, 0]) < 1e-3 < float(w[32, 32]), float(w[0, 32]) > 0.2
    (True, True)
    """
    x0, y0, x1, y1 = box
    th, tw = y1 - y0, x1 - x0
    weight = gaussian_weights(th, tw, sigma_frac, dtype=torch.float64)
    if overlap > 0:
        def ramp(n: int, lo: bool, hi: bool) -> torch.Tensor:
            d = torch.arange(n, dtype=torch.float64)
            r = torch.ones(n, dtype=torch.float64)
            for on, dist in ((lo, d), (hi, n - 1 - d)):
                if on:
                    t = ((dist + 0.5) / overlap).clamp(0, 1)
                    r = r * t * t * (3 - 2 * t)
            return r
        weight = weight * torch.outer(ramp(th, y0 > 0, y1 < h), ramp(tw, x0 > 0, x1 < w))
    return weight.clamp_min(1e-6).to(device=device, dtype=torch.float32)


# --------------------------------------------------------------------------------------------------------------
# tiled noise prediction (UNet)
# --------------------------------------------------------------------------------------------------------------
def tiled_noise_prediction(predict: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor, *,
                           tile: int = 64, overlap: int = 16, batch: int = 4, extra: torch.Tensor | None = None,
                           sigma_frac: float = 0.3, progress: Progress | None = None) -> torch.Tensor:
    """Predict noise for a latent of any size with a model that works on ``tile x tile`` latents.

    Parameters
    ----------
    predict : callable
        ``predict(x) -> eps``: ``x`` is ``[n * B, C (+ E), t_h, t_w]`` (``n`` tiles of the ``B`` latents stacked
        along dim 0, tile-major), ``eps`` has the same batch and spatial size (4 channels for SD). It does
        classifier-free guidance itself (e.g. duplicates the batch, runs the UNet, combines).
    latents : Tensor ``[B, C, H, W]``
    tile, overlap : int
        Tile size and minimum overlap in latent pixels (SD1.5: 64 = 512 px).
    batch : int
        Tiles per ``predict`` call.
    extra : Tensor ``[B, E, H, W]``, optional
        Per-pixel conditioning concatenated to the latents on dim 1 for each tile (mask and masked-image latents
        of a 9-channel inpainting UNet).
    sigma_frac : float
        Width of the Gaussian blend weights (:func:`tile_weights`: Gaussian, tapered to ~0 over the overlap at
        inner tile edges so there is no step where tiles meet).
    progress : callable, optional
        ``progress(done_tiles, total_tiles)`` after each batch.

    Returns
    -------
    Tensor ``[B, C_eps, H, W]`` in ``latents.dtype``: the weighted average of the tile predictions. If the latent
    fits in one tile, the result of a single ``predict`` call on the whole latent.
    """
    if latents.ndim != 4:
        raise ValueError(f"latents must be [B, C, H, W], got shape {tuple(latents.shape)}")
    if extra is not None:
        if extra.ndim != 4 or extra.shape[0] != latents.shape[0] or extra.shape[2:] != latents.shape[2:]:
            raise ValueError(f"extra must be [B, E, H, W] matching latents {tuple(latents.shape)}, "
                             f"got {tuple(extra.shape)}")
        extra = extra.to(device=latents.device, dtype=latents.dtype)
    if batch < 1:
        raise ValueError("batch must be >= 1")
    b, _, h, w = latents.shape
    model_in = latents if extra is None else torch.cat([latents, extra], dim=1)
    if h <= tile and w <= tile:
        out = predict(model_in)
        if progress is not None:
            progress(1, 1)
        return out

    boxes = latent_tiles(h, w, tile, overlap)
    weights = [tile_weights(box, h, w, overlap, sigma_frac, device=latents.device) for box in boxes]
    acc: torch.Tensor | None = None
    wsum = torch.zeros(h, w, device=latents.device, dtype=torch.float32)
    for box, wt in zip(boxes, weights):
        wsum[box.slices] += wt
    for start in range(0, len(boxes), batch):
        chunk = boxes[start:start + batch]
        x = torch.cat([model_in[(..., *box.slices)] for box in chunk], dim=0)
        eps = predict(x)
        if eps.shape[0] != x.shape[0] or eps.shape[2:] != x.shape[2:]:
            raise ValueError(f"predict returned shape {tuple(eps.shape)} for input {tuple(x.shape)}")
        if acc is None:
            acc = torch.zeros(b, eps.shape[1], h, w, device=latents.device, dtype=torch.float32)
        for i, box in enumerate(chunk):
            acc[(..., *box.slices)] += eps[i * b:(i + 1) * b].float() * weights[start + i]
        if progress is not None:
            progress(min(start + batch, len(boxes)), len(boxes))
    assert acc is not None
    return (acc / wsum).to(latents.dtype)


# --------------------------------------------------------------------------------------------------------------
# the VAE as a flat program of ops
# --------------------------------------------------------------------------------------------------------------
@dataclass
class _Op:
    """One step of the encoder/decoder. ``kind``: conv, gn, act, push, add, down, up, attn, chunk."""

    kind: str
    module: Any = None
    arg: Any = None


def _conv_pad(conv: VaeModule) -> int:
    if not isinstance(conv, nn.Conv2d):
        raise NotImplementedError(f"tiled VAE: unsupported layer {type(conv).__name__}")
    k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    if s != (1, 1) or d != (1, 1) or not isinstance(p, tuple) or p[0] != p[1] or k[0] != k[1] or p[0] != k[0] // 2:
        raise NotImplementedError(f"tiled VAE: unsupported conv (kernel {k}, stride {s}, padding {p})")
    return int(p[0])


def _resnet_ops(r: VaeModule) -> list[_Op]:
    if getattr(r, "upsample", None) is not None or getattr(r, "downsample", None) is not None:
        raise NotImplementedError("tiled VAE: resnet blocks with built-in up/downsampling are not supported")
    if getattr(r, "time_emb_proj", None) is not None:
        raise NotImplementedError("tiled VAE: resnet blocks with a time embedding are not supported")
    if not isinstance(r.norm1, nn.GroupNorm) or not isinstance(r.norm2, nn.GroupNorm):
        raise NotImplementedError("tiled VAE: only GroupNorm resnets are supported")
    ops = [_Op("push"), _Op("gn", r.norm1), _Op("act", r.nonlinearity), _Op("conv", r.conv1),
           _Op("gn", r.norm2), _Op("act", r.nonlinearity), _Op("conv", r.conv2),
           _Op("add", r.conv_shortcut, float(r.output_scale_factor))]
    return ops


def _mid_ops(mid: VaeModule) -> list[_Op]:
    ops = _resnet_ops(mid.resnets[0])
    for attn, resnet in zip(mid.attentions, mid.resnets[1:]):
        if attn is not None:
            if getattr(attn, "spatial_norm", None) is not None:
                raise NotImplementedError("tiled VAE: attention with spatial norm is not supported")
            ops.append(_Op("attn", attn))
        ops += _resnet_ops(resnet)
    return ops


def _check_plain_block(block: VaeModule) -> None:
    if getattr(block, "attentions", None) is not None:
        raise NotImplementedError(f"tiled VAE: blocks with attention ({type(block).__name__}) are not supported")


def _encoder_program(vae: VaeModule) -> list[_Op]:
    enc = vae.encoder
    ops = [_Op("conv", enc.conv_in)]
    for block in enc.down_blocks:
        _check_plain_block(block)
        for r in block.resnets:
            ops += _resnet_ops(r)
        for d in block.downsamplers or []:
            ops.append(_Op("down", d))
    ops += _mid_ops(enc.mid_block)
    if not isinstance(enc.conv_norm_out, nn.GroupNorm):
        raise NotImplementedError("tiled VAE: encoder conv_norm_out must be a GroupNorm")
    ops += [_Op("gn", enc.conv_norm_out), _Op("act", enc.conv_act), _Op("conv", enc.conv_out)]
    if getattr(vae, "quant_conv", None) is not None:
        ops.append(_Op("conv", vae.quant_conv))
    ops.append(_Op("chunk"))  # moments -> mean
    return ops


def _decoder_program(vae: VaeModule) -> list[_Op]:
    dec = vae.decoder
    ops: list[_Op] = []
    if getattr(vae, "post_quant_conv", None) is not None:
        ops.append(_Op("conv", vae.post_quant_conv))
    ops.append(_Op("conv", dec.conv_in))
    ops += _mid_ops(dec.mid_block)
    for block in dec.up_blocks:
        _check_plain_block(block)
        for r in block.resnets:
            ops += _resnet_ops(r)
        for u in block.upsamplers or []:
            ops.append(_Op("up", u))
    if not isinstance(dec.conv_norm_out, nn.GroupNorm):
        raise NotImplementedError("tiled VAE: decoder conv_norm_out must be a GroupNorm (no spatial norm)")
    ops += [_Op("gn", dec.conv_norm_out), _Op("act", dec.conv_act), _Op("conv", dec.conv_out)]
    return ops


def _down_factor(op: _Op) -> int:
    m = op.module
    conv = getattr(m, "conv", None)
    if isinstance(conv, nn.Conv2d):
        if conv.stride != (2, 2) or conv.kernel_size != (3, 3) or conv.dilation != (1, 1):
            raise NotImplementedError("tiled VAE: downsampling must be a 3x3 stride-2 conv")
    return 2


def _up_conv(m: VaeModule) -> VaeModule | None:
    if getattr(m, "use_conv_transpose", False) or not getattr(m, "interpolate", True):
        raise NotImplementedError("tiled VAE: only nearest-neighbour upsampling is supported")
    if not getattr(m, "use_conv", False):
        return None
    return getattr(m, "conv", None) if getattr(m, "name", "conv") == "conv" else getattr(m, "Conv2d_0", None)


@dataclass
class _Segment:
    """Ops between global steps (attention), run tile by tile over one input map."""

    ops: list[_Op]
    scale: list[Fraction]  # scale of the input of ops[i] relative to the segment input, len(ops) + 1
    halo: int              # context needed around a core, in segment-input pixels
    align: int             # cores and crops start on multiples of this (2 ** downsamplings)
    attn_after: VaeModule | None = None


def _analyse(ops: list[_Op]) -> tuple[list[Fraction], int, int]:
    """Scales, halo (segment-input px) and alignment of a segment.

    Contamination ``c`` is how many pixels next to a crop edge (at the current resolution) differ from the
    untiled network because the crop's zero padding replaced real neighbours: a stride-1 conv adds its padding,
    nearest x2 upsampling doubles it (then its conv adds 1), a 3x3 stride-2 downsampling maps it to c // 2 + 1.
    The halo is the largest contamination over the segment expressed in input pixels.
    """
    scale = [Fraction(1)]
    c, c_skip = 0, 0
    halo = 0
    downs = 0
    for op in ops:
        s = scale[-1]
        if op.kind == "conv":
            c += _conv_pad(op.module)
        elif op.kind == "push":
            c_skip = c
        elif op.kind == "add":
            extra = _conv_pad(op.module) if op.module is not None else 0
            c = max(c, c_skip + extra)
        elif op.kind == "down":
            _down_factor(op)
            c = c // 2 + 1
            s = s / 2
            downs += 1
        elif op.kind == "up":
            conv = _up_conv(op.module)
            c = 2 * c + (_conv_pad(conv) if conv is not None else 0)
            s = s * 2
        scale.append(s)
        halo = max(halo, math.ceil(c / s))
    return scale, halo, 2 ** downs


def _segments(ops: list[_Op]) -> list[_Segment]:
    segs: list[_Segment] = []
    cur: list[_Op] = []
    for op in ops + [_Op("end")]:
        if op.kind in ("attn", "end"):
            scale, halo, align = _analyse(cur)
            segs.append(_Segment(cur, scale, halo, align, op.module if op.kind == "attn" else None))
            cur = []
        else:
            cur.append(op)
    return segs


def vae_halo(vae: VaeModule, which: str = "decoder") -> list[int]:
    """Receptive-field halo of each tiled segment of the VAE's encoder or decoder.

    Segments are separated by the mid-block attention; halos are in the segment's input pixels (encoder: image
    px, then latent px after the attention; decoder: latent px). A tile core surrounded by this much real
    context gives the same values as the untiled network.
    """
    ops = _encoder_program(vae) if which == "encoder" else _decoder_program(vae)
    return [seg.halo for seg in _segments(ops)]


# --------------------------------------------------------------------------------------------------------------
# running tiles
# --------------------------------------------------------------------------------------------------------------
@dataclass
class _State:
    h: torch.Tensor
    skip: torch.Tensor | None = None

    def nbytes(self) -> int:
        n = self.h.numel() * self.h.element_size()
        if self.skip is not None:
            n += self.skip.numel() * self.skip.element_size()
        return n


@dataclass
class _Tile:
    core: Box  # in segment-input px
    crop: Box  # core + halo, clamped to the map


def _group_norm(h: torch.Tensor, m: nn.GroupNorm, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """GroupNorm of ``h`` with given per-(sample, group) mean and rstd (float32 ``[B, G]``)."""
    mean, rstd = stats
    b, c = h.shape[:2]
    g = m.num_groups
    scale = rstd.repeat_interleave(c // g, dim=1)  # [B, C]
    if m.affine:
        scale = scale * m.weight.float()[None]
        shift = m.bias.float()[None] - mean.repeat_interleave(c // g, dim=1) * scale
    else:
        shift = -mean.repeat_interleave(c // g, dim=1) * scale
    out = torch.addcmul(shift[:, :, None, None], h.float(), scale[:, :, None, None])
    return out.to(h.dtype)


def _run_ops(st: _State, ops: Sequence[_Op], start: int, stop: int, stats: dict[int, Any]) -> _State:
    h, skip = st.h, st.skip
    for i in range(start, stop):
        op = ops[i]
        k = op.kind
        if k == "conv" or k == "act" or k == "down" or k == "up":
            h = op.module(h)
        elif k == "gn":
            h = _group_norm(h, op.module, stats[i])
        elif k == "push":
            skip = h
        elif k == "add":
            assert skip is not None, "an add op without a push"
            x = skip if op.module is None else op.module(skip)
            h = (x + h) / op.arg if op.arg != 1.0 else x + h
            skip = None
        elif k == "chunk":
            h = h[:, : h.shape[1] // 2]
        else:  # pragma: no cover - programs are built here
            raise RuntimeError(f"unknown op {k}")
    return _State(h, skip)


class _GroupStats:
    """Per-(sample, group) count, mean and M2, merged tile by tile (Chan et al.), in float64."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor, groups: int) -> None:
        b = x.shape[0]
        xg = x.reshape(b, groups, -1).float()
        n = xg.shape[-1]
        if n == 0:
            return
        mean = xg.mean(-1)
        m2 = ((xg - mean[..., None]) ** 2).sum(-1)
        mean, m2 = mean.double(), m2.double()
        if self.mean is None:
            self.n, self.mean, self.m2 = n, mean, m2
            return
        assert self.m2 is not None
        tot = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / tot)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.n * n / tot)
        self.n = tot

    def finalize(self, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.mean is not None and self.m2 is not None
        var = self.m2 / self.n
        return self.mean.float(), torch.rsqrt(var + eps).float()


def _split(length: int, tile: int, align: int) -> list[int]:
    """Boundaries of near-equal cores of at most ``tile`` covering [0, length), on multiples of ``align``."""
    n = max(1, math.ceil(length / max(tile, align)))
    bounds = sorted({min(length, round(i * length / n / align) * align) for i in range(n)} | {length})
    if bounds[0] != 0:
        bounds.insert(0, 0)
    return bounds


def _plan(h: int, w: int, tile: int, halo: int, align: int) -> list[_Tile]:
    if h % align or w % align:
        raise ValueError(f"tiled VAE: size {h}x{w} must be a multiple of {align}")
    ys, xs = _split(h, tile, align), _split(w, tile, align)
    tiles = []
    for y0, y1 in zip(ys[:-1], ys[1:]):
        for x0, x1 in zip(xs[:-1], xs[1:]):
            crop = Box(max(0, x0 - halo), max(0, y0 - halo), min(w, x1 + halo), min(h, y1 + halo))
            tiles.append(_Tile(Box(x0, y0, x1, y1), crop))
    return tiles


def _core_slice(t: _Tile, s: Fraction) -> tuple[slice, slice]:
    (x0, y0, x1, y1), (cx, cy) = t.core, t.crop[:2]
    def conv(a: int) -> int:
        v = a * s
        assert v.denominator == 1, "tile cores must be aligned to the network's downsampling"
        return int(v)
    return slice(conv(y0 - cy), conv(y1 - cy)), slice(conv(x0 - cx), conv(x1 - cx))


@dataclass
class _Ctx:
    device: torch.device
    dtype: torch.dtype
    cache_bytes: int
    attention: str
    max_attention_tokens: int
    attention_window: int
    progress: Progress | None
    total: int = 0
    done: int = 0
    log: dict = field(default_factory=dict)

    def tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def _run_segment(seg: _Segment, x: torch.Tensor, tiles: list[_Tile], ctx: _Ctx,
                 out_device: torch.device) -> torch.Tensor:
    ops, scale = seg.ops, seg.scale
    gn_at = [i for i, op in enumerate(ops) if op.kind == "gn"]
    stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    total_area = sum((t.crop[2] - t.crop[0]) * (t.crop[3] - t.crop[1]) for t in tiles)

    def load(t: _Tile) -> _State:
        return _State(x[(..., *t.crop.slices)].to(device=ctx.device, dtype=ctx.dtype))

    cache: list[_State | None] | None = None  # states of all tiles at op index `at`
    at = 0
    for p in gn_at:
        acc = _GroupStats()
        keep = False
        new: list[_State | None] = []
        for j, t in enumerate(tiles):
            st = cache[j] if cache is not None else None
            st = _run_ops(st if st is not None else load(t), ops, at if cache is not None else 0, p, stats)
            ys, xs = _core_slice(t, scale[p])
            acc.add(st.h[:, :, ys, xs], ops[p].module.num_groups)
            if j == 0:
                area = (t.crop[2] - t.crop[0]) * (t.crop[3] - t.crop[1])
                keep = st.nbytes() * total_area / area <= ctx.cache_bytes
            if keep:
                new.append(st)
                if cache is not None:
                    cache[j] = None  # the new state replaces it
            ctx.tick()
        stats[p] = acc.finalize(ops[p].module.eps)
        ctx.log.setdefault("recomputed_passes", 0)
        if keep:
            cache, at = new, p
        else:
            ctx.log["recomputed_passes"] += 1
    out: torch.Tensor | None = None
    s_end = scale[-1]
    for j, t in enumerate(tiles):
        st = cache[j] if cache is not None else None
        st = _run_ops(st if st is not None else load(t), ops, at if cache is not None else 0, len(ops), stats)
        if cache is not None:
            cache[j] = None
        ys, xs = _core_slice(t, s_end)
        if out is None:
            b, c = st.h.shape[:2]
            oh, ow = x.shape[2] * s_end, x.shape[3] * s_end
            out = torch.empty(b, c, int(oh), int(ow), device=out_device, dtype=st.h.dtype)
        y0, x0 = int(t.core.y0 * s_end), int(t.core.x0 * s_end)
        core = st.h[:, :, ys, xs]
        out[:, :, y0:y0 + core.shape[2], x0:x0 + core.shape[3]] = core.to(out_device)
        ctx.tick()
    assert out is not None
    return out


# --------------------------------------------------------------------------------------------------------------
# global attention at the mid block
# --------------------------------------------------------------------------------------------------------------
def _attn_project(attn: VaeModule, tokens: torch.Tensor, which: str) -> torch.Tensor:
    """tokens [B, n, C] (already group-normed) -> [B, heads, n, d] for q/k/v."""
    proj = {"q": attn.to_q, "k": attn.to_k, "v": attn.to_v}[which](tokens)
    b, n, inner = proj.shape
    out = proj.view(b, n, attn.heads, inner // attn.heads).transpose(1, 2)
    norm = getattr(attn, "norm_q" if which == "q" else "norm_k", None) if which != "v" else None
    return norm(out) if norm is not None else out


def _attn_out(attn: VaeModule, o: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    b, heads, n, d = o.shape
    o = o.transpose(1, 2).reshape(b, n, heads * d).to(dtype)
    o = attn.to_out[0](o)
    return attn.to_out[1](o)  # [B, n, C]


def _finish(attn: VaeModule, delta: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    if attn.residual_connection:
        delta = delta + residual
    return delta / attn.rescale_output_factor


def _mid_attention(attn: VaeModule, m: torch.Tensor, ctx: _Ctx) -> torch.Tensor:
    """Apply the VAE mid-block attention to the assembled map ``m`` [B, C, H, W] (modified in place)."""
    b, c, h, w = m.shape
    n = h * w
    gn = attn.group_norm
    flat = m.view(b, c, n)
    if gn is not None:
        var, mean = torch.var_mean(flat.float().view(b, gn.num_groups, -1), dim=-1, correction=0)
        gstats = (mean, torch.rsqrt(var + gn.eps))
        def norm(t: torch.Tensor) -> torch.Tensor:  # t: [B, C, k]
            return _group_norm(t[..., None], gn, gstats)[..., 0]
    else:
        def norm(t: torch.Tensor) -> torch.Tensor:
            return t
    mode = ctx.attention
    if mode == "auto":
        mode = "global" if n <= ctx.max_attention_tokens else "window"
    ctx.log["attention"] = mode
    # bytes per query row of scores, to size the chunks (~256 MiB of scores per chunk)
    heads = attn.heads
    if mode == "global":
        keys, values = [], []
        step = max(1, (1 << 22) // max(c, 1))
        for i in range(0, n, step):
            tok = norm(flat[:, :, i:i + step]).transpose(1, 2)
            keys.append(_attn_project(attn, tok, "k"))
            values.append(_attn_project(attn, tok, "v"))
        k = torch.cat(keys, dim=2)
        v = torch.cat(values, dim=2)
        del keys, values
        qstep = max(1, (1 << 26) // max(1, n * heads * b))
        for i in range(0, n, qstep):
            res = flat[:, :, i:i + qstep]
            tok = norm(res).transpose(1, 2)
            q = _attn_project(attn, tok, "q")
            o = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
            delta = _attn_out(attn, o, q.dtype).transpose(1, 2)  # [B, C, k]
            flat[:, :, i:i + qstep] = _finish(attn, delta, res)
        return m
    if mode != "window":
        raise ValueError(f"attention must be 'auto', 'global' or 'window', got {ctx.attention!r}")
    win = min(ctx.attention_window, max(h, w))
    boxes = latent_tiles(h, w, win, win // 4)
    acc = torch.zeros(b, c, h, w, device=m.device, dtype=torch.float32)
    wsum = torch.zeros(h, w, device=m.device, dtype=torch.float32)
    for (x0, y0, x1, y1) in boxes:
        blk = m[:, :, y0:y1, x0:x1].reshape(b, c, -1)
        tok = norm(blk).transpose(1, 2)
        q, k, v = (_attn_project(attn, tok, s) for s in "qkv")
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
        delta = _attn_out(attn, o, q.dtype).transpose(1, 2).reshape(b, c, y1 - y0, x1 - x0)
        weight = tile_weights((x0, y0, x1, y1), h, w, win // 4, device=m.device)
        acc[:, :, y0:y1, x0:x1] += delta.float() * weight
        wsum[y0:y1, x0:x1] += weight
    delta = (acc / wsum).to(m.dtype)
    del acc
    return _finish(attn, delta, m)


# --------------------------------------------------------------------------------------------------------------
# public VAE entry points
# --------------------------------------------------------------------------------------------------------------
def _default_cache_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
            return int(free // 3)
        except Exception:  # pragma: no cover - depends on the driver
            return 4 << 30
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        phys = 16 << 30
    return int(min(4 << 30, phys // 4))


def _run_program(vae: VaeModule, ops: list[_Op], x: torch.Tensor, tile: int, overlap: int,
                 max_cache_bytes: int | None, attention: str, max_attention_tokens: int | None,
                 attention_window: int,
                 progress: Progress | None, stats_out: dict | None) -> torch.Tensor:
    param = next(vae.parameters())
    device, dtype = param.device, param.dtype
    segs = _segments(ops)
    if max_attention_tokens is None:  # exact attention up to 16K on a GPU, 4K (about 5 min for SD) on CPU
        max_attention_tokens = 1 << 21 if device.type == "cuda" else 1 << 18
    ctx = _Ctx(device, dtype,
               _default_cache_bytes(device) if max_cache_bytes is None else int(max_cache_bytes),
               attention, max_attention_tokens, attention_window, progress)
    # plan all segments first (for progress totals)
    plans: list[list[_Tile]] = []
    s_in = Fraction(1)
    h, w = x.shape[2], x.shape[3]
    for seg in segs:
        hs, ws = h * s_in, w * s_in
        if hs.denominator != 1 or ws.denominator != 1:
            raise ValueError(f"tiled VAE: size {h}x{w} is not divisible by the network's downsampling")
        halo = max(seg.halo, math.ceil(overlap * s_in))
        halo = -(-halo // seg.align) * seg.align
        t = max(seg.align, int(round(tile * s_in)))
        t = -(-t // seg.align) * seg.align
        plan = _plan(int(hs), int(ws), t, halo, seg.align)
        plans.append(plan)
        n_gn = sum(op.kind == "gn" for op in seg.ops)
        ctx.total += len(plan) * (n_gn + 1)
        s_in = s_in * seg.scale[-1]
    ctx.log.update(halos=[seg.halo for seg in segs], tiles=[len(p) for p in plans])
    cur = x
    with torch.no_grad():
        for k, (seg, plan) in enumerate(zip(segs, plans)):
            last = k == len(segs) - 1
            cur = _run_segment(seg, cur, plan, ctx, out_device=x.device if last else device)
            if seg.attn_after is not None:
                cur = _mid_attention(seg.attn_after, cur, ctx)
    if stats_out is not None:
        stats_out.update(ctx.log)
    return cur


def tiled_vae_encode(vae: VaeModule, image: torch.Tensor, *, tile: int = 512, overlap: int = 0,
                     max_cache_bytes: int | None = None, attention: str = "auto",
                     max_attention_tokens: int | None = None, attention_window: int = 128,
                     progress: Progress | None = None, stats: dict | None = None) -> torch.Tensor:
    """Encode an image of any size with shared GroupNorm statistics; returns the latent distribution mean.

    Parameters
    ----------
    vae : diffusers ``AutoencoderKL``
        Plain ``DownEncoderBlock2D`` / ``UNetMidBlock2D`` structure (SD 1.x/2.x/XL VAEs). Runs on the VAE's
        device and dtype.
    image : Tensor ``[B, 3, H, W]`` in [-1, 1]
        ``H`` and ``W`` multiples of 8 (the VAE's downsampling). Stays where it is (CPU is fine); tiles move.
    tile : int
        Core size in image pixels (each tile is computed with a halo around it, see :func:`vae_halo`).
    overlap : int
        Minimum halo in image pixels; the receptive-field halo is always used at least, so results are exact.
    max_cache_bytes : int, optional
        Budget for tile activations kept between GroupNorm passes (default: a third of free GPU memory, or
        min(4 GiB, RAM / 4) on CPU). Over budget, passes recompute tiles from the last state that fitted.
    attention, max_attention_tokens, attention_window
        Mid-block attention: ``"global"`` (exact), ``"window"`` (overlapping ``attention_window``-px windows at
        latent resolution, Gaussian-blended), or ``"auto"``: global up to ``max_attention_tokens`` latent pixels
        (default 2**21 on CUDA, which covers 16K, and 2**18 on CPU, which covers 4K).
    progress : callable, optional
        ``progress(done, total)`` per tile pass.
    stats : dict, optional
        Filled with diagnostics (halos, tile counts, attention mode, recomputed passes).

    Returns
    -------
    Tensor ``[B, latent_channels, H / 8, W / 8]`` on ``image.device`` in the VAE's dtype: the *unscaled*
    posterior mean (multiply by ``vae.config.scaling_factor`` for the UNet).
    """
    if image.ndim != 4:
        raise ValueError(f"image must be [B, C, H, W], got shape {tuple(image.shape)}")
    h, w = image.shape[2:]
    if h <= tile and w <= tile:
        param = next(vae.parameters())
        with torch.no_grad():
            moments = vae.encoder(image.to(param.device, param.dtype))
            if getattr(vae, "quant_conv", None) is not None:
                moments = vae.quant_conv(moments)
        if progress is not None:
            progress(1, 1)
        return moments[:, : moments.shape[1] // 2].to(image.device)
    return _run_program(vae, _encoder_program(vae), image, tile, overlap, max_cache_bytes, attention,
                        max_attention_tokens, attention_window, progress, stats)


def tiled_vae_decode(vae: VaeModule, latents_unscaled: torch.Tensor, *, tile: int = 64, overlap: int = 0,
                     max_cache_bytes: int | None = None, attention: str = "auto",
                     max_attention_tokens: int | None = None, attention_window: int = 128,
                     progress: Progress | None = None, stats: dict | None = None) -> torch.Tensor:
    """Decode latents of any size with shared GroupNorm statistics; equals ``vae.decode(z).sample``.

    Parameters
    ----------
    vae : diffusers ``AutoencoderKL``
    latents_unscaled : Tensor ``[B, C, h, w]``
        Latents divided by ``vae.config.scaling_factor`` (what ``vae.decode`` takes). Any device.
    tile : int
        Core size in latent pixels (64 = 512 output px). Larger tiles waste less on halos (the SD decoder's
        halo is 15 latent px after the mid attention) but need more memory per tile.
    overlap : int
        Minimum halo in latent pixels; the receptive-field halo is always used at least.
    max_cache_bytes, attention, max_attention_tokens, attention_window, progress, stats
        As in :func:`tiled_vae_encode`.

    Returns
    -------
    Tensor ``[B, 3, 8h, 8w]`` in about [-1, 1], on ``latents_unscaled.device`` in the VAE's dtype.
    """
    if latents_unscaled.ndim != 4:
        raise ValueError(f"latents must be [B, C, h, w], got shape {tuple(latents_unscaled.shape)}")
    h, w = latents_unscaled.shape[2:]
    if h <= tile and w <= tile:
        param = next(vae.parameters())
        with torch.no_grad():
            z = latents_unscaled.to(param.device, param.dtype)
            if getattr(vae, "post_quant_conv", None) is not None:
                z = vae.post_quant_conv(z)
            out = vae.decoder(z)
        if progress is not None:
            progress(1, 1)
        return out.to(latents_unscaled.device)
    return _run_program(vae, _decoder_program(vae), latents_unscaled, tile, overlap, max_cache_bytes, attention,
                        max_attention_tokens, attention_window, progress, stats)


def vae_memory_estimate(h: int, w: int, *, block_out_channels: Sequence[int] = (128, 256, 512, 512),
                        dtype_bytes: int = 2, tile: int | None = None, halo: int = 15) -> dict[str, int]:
    """Rough peak activation memory (bytes) of decoding an ``h x w`` pixel image with an SD-style VAE.

    ``untiled``: the largest decoder stage (full-resolution ``block_out_channels[0]`` maps, ~4 alive at once in a
    resnet) plus the naive attention score matrix at 1/8 resolution. ``tiled``: the same for one tile of ``tile``
    latent px plus ``halo`` on each side, plus the latent-resolution attention maps (map, keys, values). Use it
    to decide when to switch to the tiled VAE (e.g. over a few GiB).

    Examples
    --------
    >>> est = vae_memory_estimate(2160, 3840, tile=64)
    >>> est["untiled"] > est["tiled"]
    True
    """
    c0, c_last = block_out_channels[0], block_out_channels[-1]
    n_lat = (h // 8) * (w // 8)
    # the 2nd-highest stage has twice the channels at half the resolution: same bytes / 2; the full-res stage wins
    untiled = 4 * c0 * h * w * dtype_bytes + n_lat * n_lat * dtype_bytes + 3 * c_last * n_lat * dtype_bytes
    if tile is None:
        return {"untiled": int(untiled)}
    side = 8 * (tile + 2 * halo)
    tiled = 4 * c0 * side * side * dtype_bytes + 3 * c_last * n_lat * dtype_bytes
    return {"untiled": int(untiled), "tiled": int(tiled)}
