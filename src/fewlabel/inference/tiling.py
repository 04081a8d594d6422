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
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fewlabel.errors import ConfigError, ModelError
from fewlabel.inference.blending import accumulate, importance_map, normalize_blend, tile_weight
from fewlabel.inference.geometry import (
    TileLayout,
    TilePlan,
    Window,
    as_int_tuple,
    check_block_alignment,
    choose_order,
)
from fewlabel.logs import progress

log = logging.getLogger(__name__)

ModelFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class TiledStats:
    """What one :func:`predict_tiled` call did (for logs, tests and benchmarks)."""

    blocks: int = 0
    tiles_total: int = 0
    tiles_needed: int = 0
    tiles_computed: int = 0
    batches: int = 0
    recompute_factor: float = 0.0
    max_cached_tiles: int = 0
    cache_capacity: int = 0
    max_batch: int = 0
    max_pending_reads: int = 0
    max_pending_writes: int = 0
    block_buffer_voxels: int = 0
    order: tuple[int, ...] = ()
    brick: tuple[int, ...] = ()
    voxels_written: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    wait_read_seconds: float = 0.0

    @property
    def voxels_per_second(self) -> float:
        return self.voxels_written / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["voxels_per_second"] = self.voxels_per_second
        return out


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
    plan = TilePlan(layout, job, order_t, cache_tiles)
    runner = _Runner(
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
    )
    for _ in progress(runner.run(), total=len(plan.blocks), desc=progress_desc, logger=log):
        pass
    stats = runner.stats
    stats.tiles_total = int(np.prod(layout.n_tiles))
    stats.recompute_factor = (
        stats.tiles_computed / stats.tiles_needed if stats.tiles_needed else 0.0
    )
    stats.order = order_t
    stats.brick = layout.brick
    stats.cache_capacity = plan.capacity
    stats.seconds = time.perf_counter() - t0
    log.info(
        "%s: %d blocks, %d tiles needed, %d computed in %d batches (recompute factor "
        "%.3f, cache high-water %d/%d), %.3g voxels/s",
        progress_desc,
        stats.blocks,
        stats.tiles_needed,
        stats.tiles_computed,
        stats.batches,
        stats.recompute_factor,
        stats.max_cached_tiles,
        plan.capacity,
        stats.voxels_per_second,
    )
    return stats


