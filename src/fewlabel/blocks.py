"""Apply a function over a chunked ZYX array block by block, with a halo, in parallel.

Each output block is chunk-aligned, so parallel writers never share a Zarr chunk. For a
function whose output at a voxel depends only on inputs within ``halo`` voxels, the result
equals applying the function to the whole volume (blocks at the volume border see the same
border the whole volume does, so no padding is invented).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import numpy as np

from fewlabel.logs import progress

log = logging.getLogger(__name__)

Block = tuple[slice, ...]


def block_grid(shape: Sequence[int], block_shape: Sequence[int]) -> list[Block]:
    """All blocks of ``block_shape`` tiling ``shape`` in C order (last blocks may be smaller)."""
    ranges = [
        [slice(start, min(start + step, size)) for start in range(0, size, step)]
        for size, step in zip(shape, block_shape, strict=True)
    ]
    return [tuple(combo) for combo in itertools.product(*ranges)]


def expand_block(block: Block, halo: Sequence[int], shape: Sequence[int]) -> tuple[Block, Block]:
    """Grow ``block`` by ``halo`` (clipped to the volume); return (outer block, inner slice).

    The inner slice indexes the outer block's data to recover exactly ``block``.
    """
    outer: list[slice] = []
    inner: list[slice] = []
    for sl, h, size in zip(block, halo, shape, strict=True):
        start = max(sl.start - h, 0)
        stop = min(sl.stop + h, size)
        outer.append(slice(start, stop))
        inner.append(slice(sl.start - start, sl.stop - start))
    return tuple(outer), tuple(inner)


def _process_block(
    func: Callable[[np.ndarray], np.ndarray],
    source: Any,
    target: Any,
    block: Block,
    halo: Sequence[int],
    lead: int,
) -> None:
    spatial = tuple(source.shape[lead:])
    outer, inner = expand_block(block, halo, spatial)
    lead_all = (slice(None),) * lead
    data = np.asarray(source[lead_all + outer])
    result = np.asarray(func(data))
    extra = result.ndim - len(spatial)  # function may add leading (channel) axes
    target[(slice(None),) * extra + block] = result[(slice(None),) * extra + inner]


def map_blocks(
    func: Callable[[np.ndarray], np.ndarray],
    source: Any,
    target: Any,
    *,
    halo: Sequence[int] | int = 0,
    block_shape: Sequence[int] | None = None,
    blocks: Iterable[Block] | None = None,
    workers: int = 1,
    use_processes: bool = False,
    desc: str = "blocks",
) -> None:
    """Write ``func(source[block ± halo])[inner]`` into ``target[block]`` for every block.

    Parameters
    ----------
    func : maps a ZYX (or leading-axes + ZYX) array to an array of the same spatial shape,
        optionally with extra leading axes (written to all leading indices of ``target``).
    source, target : numpy or Zarr arrays; the last three axes are ZYX and must match.
    halo : voxels of context read on each side of a block (int or per-axis).
    block_shape : spatial block size; defaults to the target's chunk shape so writers own chunks.
    blocks : optional subset of blocks (e.g. one slab job's share).
    workers : number of threads (or processes with ``use_processes``; needs picklable arrays
        and a picklable top-level ``func``).
    """
    spatial = tuple(target.shape[-3:])
    if tuple(source.shape[-3:]) != spatial:
        raise ValueError(f"source ZYX shape {source.shape[-3:]} != target {spatial}")
    lead = len(source.shape) - 3
    halo_t = (halo,) * 3 if isinstance(halo, int) else tuple(int(h) for h in halo)
    if block_shape is None:
        chunks = getattr(target, "chunks", None)
        block_shape = tuple(chunks[-3:]) if chunks is not None else spatial
    todo = list(blocks) if blocks is not None else block_grid(spatial, block_shape)
    if workers <= 1:
        for block in progress(todo, desc=desc, logger=log):
            _process_block(func, source, target, block, halo_t, lead)
        return
    pool: Executor = (ProcessPoolExecutor if use_processes else ThreadPoolExecutor)(workers)
    with pool:
        futures = [pool.submit(_process_block, func, source, target, b, halo_t, lead) for b in todo]
        for future in progress(futures, desc=desc, logger=log):
            future.result()


def reduce_blocks(
    func: Callable[[np.ndarray], Any],
    source: Any,
    *,
    block_shape: Sequence[int],
    workers: int = 1,
) -> list[Any]:
    """Return ``[func(source[block]) for block in block_grid]`` computed in parallel threads."""
    todo = block_grid(tuple(source.shape[-3:]), block_shape)

    def run(block: Block) -> Any:
        return func(np.asarray(source[(slice(None),) * (source.ndim - 3) + block]))

    if workers <= 1:
        return [run(b) for b in todo]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, todo))
