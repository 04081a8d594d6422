"""Tiled inference over (huge) chunked volumes: the engine :func:`predict_tiled`.

Seed equation (sliding-window inference with Gaussian importance weighting, as in nnU-Net and
MONAI's ``sliding_window_inference(mode="gaussian")``)::

    out(v) = Σ_t w_t(v − s_t) · f(x[t])(v − s_t)  /  Σ_t w_t(v − s_t)

over the tiles ``t`` (start ``s_t``) of one global tile grid that contain voxel ``v``; ``f`` is
the model, ``w_t`` the Gaussian importance map, optionally zeroed in a ``margin`` along tile
faces that lie inside the volume (so that, with ``overlap >= 2·margin`` and
``margin = receptive_field // 2``, every voxel is predicted only from tiles in which its whole
receptive field is real data: tiled == whole-volume inference for convolutional nets).

Tile geometry (:mod:`fewlabel.inference.geometry`) and blending
(:mod:`fewlabel.inference.blending`) are pure numpy functions; the model is any callable
``model_fn(batch (B, C_in, *tile)) -> (B, C_out, *tile)``. The engine :func:`predict_tiled`
iterates over output *blocks* (the target's chunk grid), accumulates the tile predictions that
intersect a block into a block-sized buffer and writes the block (chunk-aligned, so parallel
writers never share a chunk). Memory is bounded by the block buffer, the tile batch (plus the
prefetched batches) and a tile-prediction cache of ``cache_tiles`` tiles, not by the volume.

Determinism and slab jobs: a voxel's value depends only on the global tile grid. Tiles are run
through the model in fixed global groups ("bricks" of up to ``batch_size`` neighbouring tiles),
so a tile's prediction does not depend on which blocks a job processes, on the cache, or on
recomputation; each block accumulates its tiles in ascending global tile order. Hence two jobs
writing disjoint block sets of one output equal one job bit for bit.

Volumes smaller than one tile along an axis are padded (``numpy.pad`` mode ``reflect``, at the
end of the axis) to the tile size before the model sees them and the prediction is cropped back:
the model always receives tiles of exactly ``tile`` shape (e.g. U-Nets needing multiples of
2^depth keep working). For 2D data (Z=1) configure ``tile[0] = 1`` to avoid computing 16
reflected planes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from fewlabel.errors import ConfigError
from fewlabel.inference.gating import open_roi, tile_activity
from fewlabel.inference.geometry import (
    TileLayout,
    TilePlan,
    Window,
    as_int_tuple,
    check_block_alignment,
    choose_order,
)
from fewlabel.inference.runner import ModelFn, TiledStats, TileRunner
from fewlabel.logs import progress

log = logging.getLogger(__name__)

__all__ = ["ModelFn", "TiledStats", "default_block_shape", "predict_tiled"]


def default_block_shape(target: Any, tile: Sequence[int]) -> tuple[int, ...]:
    """The target's spatial chunk shape (zarr), else twice the tile (numpy targets)."""
    chunks = getattr(target, "chunks", None)
    spatial = tuple(int(s) for s in target.shape[-3:])
    if chunks is not None:
        return tuple(int(c) for c in chunks[-3:])
    return tuple(min(s, 2 * t) for s, t in zip(spatial, tile, strict=True))


