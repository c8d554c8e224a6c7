"""Tiled UNet sampling and the tiled VAE with shared GroupNorm statistics (tiny random models, CPU, offline)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from crispedit.geometry import latent_tiles, tile_starts
from crispedit.tiling import (
    gaussian_weights,
    tile_weights,
    tiled_noise_prediction,
    tiled_vae_decode,
    tiled_vae_encode,
    vae_halo,
    vae_memory_estimate,
)

diffusers = pytest.importorskip("diffusers")


# ---------------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------------
def _tiny_vae(groups: int = 4) -> nn.Module:
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=groups, sample_size=64,
    ).eval()
    with torch.no_grad():  # non-trivial GroupNorm affines, so wrong statistics would show
        for m in vae.modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.3)
    return vae


@pytest.fixture(scope="module")
def vae() -> nn.Module:
    return _tiny_vae()


def _smooth_image(h: int, w: int, seed: int = 0, noise: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    img = torch.stack([0.8 * xx, 0.6 * torch.sin(2.5 * yy + 1.0), 0.5 * xx * yy + 0.2 * torch.cos(3 * xx)])[None]
    return img + noise * torch.randn(1, 3, h, w, generator=g)


def _smooth_latent(h: int, w: int, amp: float = 1.0) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    wave = torch.stack([torch.sin(3 * xx + 2 * yy), torch.cos(4 * yy), 2 * xx * yy - 0.5, xx ** 2 - yy])[None]
    if amp == 1.0:
        return wave
    # a gentle slope on a flat colour: the decoded image is close to stationary, so any seam would stand out
    return torch.tensor([0.5, -0.3, 0.2, 0.1])[None, :, None, None] + amp * wave


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-8))


# ---------------------------------------------------------------------------------------------------------------
# tile geometry and weights
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length,tile,overlap", [(64, 64, 16), (65, 64, 16), (270, 64, 16), (480, 64, 8),
                                                 (1000, 96, 32), (10, 64, 16)])
def test_plan_tiles_covers_with_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    t = min(tile, length)
    assert starts[0] == 0 and starts[-1] + t == length
    assert starts == sorted(set(starts))
    for a, b in zip(starts[:-1], starts[1:]):
        assert a + t - b >= overlap  # consecutive tiles overlap at least by `overlap`
        assert b > a


def test_plan_tiles_rejects_bad_overlap():
    with pytest.raises(ValueError):
        tile_starts(100, 64, 64)
    with pytest.raises(ValueError):
        tile_starts(0, 64, 8)


def test_tile_grid_covers_area():
    h, w = 90, 170
    boxes = latent_tiles(h, w, 64, 16)
    cover = torch.zeros(h, w, dtype=torch.int32)
    for x0, y0, x1, y1 in boxes:
        assert (y1 - y0, x1 - x0) == (64, 64)
        cover[y0:y1, x0:x1] += 1
    assert int(cover.min()) >= 1
    assert latent_tiles(40, 50, 64, 16) == [(0, 0, 50, 40)]  # (x0, y0, x1, y1)


def test_gaussian_weights_shape_and_positivity():
    w = gaussian_weights(64, 48)
    assert w.shape == (64, 48) and w.dtype == torch.float32
    assert float(w.min()) > 0
    assert torch.allclose(w, w.flip(0)) and torch.allclose(w, w.flip(1))
    assert float(w[32, 24]) > float(w[0, 0])
    assert float(gaussian_weights(64, 64, sigma_frac=0.01).min()) > 0  # floored, never exactly 0


def test_tile_weights_taper_only_inner_edges():
    w = tile_weights((48, 0, 112, 64), 64, 160, 16)
    assert float(w[32, 0]) < 1e-3 and float(w[32, -1]) < 1e-3   # inner left/right edges fade out
    assert float(w[0, 32]) > 0.2 and float(w[-1, 32]) > 0.2     # top/bottom lie on the area border
    assert float(w.min()) > 0


# ---------------------------------------------------------------------------------------------------------------
# tiled noise prediction
# ---------------------------------------------------------------------------------------------------------------
def test_tiled_prediction_equals_untiled_for_pointwise_predict():
    torch.manual_seed(1)
    z = torch.randn(2, 4, 96, 200)
    extra = torch.rand(2, 5, 96, 200)
    calls = []

    def predict(x):
        calls.append(tuple(x.shape))
        return x[:, :4] * 2 + x[:, 4:5] - 0.5 * x[:, 8:9]

    out = tiled_noise_prediction(predict, z, tile=64, overlap=16, batch=3, extra=extra)
    ref = z * 2 + extra[:, :1] - 0.5 * extra[:, 4:5]
    assert out.shape == (2, 4, 96, 200)
    assert float((out - ref).abs().max()) < 1e-5
    n_tiles = len(latent_tiles(96, 200, 64, 16))
    assert len(calls) == math.ceil(n_tiles / 3)
    assert all(s[0] <= 3 * 2 and s[1] == 9 and s[2:] == (64, 64) for s in calls)


def test_tiled_prediction_single_call_when_it_fits():
    torch.manual_seed(2)
    z = torch.randn(1, 4, 64, 48)
    calls = []

    def predict(x):  # not pointwise: a tiled result would differ
        calls.append(x.shape)
        return torch.nn.functional.avg_pool2d(x, 5, 1, 2) - x.mean()

    out = tiled_noise_prediction(predict, z, tile=64, overlap=16)
    assert len(calls) == 1
    assert torch.equal(out, torch.nn.functional.avg_pool2d(z, 5, 1, 2) - z.mean())


def test_tiled_prediction_has_no_steps_where_tiles_disagree():
    """Tiles that disagree by an offset hand over smoothly across the overlap, never with a step at an edge."""
    z = _smooth_latent(96, 200)
    done = []
    out = tiled_noise_prediction(lambda x: x - x.mean((2, 3), keepdim=True), z, tile=64, overlap=16,
                                 progress=lambda d, t: done.append((d, t)))
    assert done[-1][0] == done[-1][1]
    gx = (out[..., 1:] - out[..., :-1]).abs().amax((0, 1, 2))
    edges = sorted({x for (x0, _, x1, _) in latent_tiles(96, 200, 64, 16) for x in (x0 - 1, x1 - 1)} - {-1, 199})
    mask = torch.zeros(199, dtype=torch.bool)
    mask[edges] = True
    assert float(gx[mask].max()) <= float(gx[~mask].max())


# ---------------------------------------------------------------------------------------------------------------
# tiled VAE
# ---------------------------------------------------------------------------------------------------------------
def test_halos_follow_the_receptive_field(vae):
    assert vae_halo(vae, "encoder") == [56, 3]
    assert vae_halo(vae, "decoder") == [3, 11]
    with torch.device("meta"):  # SD1.5's VAE architecture, no weights
        sd = diffusers.AutoencoderKL(block_out_channels=(128, 256, 512, 512),
                                     down_block_types=("DownEncoderBlock2D",) * 4,
                                     up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2)
    assert vae_halo(sd, "encoder") == [88, 3]
    assert vae_halo(sd, "decoder") == [3, 15]


def test_tiled_encode_equals_untiled(vae):
    img = _smooth_image(256, 256, noise=0.1)
    with torch.no_grad():
        ref = vae.encode(img).latent_dist.mean
    info: dict = {}
    lat = tiled_vae_encode(vae, img, tile=64, stats=info)
    assert info["tiles"] == [16, 16] and info["attention"] == "global"
    assert lat.shape == ref.shape == (1, 4, 32, 32)
    assert _max_rel(lat, ref) < 1e-5


def test_tiled_decode_equals_untiled(vae):
    torch.manual_seed(3)
    z = torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        ref = vae.decode(z).sample
    info: dict = {}
    ticks = []
    out = tiled_vae_decode(vae, z, tile=8, stats=info, progress=lambda d, t: ticks.append((d, t)))
    assert info["tiles"] == [16, 16] and info["recomputed_passes"] == 0
    assert out.shape == ref.shape == (1, 3, 256, 256)
    assert _max_rel(out, ref) < 1e-5
    assert ticks[-1][0] == ticks[-1][1] and all(a[0] < b[0] for a, b in zip(ticks[:-1], ticks[1:]))


def test_recompute_path_without_cache_is_exact(vae):
    """With no cache budget every GroupNorm pass recomputes tiles from the input: same result, bounded memory."""
    img = _smooth_image(128, 128, noise=0.1)
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref_e = vae.encode(img).latent_dist.mean
        ref_d = vae.decode(z).sample
    info: dict = {}
    lat = tiled_vae_encode(vae, img, tile=64, max_cache_bytes=0, stats=info)
    assert info["recomputed_passes"] > 0
    assert _max_rel(lat, ref_e) < 1e-5
    info = {}
    out = tiled_vae_decode(vae, z, tile=8, max_cache_bytes=0, stats=info)
    assert info["recomputed_passes"] > 0
    assert _max_rel(out, ref_d) < 1e-5


def test_batch_and_minimum_overlap(vae):
    z = torch.randn(2, 4, 24, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = vae.decode(z).sample
    out = tiled_vae_decode(vae, z, tile=8, overlap=12)  # a larger halo than needed is fine
    assert _max_rel(out, ref) < 1e-5


def test_single_tile_is_the_untiled_call(vae):
    img = _smooth_image(64, 64)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(tiled_vae_encode(vae, img, tile=64), vae.encode(img).latent_dist.mean)
        assert torch.equal(tiled_vae_decode(vae, z, tile=64), vae.decode(z).sample)


def test_window_attention_covering_the_map_is_global(vae):
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = vae.decode(z).sample
    info: dict = {}
    out = tiled_vae_decode(vae, z, tile=8, attention="window", attention_window=16, stats=info)
    assert info["attention"] == "window"
    assert _max_rel(out, ref) < 1e-5


def test_bfloat16_runs_and_stays_close(vae):
    vae16 = _tiny_vae().to(torch.bfloat16)
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        ref = vae.decode(z).sample
    out = tiled_vae_decode(vae16, z, tile=8)
    assert out.dtype == torch.bfloat16
    assert _max_rel(out, ref) < 0.1


def test_encode_requires_multiple_of_8(vae):
    with pytest.raises(ValueError):
        tiled_vae_encode(vae, torch.zeros(1, 3, 100, 132), tile=64)


def _border_ratio(img: torch.Tensor, borders: list[int], period: int = 8, margin: int = 32) -> float:
    """Gradient energy across the given columns vs. the median over the other columns of the same phase
    (x mod period: the decoder's nearest-neighbour upsampling makes the energy periodic), away from the image
    edges (zero padding)."""
    g = (img[..., 1:] - img[..., :-1]).pow(2).mean(dim=(0, 1, 2))  # energy between columns x and x+1, at x
    at = torch.tensor([b - 1 for b in borders])
    others = [x for x in range(period - 1, g.numel(), period)
              if x + 1 not in borders and margin <= x < g.numel() - margin]
    return float(g[at].mean() / g[torch.tensor(others)].median())


def test_no_tile_grid_on_smooth_image(vae):
    z = _smooth_latent(32, 64, amp=0.05)
    info: dict = {}
    out = tiled_vae_decode(vae, z, tile=16, stats=info)
    assert info["tiles"][-1] == 8
    borders = [8 * x for x in range(16, 64, 16)]  # core boundaries of 16-latent-px tiles, in output px
    assert _border_ratio(out, borders) < 1.1
    assert _border_ratio(out.transpose(2, 3), [128]) < 1.1
    # the same measure on a naive tiling (each tile decoded alone, its own GroupNorm statistics) shows the steps
    naive = torch.empty_like(out)
    with torch.no_grad():
        for y in range(0, 32, 16):
            for x in range(0, 64, 16):
                naive[:, :, 8 * y:8 * y + 128, 8 * x:8 * x + 128] = vae.decode(z[:, :, y:y + 16, x:x + 16]).sample
    assert _border_ratio(naive, borders) > 1.5 and _border_ratio(naive.transpose(2, 3), [128]) > 1.5


def test_window_attention_adds_no_latent_tiles(vae):
    """The windowed (approximate) attention works on the assembled latent-resolution map: the convolution tiles
    around it still add nothing, the result does not depend on the tile size."""
    z = _smooth_latent(24, 48, amp=0.05)
    a = tiled_vae_decode(vae, z, tile=16, attention="window", attention_window=16)
    b = tiled_vae_decode(vae, z, tile=24, attention="window", attention_window=16)
    assert _max_rel(a, b) < 1e-5
    assert _border_ratio(a, [128, 256]) < 1.1


def test_tiled_decode_never_builds_a_full_resolution_map(vae):
    """Bounded memory: every intermediate (conv output) is a tile with its halo, far smaller than untiled."""
    z = _smooth_latent(64, 64)
    biggest = [0]

    def hook(_m, _i, out):
        biggest[0] = max(biggest[0], out.numel())

    handles = [m.register_forward_hook(hook) for m in vae.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            vae.decode(z)
        untiled = biggest[0]
        biggest[0] = 0
        tiled_vae_decode(vae, z, tile=16)
    finally:
        for h in handles:
            h.remove()
    # a tile is (16 + 2 * 11 halo) = 38 latent px of the 64: (38 / 64) ** 2 = 0.35 of the untiled maps
    assert biggest[0] <= 0.4 * untiled


def test_memory_estimate():
    est = vae_memory_estimate(2160, 3840, tile=64)
    assert est["untiled"] > 4 * est["tiled"] > 0
    assert set(vae_memory_estimate(512, 512)) == {"untiled"}
