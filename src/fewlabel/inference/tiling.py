"""Tiled inference over (huge) chunked volumes: tile geometry, Gaussian blending, the engine.

Seed equation (sliding-window inference with Gaussian importance weighting, as in nnU-Net and
MONAI's ``sliding_window_inference(mode="gaussian")``)::

    out(v) = Σ_t w_t(v − s_t) · f(x[t])(v − s_t)  /  Σ_t w_t(v − s_t)

over the tiles ``t`` (start ``s_t``) of one global tile grid that contain voxel ``v``; ``f`` is
the model, ``w_t`` the Gaussian importance map, optionally zeroed in a ``margin`` along tile
faces that lie inside the volume (so that, with ``overlap >= 2·margin`` and
``margin = receptive_field // 2``, every voxel is predicted only from tiles in which its whole
receptive field is real data: tiled == whole-volume inference for convolutional nets).

Geometry and blending are pure numpy functions; the model is any callable
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

import bisect
import functools
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fewlabel.errors import ConfigError, ModelError
from fewlabel.logs import progress

log = logging.getLogger(__name__)

Window = tuple[slice, ...]
ModelFn = Callable[[np.ndarray], np.ndarray]
_INF = (math.inf, 0)


# --------------------------------------------------------------------------- geometry
def _as_tuple(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)):
        return (int(value),) * ndim
    out = tuple(int(v) for v in value)
    if len(out) != ndim:
        raise ConfigError(f"'{name}' needs {ndim} values (z, y, x); got {list(value)}.")
    return out


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles covering ``range(size)`` along one axis.

    Regular step ``tile − overlap`` from 0; the last tile is shifted to end flush with the
    volume (so it may overlap its neighbour by more than ``overlap``). When ``size <= tile`` a
    single tile at 0 covers the axis; :func:`predict_tiled` pads the data to the tile size
    (reflect) and crops the prediction back.
    """
    if tile < 1:
        raise ConfigError(f"tile size must be >= 1; got {tile}.")
    if overlap < 0 or overlap >= tile:
        raise ConfigError(f"tile overlap must be in [0, tile); got overlap={overlap}, "
                          f"tile={tile}.", fix="use an overlap smaller than the tile.")
    if size < 1:
        raise ConfigError(f"cannot tile an empty axis (size {size}).")
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile + 1, step))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def tile_grid(shape: Sequence[int], tile: int | Sequence[int],
              overlap: int | Sequence[int]) -> list[Window]:
    """All tile windows ``slice(start, start + tile)`` per axis, in C order (index = tile id).

    A window extends past the volume only along axes shorter than the tile (padded axes).
    """
    ndim = len(shape)
    tile_t = _as_tuple(tile, ndim, "tile")
    over_t = _as_tuple(overlap, ndim, "overlap")
    axes = [[slice(s, s + t) for s in tile_starts(n, t, o)]
            for n, t, o in zip(shape, tile_t, over_t, strict=True)]
    return [tuple(combo) for combo in itertools.product(*axes)]


def importance_map(tile: Sequence[int], sigma_scale: float | Sequence[float] = 0.125,
                   min_weight: float = 1e-3) -> np.ndarray:
    """Gaussian importance map ``w(p) = Π_a exp(−(p_a − c_a)² / 2σ_a²)``, ``σ_a = sigma_scale·tile_a``.

    Centred at ``c_a = (tile_a − 1)/2`` (peak ≈ 1), clamped below at ``min_weight > 0`` so every
    voxel of a tile has a positive weight (nnU-Net / MONAI "gaussian" mode; same formula and
    clamp as ``monai.data.utils.compute_importance_map``). Returned as float32.
    """
    if min_weight <= 0:
        raise ConfigError(f"min_weight must be > 0; got {min_weight}.")
    tile_t = tuple(int(t) for t in tile)
    scales = _as_float_tuple(sigma_scale, len(tile_t))
    weight = np.ones((), dtype=np.float64)
    for t, scale in zip(tile_t, scales, strict=True):
        x = np.arange(t, dtype=np.float64) - (t - 1) / 2.0
        sigma = max(t * scale, 1e-6)
        weight = np.multiply.outer(weight, np.exp(-(x**2) / (2.0 * sigma**2)))
    return np.maximum(weight, min_weight).astype(np.float32)


def _as_float_tuple(value: float | Sequence[float], ndim: int) -> tuple[float, ...]:
    if isinstance(value, (int, float, np.floating, np.integer)):
        return (float(value),) * ndim
    return tuple(float(v) for v in value)


