"""Tiled inference engine: geometry, blending invariants, slab independence, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fewlabel.blocks import block_grid
from fewlabel.errors import ConfigError, ModelError
from fewlabel.inference.blending import importance_map
from fewlabel.inference.geometry import (
    TileLayout,
    TilePlan,
    brick_shape,
    tile_grid,
    tile_starts,
)
from fewlabel.inference.tiling import predict_tiled
from fewlabel.io import create_ome_zarr, open_ome_zarr

TILE = (8, 16, 16)


# --------------------------------------------------------------------------- helpers
def identity(batch: np.ndarray) -> np.ndarray:
    return batch.copy()


class TinyConv(torch.nn.Module):
    """Two 3×3×3 convolutions (zero padding): receptive field 5 voxels per axis."""

    def __init__(self, in_ch: int = 1, mid: int = 4, out_ch: int = 1) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv3d(in_ch, mid, 3, padding=1)
        self.c2 = torch.nn.Conv3d(mid, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.tanh(self.c1(x)))


@pytest.fixture
def net() -> TinyConv:
    torch.manual_seed(0)
    return TinyConv().eval()


def torch_fn(module: torch.nn.Module):
    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).numpy()

    return run


def whole(module: torch.nn.Module, volume: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(volume)[None, None]).numpy()[0, 0]


class CountingSource:
    """A numpy array proxy recording the largest single read (voxels)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape
        self.ndim = data.ndim
        self.max_read = 0
        self.reads = 0

    def __getitem__(self, key):
        out = self.data[key]
        self.max_read = max(self.max_read, out.size)
        self.reads += 1
        return out