class _Runner:
    """Executes a :class:`TilePlan` with real data (reader/writer threads, cache, buffers)."""

    READ_AHEAD = 2  # bricks read ahead of the model
    WRITE_BEHIND = 2  # finished blocks waiting to be written
    MAX_LOOKAHEAD_OPS = 100_000

    def __init__(
        self,
        model_fn: ModelFn,
        source: Any,
        target: Any,
        layout: TileLayout,
        plan: TilePlan,
        *,
        out_channels: int,
        prefetch: bool,
        margin: tuple[int, ...],
        sigma_scale: float,
        preprocess: Callable[[np.ndarray], np.ndarray] | None,
    ) -> None:
        self.model_fn = model_fn
        self.source = source
        self.target = target
        self.layout = layout
        self.plan = plan
        self.out_channels = out_channels
        self.prefetch = prefetch
        self.margin = margin
        self.preprocess = preprocess
        self.base = importance_map(layout.tile, sigma_scale)
        self.in_channels = source.shape[0] if len(source.shape) == 4 else 1
        self.stats = TiledStats()

    # ---- I/O
    def read_brick(self, brick: tuple[int, ...]) -> tuple[list[int], np.ndarray]:
        """Read the bounding box of a brick once and cut (and pad) its tiles into a batch."""
        tids = self.layout.brick_tiles(brick)
        windows = [self.layout.window(t) for t in tids]
        lo = [min(w[a].start for w in windows) for a in range(3)]
        hi = [min(max(w[a].stop for w in windows), self.layout.shape[a]) for a in range(3)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        lead = (slice(None),) if len(self.source.shape) == 4 else ()
        data = np.asarray(self.source[lead + box], dtype=np.float32)
        if not lead:
            data = data[None]
        if self.preprocess is not None:
            data = np.asarray(self.preprocess(data), dtype=np.float32)
        batch = np.empty((len(tids), self.in_channels, *self.layout.tile), dtype=np.float32)
        for k, w in enumerate(windows):
            local = tuple(
                slice(w[a].start - lo[a], min(w[a].stop, hi[a]) - lo[a]) for a in range(3)
            )
            piece = data[(slice(None),) + local]
            pad = [(0, 0)] + [
                (0, t - n) for t, n in zip(self.layout.tile, piece.shape[1:], strict=True)
            ]
            if any(p[1] for p in pad):
                piece = np.pad(piece, pad, mode="reflect")
            batch[k] = piece
        return tids, batch

    def write_block(self, bidx: tuple[int, ...], out: np.ndarray) -> None:
        win = self.layout.block_window(bidx)
        if len(self.target.shape) == 3:
            self.target[win] = out[0]
        else:
            self.target[(slice(None),) + win] = out

    # ---- model
    def compute(self, batch: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        out = np.asarray(self.model_fn(batch))
        self.stats.model_seconds += time.perf_counter() - t0
        expected = (batch.shape[0], self.out_channels, *self.layout.tile)
        if out.shape != expected:
            raise ModelError(
                f"the model returned an array of shape {out.shape} for a batch of "
                f"shape {batch.shape}; expected {expected}.",
                fix="the model must keep the spatial size and give out_channels channels.",
            )
        return out.astype(np.float32, copy=False)

    # ---- main loop
    def run(self) -> Iterator[tuple[int, ...]]:
        """Process the plan; yield after each written block."""
        reader = ThreadPoolExecutor(1, thread_name_prefix="tiled-read") if self.prefetch else None
        writer = ThreadPoolExecutor(1, thread_name_prefix="tiled-write") if self.prefetch else None
        ops = self.plan.ops()
        pending: deque[tuple[Any, ...]] = deque()
        reads: deque[Future[tuple[list[int], np.ndarray]]] = deque()
        writes: deque[Future[None]] = deque()
        exhausted = False

        def fill() -> None:
            """Pull plan ops until READ_AHEAD brick reads are in flight (one without prefetch)."""
            nonlocal exhausted
            while not exhausted and len(pending) < self.MAX_LOOKAHEAD_OPS:
                if reader is None and pending:
                    return
                if reader is not None and len(reads) >= self.READ_AHEAD:
                    return
                try:
                    op = next(ops)
                except StopIteration:
                    exhausted = True
                    return
                pending.append(op)
                if op[0] == "compute" and reader is not None:
                    reads.append(reader.submit(self.read_brick, op[1]))
                    self.stats.max_pending_reads = max(self.stats.max_pending_reads, len(reads))

        cache: dict[int, np.ndarray] = {}
        acc = wsum = None
        current: Window = ()
        try:
            while True:
                fill()
                if not pending:
                    break
                op = pending.popleft()
                kind = op[0]
                if kind == "begin":
                    current = self.layout.block_window(op[1])
                    shape = tuple(s.stop - s.start for s in current)
                    acc = np.zeros((self.out_channels, *shape), dtype=np.float64)
                    wsum = np.zeros(shape, dtype=np.float64)
                    self.stats.block_buffer_voxels = max(self.stats.block_buffer_voxels, acc.size)
                elif kind == "compute":
                    _, brick, store, evict = op
                    if reader is not None:
                        t0 = time.perf_counter()
                        tids, batch = reads.popleft().result()
                        self.stats.wait_read_seconds += time.perf_counter() - t0
                        fill()  # queue the next read before the model runs
                    else:
                        tids, batch = self.read_brick(brick)
                    preds = self.compute(batch)
                    self.stats.batches += 1
                    self.stats.tiles_computed += len(tids)
                    self.stats.max_batch = max(self.stats.max_batch, len(tids))
                    for t in evict:
                        del cache[t]
                    for t in store:
                        cache[t] = preds[tids.index(t)].copy()
                    self.stats.max_cached_tiles = max(self.stats.max_cached_tiles, len(cache))
                elif kind == "add":
                    _, tid, first = op
                    self.stats.tiles_needed += int(first)
                    window = self.layout.window(tid)
                    weight = tile_weight(window, self.layout.shape, self.base, self.margin)
                    accumulate(acc, wsum, cache[tid], weight, window, current)
                elif kind == "drop":
                    del cache[op[1]]
                elif kind == "end":
                    out = normalize_blend(acc, wsum)
                    acc = wsum = None
                    self.stats.blocks += 1
                    self.stats.voxels_written += int(np.prod(out.shape[1:]))
                    if writer is None:
                        self.write_block(op[1], out)
                    else:
                        while len(writes) >= self.WRITE_BEHIND:
                            writes.popleft().result()
                        writes.append(writer.submit(self.write_block, op[1], out))
                        self.stats.max_pending_writes = max(
                            self.stats.max_pending_writes, len(writes)
                        )
                    yield op[1]
            while writes:
                writes.popleft().result()
        finally:
            for executor in (reader, writer):
                if executor is not None:
                    executor.shutdown(wait=True, cancel_futures=True)