def border_mask_1d(start: int, tile: int, size: int, margin: int) -> np.ndarray:
    """1D 0/1 mask zeroing ``margin`` voxels at each tile face that lies inside the volume.

    Faces on the volume border (start 0, or end >= size) are kept: there the whole-volume
    prediction sees the same border as the tile.
    """
    mask = np.ones(tile, dtype=np.float32)
    if margin > 0:
        if start > 0:
            mask[:margin] = 0.0
        if start + tile < size:
            mask[tile - margin:] = 0.0
    return mask


def tile_weight(window: Window, shape: Sequence[int], base: np.ndarray,
                margin: Sequence[int]) -> np.ndarray:
    """Blending weight of the tile at ``window``: ``base`` times the per-axis border masks."""
    weight = base
    for axis, (sl, size, m) in enumerate(zip(window, shape, margin, strict=True)):
        if m <= 0:
            continue
        mask = border_mask_1d(sl.start, base.shape[axis], size, m)
        if mask.all():
            continue
        view = [None] * base.ndim
        view[axis] = slice(None)
        weight = weight * mask[tuple(view)]
    return weight


def intersect(window: Window, block: Window) -> tuple[Window, Window] | None:
    """``(tile-local, block-local)`` slices of the overlap of a tile window and a block."""
    tile_local: list[slice] = []
    block_local: list[slice] = []
    for w, b in zip(window, block, strict=True):
        lo, hi = max(w.start, b.start), min(w.stop, b.stop)
        if hi <= lo:
            return None
        tile_local.append(slice(lo - w.start, hi - w.start))
        block_local.append(slice(lo - b.start, hi - b.start))
    return tuple(tile_local), tuple(block_local)


def accumulate(acc: np.ndarray, wsum: np.ndarray, pred: np.ndarray, weight: np.ndarray,
               window: Window, block: Window) -> bool:
    """Add ``weight · pred`` (``pred`` is (C, *tile)) into ``acc[:, block]`` and ``weight`` into
    ``wsum[block]`` over their overlap (in place); return False if they do not overlap.

    The engine accumulates in float64 (so an identity model returns its input to float32
    rounding) and always in ascending global tile order (bit-reproducible).
    """
    hit = intersect(window, block)
    if hit is None:
        return False
    tile_local, block_local = hit
    w = weight[tile_local].astype(acc.dtype, copy=False)
    acc[(slice(None),) + block_local] += pred[(slice(None),) + tile_local] * w
    wsum[block_local] += w
    return True


def normalize_blend(acc: np.ndarray, wsum: np.ndarray) -> np.ndarray:
    """``acc / wsum`` (broadcast over channels); every voxel must have a positive weight sum."""
    if not (wsum > 0).all():
        raise RuntimeError("a voxel is covered by no tile with positive weight "
                           "(overlap < 2*margin?)")
    return (acc / wsum[None]).astype(np.float32)


# --------------------------------------------------------------------------- layout & plan
def brick_shape(batch_size: int, n_tiles: Sequence[int]) -> tuple[int, ...]:
    """Tiles per axis of one batch "brick": a row of up to ``batch_size`` tiles along x, spilling
    to y then z when the grid has fewer tiles along x (the product never exceeds batch_size).

    Bricks partition the global tile grid into fixed, spatially compact groups; one brick is
    one model batch (edge bricks may hold fewer tiles). Rows (rather than 2×2 squares) keep the
    number of tiles computed for a block's neighbours low (measured: recompute factor 1.67 vs
    1.85 for a 1 GiB volume with a 64-tile cache).
    """
    ndim = len(n_tiles)
    brick = [1] * ndim
    rest = max(1, int(batch_size))
    for axis in reversed(range(ndim)):
        take = max(d for d in range(1, rest + 1) if rest % d == 0 and d <= max(1, n_tiles[axis]))
        brick[axis] = take
        rest //= take
    return tuple(brick)