def predict_tiled(
    model_fn: ModelFn,
    source: Any,
    target: Any,
    *,
    tile: int | Sequence[int],
    overlap: int | Sequence[int],
    batch_size: int = 4,
    out_channels: int = 1,
    blocks: Iterable[Window] | None = None,
    cache_tiles: int = 64,
    prefetch: bool = True,
    progress_desc: str = "tiles",
    block_shape: Sequence[int] | None = None,
    margin: int | Sequence[int] = 0,
    sigma_scale: float = 0.125,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    order: Sequence[int] | None = None,
    roi: Any = None,
) -> TiledStats:
    """Blend ``model_fn`` over tiles of ``source`` into ``target`` block by block (seed eq. above).

    Parameters
    ----------
    model_fn : ``(B, C_in, *tile) float32 -> (B, C_out, *tile)``; called from this thread.
    source : numpy or zarr array, ZYX (C_in = 1) or CZYX; read tile-brick by tile-brick.
    target : numpy or zarr array, ZYX (``out_channels`` = 1) or CZYX with C = ``out_channels``;
        same ZYX shape as ``source``. Only the processed blocks are written.
    tile, overlap : tile shape and minimal overlap (voxels, per axis or one int).
    batch_size : tiles per model call (tiles are batched in fixed global bricks).
    blocks : optional subset of output blocks (slices of the block grid, e.g. one slab job's);
        the result in those blocks is bit-identical to a run over all blocks.
    cache_tiles : capacity of the tile-prediction cache (tiles shared by neighbouring blocks
        are reused rather than recomputed while they fit).
    prefetch : read (and ``preprocess``) the next bricks in a background thread while the
        model computes, and write finished blocks in another.
    block_shape : output block shape; defaults to the target's chunks (must be whole chunks).
    margin : voxels zeroed at interior tile faces in the weights; set to the model's
        ``receptive_field // 2`` (needs ``overlap >= 2·margin``).
    sigma_scale : Gaussian σ as a fraction of the tile size.
    preprocess : elementwise function applied to read data (e.g. intensity normalisation).
    order : block traversal axis order (outer → inner); chosen by dry run when None.
    roi : optional ZYX mask (array or OME-Zarr path; nonzero = region of interest): tiles
        without an ROI voxel are not computed, and voxels covered by such a tile are 0; every
        other voxel (all ROI voxels among them) equals the ungated result
        (:mod:`fewlabel.inference.gating`).

    Returns
    -------
    TiledStats with the recompute factor (tiles computed / tiles needed), cache high-water
    mark and timings.
    """
    t0 = time.perf_counter()
    spatial = tuple(int(s) for s in source.shape[-3:])
    if len(source.shape) not in (3, 4) or len(target.shape) not in (3, 4):
        raise ConfigError(
            f"source/target must be ZYX or CZYX; got shapes {source.shape}, {target.shape}."
        )
    if tuple(target.shape[-3:]) != spatial:
        raise ConfigError(
            f"target ZYX shape {tuple(target.shape[-3:])} differs from the source {spatial}."
        )
    if len(target.shape) == 3 and out_channels != 1:
        raise ConfigError(f"a ZYX target holds one channel, but out_channels={out_channels}.")
    if len(target.shape) == 4 and target.shape[0] != out_channels:
        raise ConfigError(f"target has {target.shape[0]} channels, out_channels={out_channels}.")
    tile_t = as_int_tuple(tile, 3, "tile")
    over_t = as_int_tuple(overlap, 3, "overlap")
    margin_t = as_int_tuple(margin, 3, "margin")
    for m, o in zip(margin_t, over_t, strict=True):
        if m < 0 or 2 * m > o:
            raise ConfigError(
                f"margin {margin_t} needs 0 <= 2*margin <= overlap {over_t}.",
                fix="increase the tile overlap or lower the margin.",
            )
    if batch_size < 1 or cache_tiles < 1:
        raise ConfigError(
            f"batch_size and cache_tiles must be >= 1; got {batch_size}, {cache_tiles}."
        )
    block_t = tuple(block_shape) if block_shape is not None else default_block_shape(target, tile_t)
    check_block_alignment(target, block_t)
    layout = TileLayout.build(spatial, tile_t, over_t, block_t, batch_size)
    job = None if blocks is None else [layout.block_index(b) for b in blocks]
    order_t = tuple(order) if order is not None else choose_order(layout, job, cache_tiles)
    mask = open_roi(roi, spatial)
    active = None if mask is None else tile_activity(mask, layout.starts, tile_t)
    inactive = None if active is None else set(np.flatnonzero(~active.ravel()).tolist())
    plan = TilePlan(layout, job, order_t, cache_tiles, inactive)
    runner = TileRunner(
        model_fn,
        source,
        target,
        layout,
        plan,
        out_channels=out_channels,
        prefetch=prefetch,
        margin=margin_t,
        sigma_scale=sigma_scale,
        preprocess=preprocess,
        active=active,
    )
    for _ in progress(runner.run(), total=len(plan.blocks), desc=progress_desc, logger=log):
        pass
    stats = runner.stats
    stats.tiles_total = int(np.prod(layout.n_tiles))
    live = stats.tiles_needed - stats.tiles_skipped  # distinct tiles that had to be computed
    stats.recompute_factor = stats.tiles_computed / live if live else 0.0
    stats.order = order_t
    stats.brick = layout.brick
    stats.cache_capacity = plan.capacity
    stats.seconds = time.perf_counter() - t0
    log.info(
        "%s: %d blocks, %d tiles needed (%d skipped: no ROI voxel), %d computed in %d batches "
        "(recompute factor %.3f, cache high-water %d/%d), %.3g voxels/s",
        progress_desc,
        stats.blocks,
        stats.tiles_needed,
        stats.tiles_skipped,
        stats.tiles_computed,
        stats.batches,
        stats.recompute_factor,
        stats.max_cached_tiles,
        plan.capacity,
        stats.voxels_per_second,
    )
    return stats