# --------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("size", [1, 5, 16, 17, 40, 41, 64, 100, 129])
@pytest.mark.parametrize(("tile", "overlap"), [(16, 4), (16, 0), (8, 7), (32, 8)])
def test_tile_starts_cover_axis_with_min_overlap_and_flush_end(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0
    if size <= tile:
        assert starts == [0]
        return
    assert starts[-1] + tile == size  # last tile flush with the end
    covered = np.zeros(size, int)
    for s in starts:
        covered[s : s + tile] += 1
    assert (covered >= 1).all()
    steps = np.diff(starts)
    assert (steps >= 1).all() and (steps <= tile - overlap).all()
    assert (steps[:-1] == tile - overlap).all()  # regular step except the flush tile


def test_tile_starts_rejects_overlap_not_smaller_than_tile():
    with pytest.raises(ConfigError, match="overlap"):
        tile_starts(100, 16, 16)


def test_tile_grid_is_c_ordered_product():
    grid = tile_grid((20, 40, 10), (8, 16, 16), (2, 4, 4))
    zs, ys = tile_starts(20, 8, 2), tile_starts(40, 16, 4)
    assert len(grid) == len(zs) * len(ys) * 1
    assert grid[0] == (slice(0, 8), slice(0, 16), slice(0, 16))
    assert grid[1] == (slice(0, 8), slice(ys[1], ys[1] + 16), slice(0, 16))


def test_importance_map_is_positive_symmetric_gaussian():
    w = importance_map((8, 16, 12))
    assert w.dtype == np.float32 and w.shape == (8, 16, 12)
    assert w.min() >= 1e-3 and w.max() <= 1.0
    np.testing.assert_allclose(w, w[::-1, ::-1, ::-1])
    assert w[3:5, 7:9, 5:7].min() == w.max()  # peak at the centre
    # separable Gaussian with sigma = tile / 8 along x
    x = np.arange(12) - 5.5
    np.testing.assert_allclose(
        w[3, 7] / w[3, 7].max(),
        np.maximum(np.exp(-(x**2) / (2 * 1.5**2)) / np.exp(-0.25 / (2 * 1.5**2)), 0),
        rtol=1e-5,
    )


def test_brick_shape_never_exceeds_batch():
    assert brick_shape(4, (21, 21, 21)) == (1, 1, 4)
    assert brick_shape(4, (3, 3, 2)) == (1, 2, 2)
    assert brick_shape(8, (5, 2, 3)) == (2, 2, 2)
    for batch in range(1, 13):
        for n in [(1, 1, 1), (2, 3, 5), (7, 1, 2)]:
            assert int(np.prod(brick_shape(batch, n))) <= batch


# --------------------------------------------------------------------------- invariants
@pytest.mark.parametrize(
    "shape", [(20, 70, 50), (5, 30, 129), (1, 64, 64), (8, 16, 16), (3, 7, 100), (33, 65, 97)]
)
def test_identity_model_reproduces_input(shape, rng):
    volume = rng.normal(size=shape).astype(np.float32) * 100
    out = np.full(shape, np.nan, np.float32)
    predict_tiled(
        identity,
        volume,
        out,
        tile=TILE,
        overlap=(2, 4, 4),
        batch_size=3,
        cache_tiles=8,
        block_shape=(8, 32, 32),
    )
    np.testing.assert_allclose(out, volume, rtol=1e-6, atol=1e-6)


def test_identity_multichannel_czyx(rng):
    volume = rng.normal(size=(2, 11, 30, 21)).astype(np.float32)
    out = np.zeros((3, 11, 30, 21), np.float32)

    def three(batch):  # 2 channels in -> (a, b, a + b)
        return np.concatenate([batch, batch.sum(1, keepdims=True)], axis=1)

    predict_tiled(three, volume, out, tile=TILE, overlap=(2, 4, 4), out_channels=3)
    np.testing.assert_allclose(out[:2], volume, atol=1e-6)
    np.testing.assert_allclose(out[2], volume.sum(0), atol=1e-5)


def test_tiled_equals_whole_volume_for_convnet_with_margin(net, rng):
    volume = rng.normal(size=(13, 37, 45)).astype(np.float32)
    expected = whole(net, volume)
    out = np.zeros_like(volume)
    predict_tiled(
        torch_fn(net),
        volume,
        out,
        tile=TILE,
        overlap=(4, 4, 4),
        batch_size=4,
        margin=2,
        block_shape=(8, 16, 16),
    )  # RF 5 -> margin 2, overlap >= 4
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # without the margin, tile borders leak into the blend: the test can fail
    plain = np.zeros_like(volume)
    predict_tiled(torch_fn(net), volume, plain, tile=TILE, overlap=(4, 4, 4), margin=0)
    assert np.abs(plain - expected).max() > 1e-4


def test_slab_jobs_together_equal_one_job_bitexact(net, rng, tmp_path):
    volume = rng.normal(size=(21, 40, 37)).astype(np.float32)
    kwargs = dict(tile=TILE, overlap=(4, 8, 4), batch_size=3, cache_tiles=6, margin=(2, 2, 2))
    one = create_ome_zarr(
        tmp_path / "one.ome.zarr", volume.shape, np.float32, (4, 16, 16), (1, 1, 1)
    )
    predict_tiled(torch_fn(net), volume, one, **kwargs)
    blocks = block_grid(volume.shape, (4, 16, 16))
    split = create_ome_zarr(
        tmp_path / "split.ome.zarr", volume.shape, np.float32, (4, 16, 16), (1, 1, 1)
    )
    predict_tiled(
        torch_fn(net), volume, split, blocks=[b for b in blocks if b[0].start < 8], **kwargs
    )
    predict_tiled(
        torch_fn(net), volume, split, blocks=[b for b in blocks if b[0].start >= 8], **kwargs
    )
    np.testing.assert_array_equal(split[...], one[...])
    # any partition (here: interleaved blocks, no cache, no prefetch, another order) agrees
    odd = np.full(volume.shape, np.nan, np.float32)
    for parity in (0, 1):
        predict_tiled(
            torch_fn(net),
            volume,
            odd,
            block_shape=(4, 16, 16),
            blocks=[b for i, b in enumerate(blocks) if i % 2 == parity],
            prefetch=False,
            order=(2, 1, 0),
            **{**kwargs, "cache_tiles": 1},
        )
    np.testing.assert_array_equal(odd, one[...])


def test_memory_is_bounded_by_cache_batch_and_block(rng):
    volume = rng.normal(size=(24, 96, 96)).astype(np.float32)
    source = CountingSource(volume)
    batches: list[int] = []

    def model(batch):
        batches.append(batch.shape[0])
        return batch * 2.0

    out = np.zeros_like(volume)
    stats = predict_tiled(
        model,
        source,
        out,
        tile=TILE,
        overlap=(2, 4, 4),
        batch_size=4,
        cache_tiles=8,
        block_shape=(8, 32, 32),
    )
    np.testing.assert_allclose(out, 2 * volume, rtol=1e-6)
    assert stats.max_cached_tiles <= 8
    assert stats.block_buffer_voxels == 8 * 32 * 32
    assert max(batches) <= 4 and stats.max_batch <= 4
    assert stats.max_pending_reads <= 2 and stats.max_pending_writes <= 2
    # one read = one brick's bounding box (a row of 4 tiles), never the volume
    assert source.max_read <= 8 * 16 * (3 * 12 + 16)
    assert sum(batches) == stats.tiles_computed
    assert stats.tiles_needed == stats.tiles_total == len(tile_grid(volume.shape, TILE, (2, 4, 4)))
    assert stats.recompute_factor == stats.tiles_computed / stats.tiles_needed >= 1.0
    # a cache large enough for the frontier computes every tile exactly once
    stats_big = predict_tiled(
        model,
        volume,
        out,
        tile=TILE,
        overlap=(2, 4, 4),
        batch_size=4,
        cache_tiles=512,
        block_shape=(8, 32, 32),
    )
    assert stats_big.tiles_computed == stats_big.tiles_total
    assert stats_big.recompute_factor == 1.0
    assert stats.tiles_computed > stats_big.tiles_computed  # the small cache did recompute


def test_plan_cache_never_exceeds_capacity_and_drops_dead_tiles():
    layout = TileLayout.build((24, 96, 96), TILE, (2, 4, 4), (8, 32, 32), 4)
    for capacity in (1, 3, 8, 64):
        cache: set[int] = set()
        high = 0
        for op in TilePlan(layout, None, (0, 1, 2), capacity).ops():
            if op[0] == "compute":
                cache -= set(op[3])
                cache |= set(op[2])
            elif op[0] == "add":
                assert op[1] in cache
            elif op[0] == "drop":
                cache.remove(op[1])
            high = max(high, len(cache))
        assert high <= capacity
        assert not cache  # everything released at the end


def test_zarr_in_zarr_out_on_disk(net, rng, tmp_path):
    volume = (rng.normal(size=(18, 50, 40)) * 50 + 300).astype(np.uint16)
    src = create_ome_zarr(
        tmp_path / "in.ome.zarr", volume.shape, np.uint16, (6, 32, 32), (2.0, 0.5, 0.5)
    )
    src[...] = volume
    dst = create_ome_zarr(
        tmp_path / "out.ome.zarr", volume.shape, np.float32, (6, 32, 32), (2.0, 0.5, 0.5)
    )
    predict_tiled(
        torch_fn(net),
        open_ome_zarr(tmp_path / "in.ome.zarr").array,
        dst,
        tile=TILE,
        overlap=(4, 4, 4),
        margin=2,
        preprocess=lambda x: (x - 300.0) / 50.0,
    )
    result = open_ome_zarr(tmp_path / "out.ome.zarr").array[...]
    expected = whole(net, (volume.astype(np.float32) - 300.0) / 50.0)
    np.testing.assert_allclose(result, expected, atol=1e-5)


# --------------------------------------------------------------------------- errors
def test_wrong_model_output_shape_is_a_model_error(rng):
    volume = rng.normal(size=(8, 20, 20)).astype(np.float32)
    with pytest.raises(ModelError, match="shape"):
        predict_tiled(
            lambda b: b[:, :, :4], volume, np.zeros_like(volume), tile=TILE, overlap=(2, 4, 4)
        )


def test_misaligned_blocks_and_bad_margin_are_config_errors(rng, tmp_path):
    volume = rng.normal(size=(8, 40, 40)).astype(np.float32)
    target = create_ome_zarr(
        tmp_path / "t.ome.zarr", volume.shape, np.float32, (4, 16, 16), (1, 1, 1)
    )
    with pytest.raises(ConfigError, match="chunks"):
        predict_tiled(
            identity, volume, target, tile=TILE, overlap=(2, 4, 4), block_shape=(4, 24, 16)
        )
    with pytest.raises(ConfigError, match="aligned"):
        predict_tiled(
            identity,
            volume,
            target,
            tile=TILE,
            overlap=(2, 4, 4),
            blocks=[(slice(0, 4), slice(8, 24), slice(0, 16))],
        )
    with pytest.raises(ConfigError, match="margin"):
        predict_tiled(identity, volume, target, tile=TILE, overlap=(2, 4, 4), margin=3)
    with pytest.raises(ConfigError, match="channel"):
        predict_tiled(identity, volume, target, tile=TILE, overlap=(2, 4, 4), out_channels=2)