@dataclass(frozen=True)
class TileLayout:
    """The global tile grid, the output block grid and the batch bricks of one volume."""

    shape: tuple[int, ...]
    tile: tuple[int, ...]
    overlap: tuple[int, ...]
    block_shape: tuple[int, ...]
    brick: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]

    @classmethod
    def build(cls, shape: Sequence[int], tile: int | Sequence[int],
              overlap: int | Sequence[int], block_shape: Sequence[int],
              batch_size: int) -> TileLayout:
        shape_t = tuple(int(s) for s in shape)
        ndim = len(shape_t)
        tile_t = _as_tuple(tile, ndim, "tile")
        over_t = _as_tuple(overlap, ndim, "overlap")
        block_t = tuple(max(1, min(int(b), s)) for b, s in zip(block_shape, shape_t, strict=True))
        starts = tuple(tuple(tile_starts(n, t, o))
                       for n, t, o in zip(shape_t, tile_t, over_t, strict=True))
        brick = brick_shape(batch_size, [len(s) for s in starts])
        return cls(shape_t, tile_t, over_t, block_t, brick, starts)

    @functools.cached_property
    def n_tiles(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.starts)

    @functools.cached_property
    def n_blocks(self) -> tuple[int, ...]:
        return tuple(-(-n // b) for n, b in zip(self.shape, self.block_shape, strict=True))

    @functools.cached_property
    def n_bricks(self) -> tuple[int, ...]:
        return tuple(-(-n // b) for n, b in zip(self.n_tiles, self.brick, strict=True))

    def tile_id(self, index: Sequence[int]) -> int:
        tid = 0
        for i, n in zip(index, self.n_tiles, strict=True):
            tid = tid * n + i
        return tid

    def tile_index(self, tid: int) -> tuple[int, ...]:
        out = []
        for n in reversed(self.n_tiles):
            tid, i = divmod(tid, n)
            out.append(i)
        return tuple(reversed(out))

    def window(self, tid: int) -> Window:
        return tuple(slice(s[i], s[i] + t) for s, i, t in
                     zip(self.starts, self.tile_index(tid), self.tile, strict=True))

    def block_window(self, bidx: Sequence[int]) -> Window:
        return tuple(slice(i * b, min((i + 1) * b, n))
                     for i, b, n in zip(bidx, self.block_shape, self.shape, strict=True))

    def block_index(self, block: Window) -> tuple[int, ...]:
        """Index of a block given as slices; ConfigError if it is not a block of the grid."""
        index = tuple(sl.start // b for sl, b in zip(block, self.block_shape, strict=True))
        if tuple(block) != self.block_window(index):
            raise ConfigError(f"block {block} is not aligned with the output block grid "
                              f"{self.block_shape}.",
                              fix="pass blocks from fewlabel.blocks.block_grid(shape, "
                                  "block_shape) with the engine's block shape.")
        return index

    def _axis_tiles(self, axis: int, lo: int, hi: int) -> range:
        starts = self.starts[axis]
        first = bisect.bisect_right(starts, lo - self.tile[axis])
        last = bisect.bisect_left(starts, hi)
        return range(first, last)

    def block_tiles(self, bidx: Sequence[int]) -> list[int]:
        """Ids (ascending) of the tiles intersecting block ``bidx``."""
        win = self.block_window(bidx)
        ranges = [self._axis_tiles(a, sl.start, sl.stop) for a, sl in enumerate(win)]
        return [self.tile_id(ix) for ix in itertools.product(*ranges)]

    def tile_blocks(self, tid: int) -> list[range]:
        """Per axis, the range of block indices a tile intersects."""
        out = []
        for s, i, t, b, n in zip(self.starts, self.tile_index(tid), self.tile, self.block_shape,
                                 self.shape, strict=True):
            start = s[i]
            stop = min(start + t, n)
            out.append(range(start // b, (stop - 1) // b + 1))
        return out

    def brick_of(self, tid: int) -> tuple[int, ...]:
        return tuple(i // b for i, b in zip(self.tile_index(tid), self.brick, strict=True))

    def brick_tiles(self, brick: Sequence[int]) -> list[int]:
        """Ids (ascending) of the tiles of one brick."""
        ranges = [range(k * b, min((k + 1) * b, n))
                  for k, b, n in zip(brick, self.brick, self.n_tiles, strict=True)]
        return [self.tile_id(ix) for ix in itertools.product(*ranges)]

    def all_blocks(self) -> list[tuple[int, ...]]:
        return list(itertools.product(*[range(n) for n in self.n_blocks]))


class TilePlan:
    """The schedule of one job: block order, brick computations and cache decisions.

    Pure bookkeeping (no data): :meth:`ops` yields ``("begin", block)``,
    ``("compute", brick, store, evict)``, ``("add", tile, first_use)``, ``("drop", tile)``,
    ``("end", block)``. The cache holds at most ``capacity`` tile predictions and evicts the
    tile whose next use lies farthest in the future (Belady's optimal policy; the future is known
    because the block order is fixed); tiles with no future use are dropped at once.
    """

    def __init__(self, layout: TileLayout, blocks: Iterable[Sequence[int]] | None,
                 order: Sequence[int], capacity: int) -> None:
        self.layout = layout
        self.order = tuple(order)
        self.capacity = max(1, int(capacity))
        job = [tuple(b) for b in blocks] if blocks is not None else layout.all_blocks()
        self.job: set[tuple[int, ...]] | None = set(job) if blocks is not None else None
        n_blocks = layout.n_blocks
        self._stride = [0] * len(n_blocks)
        step = 1
        for axis in reversed(self.order):
            self._stride[axis] = step
            step *= n_blocks[axis]
        self.blocks = sorted(set(job), key=self.rank)

    def rank(self, bidx: Sequence[int]) -> int:
        """Position of a block in the traversal (C order over the permuted axes)."""
        return sum(i * s for i, s in zip(bidx, self._stride, strict=True))

    def _future_use(self, tid: int, rank: int) -> tuple[float, int]:
        best = math.inf
        for bidx in itertools.product(*self.layout.tile_blocks(tid)):
            if self.job is not None and bidx not in self.job:
                continue
            r = self.rank(bidx)
            if rank < r < best:
                best = r
        return (best, tid) if best < math.inf else _INF

    def _first_use(self, tid: int, rank: int) -> bool:
        for bidx in itertools.product(*self.layout.tile_blocks(tid)):
            if (self.job is None or bidx in self.job) and self.rank(bidx) < rank:
                return False
        return True

    def ops(self) -> Iterator[tuple[Any, ...]]:
        cache: dict[int, tuple[float, int]] = {}
        for bidx in self.blocks:
            rank = self.rank(bidx)
            tiles = self.layout.block_tiles(bidx)
            here = set(tiles)
            yield ("begin", bidx)
            for tid in tiles:
                if tid not in cache:
                    store: list[int] = []
                    evict: list[int] = []
                    for u in self.layout.brick_tiles(self.layout.brick_of(tid)):
                        if u in cache:
                            continue
                        key = (rank, u) if (u in here and u >= tid) else self._future_use(u, rank)
                        if key == _INF:
                            continue
                        if len(cache) >= self.capacity:
                            victim = max(cache, key=cache.__getitem__)
                            if cache[victim] <= key:
                                continue
                            del cache[victim]
                            if victim in store:
                                store.remove(victim)
                            else:
                                evict.append(victim)
                        cache[u] = key
                        store.append(u)
                    yield ("compute", self.layout.brick_of(tid), tuple(store), tuple(evict))
                yield ("add", tid, self._first_use(tid, rank))
                key = self._future_use(tid, rank)
                if key == _INF:
                    del cache[tid]
                    yield ("drop", tid)
                else:
                    cache[tid] = key
            yield ("end", bidx)

    def count(self) -> dict[str, int]:
        """Dry run: tiles computed (incl. brick companions), bricks, unique tiles needed."""
        computed = bricks = needed = 0
        for op in self.ops():
            if op[0] == "compute":
                bricks += 1
                computed += len(self.layout.brick_tiles(op[1]))
            elif op[0] == "add":
                needed += int(op[2])
        return {"tiles_computed": computed, "bricks": bricks, "tiles_needed": needed}


def choose_order(layout: TileLayout, blocks: Sequence[Sequence[int]] | None, capacity: int,
                 *, max_work: int = 200_000) -> tuple[int, ...]:
    """The block traversal axis order (outer → inner) that computes the fewest tiles.

    Tries the 6 axis permutations by dry run when the job is small enough (``max_work`` tile
    additions); else z, y, x.
    """
    n_blocks = len(blocks) if blocks is not None else int(np.prod(layout.n_blocks))
    per_block = int(np.prod([-(-(b + t) // max(t - o, 1)) for b, t, o in
                             zip(layout.block_shape, layout.tile, layout.overlap, strict=True)]))
    if n_blocks * per_block * 6 > max_work or n_blocks <= 1:
        return (0, 1, 2)[: len(layout.shape)]
    best: tuple[int, tuple[int, ...]] | None = None
    for order in itertools.permutations(range(len(layout.shape))):
        computed = TilePlan(layout, blocks, order, capacity).count()["tiles_computed"]
        if best is None or computed < best[0]:
            best = (computed, order)
    assert best is not None  # noqa: S101 - internal invariant (at least one permutation)
    return best[1]


# --------------------------------------------------------------------------- engine
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


def _check_block_alignment(target: Any, block_shape: Sequence[int]) -> None:
    chunks = getattr(target, "chunks", None)
    if chunks is None:
        return
    spatial = target.shape[-3:]
    for b, c, n in zip(block_shape, chunks[-3:], spatial, strict=True):
        if b % c != 0 and b < n:
            raise ConfigError(f"block shape {tuple(block_shape)} is not a multiple of the "
                              f"output chunks {tuple(chunks[-3:])}; parallel writers would "
                              "share chunks.", fix="use a block shape made of whole chunks.")


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
        raise ConfigError(f"source/target must be ZYX or CZYX; got shapes {source.shape}, "
                          f"{target.shape}.")
    if tuple(target.shape[-3:]) != spatial:
        raise ConfigError(f"target ZYX shape {tuple(target.shape[-3:])} differs from the "
                          f"source {spatial}.")
    if len(target.shape) == 3 and out_channels != 1:
        raise ConfigError(f"a ZYX target holds one channel, but out_channels={out_channels}.")
    if len(target.shape) == 4 and target.shape[0] != out_channels:
        raise ConfigError(f"target has {target.shape[0]} channels, out_channels={out_channels}.")
    tile_t = _as_tuple(tile, 3, "tile")
    over_t = _as_tuple(overlap, 3, "overlap")
    margin_t = _as_tuple(margin, 3, "margin")
    for m, o in zip(margin_t, over_t, strict=True):
        if m < 0 or 2 * m > o:
            raise ConfigError(f"margin {margin_t} needs 0 <= 2*margin <= overlap {over_t}.",
                              fix="increase the tile overlap or lower the margin.")
    if batch_size < 1 or cache_tiles < 1:
        raise ConfigError(f"batch_size and cache_tiles must be >= 1; got {batch_size}, "
                          f"{cache_tiles}.")
    block_t = tuple(block_shape) if block_shape is not None else default_block_shape(target,
                                                                                     tile_t)
    _check_block_alignment(target, block_t)
    layout = TileLayout.build(spatial, tile_t, over_t, block_t, batch_size)
    job = None if blocks is None else [layout.block_index(b) for b in blocks]
    order_t = tuple(order) if order is not None else choose_order(layout, job, cache_tiles)
    plan = TilePlan(layout, job, order_t, cache_tiles)
    runner = _Runner(model_fn, source, target, layout, plan, out_channels=out_channels,
                     prefetch=prefetch, margin=margin_t, sigma_scale=sigma_scale,
                     preprocess=preprocess)
    for _ in progress(runner.run(), total=len(plan.blocks), desc=progress_desc, logger=log):
        pass
    stats = runner.stats
    stats.tiles_total = int(np.prod(layout.n_tiles))
    stats.recompute_factor = (stats.tiles_computed / stats.tiles_needed
                              if stats.tiles_needed else 0.0)
    stats.order = order_t
    stats.brick = layout.brick
    stats.cache_capacity = plan.capacity
    stats.seconds = time.perf_counter() - t0
    log.info("%s: %d blocks, %d tiles needed, %d computed in %d batches (recompute factor "
             "%.3f, cache high-water %d/%d), %.3g voxels/s", progress_desc, stats.blocks,
             stats.tiles_needed, stats.tiles_computed, stats.batches, stats.recompute_factor,
             stats.max_cached_tiles, plan.capacity, stats.voxels_per_second)
    return stats


class _Runner:
    """Executes a :class:`TilePlan` with real data (reader/writer threads, cache, buffers)."""

    READ_AHEAD = 2  # bricks read ahead of the model
    WRITE_BEHIND = 2  # finished blocks waiting to be written
    MAX_LOOKAHEAD_OPS = 100_000

    def __init__(self, model_fn: ModelFn, source: Any, target: Any, layout: TileLayout,
                 plan: TilePlan, *, out_channels: int, prefetch: bool, margin: tuple[int, ...],
                 sigma_scale: float, preprocess: Callable[[np.ndarray], np.ndarray] | None
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
            local = tuple(slice(w[a].start - lo[a], min(w[a].stop, hi[a]) - lo[a])
                          for a in range(3))
            piece = data[(slice(None),) + local]
            pad = [(0, 0)] + [(0, t - n) for t, n in zip(self.layout.tile, piece.shape[1:],
                                                         strict=True)]
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
            raise ModelError(f"the model returned an array of shape {out.shape} for a batch of "
                             f"shape {batch.shape}; expected {expected}.",
                             fix="the model must keep the spatial size and give out_channels "
                                 "channels.")
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
            """Pull plan ops until READ_AHEAD brick reads are in flight (one op without prefetch)."""
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
                    self.stats.block_buffer_voxels = max(self.stats.block_buffer_voxels,
                                                         acc.size)
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
                        self.stats.max_pending_writes = max(self.stats.max_pending_writes,
                                                            len(writes))
                    yield op[1]
            while writes:
                writes.popleft().result()
        finally:
            for executor in (reader, writer):
                if executor is not None:
                    executor.shutdown(wait=True, cancel_futures=True)
