"""Chunked instance splitting of Zarr volumes larger than memory, block by block in threads.

:func:`split_instances_chunked` runs the per-region algorithm of
:mod:`fewlabel.segmentation.instances` (markers, watershed, hole filling, small-object removal)
on halo-expanded blocks and writes the labels block by block.

Passes A and B of :mod:`fewlabel.segmentation.instances` are fused: each block computes its
markers (the costly h-maxima reconstruction) and watershed once, writes its *local* ids and
keeps its markers' first-voxel indices (small); once every block has reported the markers it
owns, a cheap pass maps local ids to global ids (rank of the first-voxel index) in place. The
result is the same as running pass A separately (both compute the markers on the same grown
block), at about half the CPU (issue 13, ``benchmarks/performance/roi_scaling.md``).

Each block computes only the foreground components that reach its inner block, group by group
(:mod:`fewlabel.segmentation.instances_sparse`), and reads its halo through a cache of decoded
chunks (:class:`~fewlabel.io.chunk_cache.CachedChunks`): CPU time and memory per block follow
the block's foreground rather than its halo-grown volume.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from fewlabel.blocks import Block, block_grid, expand_block
from fewlabel.config import zyx
from fewlabel.errors import InputDataError
from fewlabel.io.chunk_cache import CachedChunks, default_cache_bytes
from fewlabel.logs import progress
from fewlabel.segmentation.instances import _check_values, _drop_small
from fewlabel.segmentation.instances_sparse import segment_sparse

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- chunked
def _run(func: Callable[[Block], Any], blocks: list[Block], workers: int, desc: str) -> list[Any]:
    if workers <= 1:
        return [func(b) for b in progress(blocks, desc=desc, logger=log)]
    with ThreadPoolExecutor(workers) as pool:
        return list(progress(pool.map(func, blocks), total=len(blocks), desc=desc, logger=log))


def _in_block(first: np.ndarray, block: Block, global_shape: Sequence[int]) -> np.ndarray:
    z, y, x = np.unravel_index(first, tuple(global_shape))
    return (
        (z >= block[0].start)
        & (z < block[0].stop)
        & (y >= block[1].start)
        & (y < block[1].stop)
        & (x >= block[2].start)
        & (x < block[2].stop)
    )


def _cached(array: Any, halo: Sequence[int]) -> Any:
    """``array`` behind a decoded-chunk cache holding the z-rows of chunks a halo-grown block
    touches (zarr decodes every touched chunk whole: 0.8 vs 0.09 CPU s for a 32 × 256 × 256
    block of both channels grown by the default halo); numpy arrays as they are."""
    chunks = getattr(array, "chunks", None)
    if chunks is None or isinstance(array, np.ndarray):
        return array
    rows = 2 * -(-int(halo[0]) // int(chunks[0])) + 1
    return CachedChunks(array, default_cache_bytes(array, halo_rows=rows - 1))


def split_instances_chunked(
    mask_zarr: Any,
    dist_zarr: Any,
    labels_out_zarr: Any,
    *,
    halo: int | Sequence[int],
    mask_threshold: float = 0.5,
    h: float = 0.1,
    min_size: int = 0,
    fill_holes: bool = False,
    block_shape: Sequence[int] | None = None,
    workers: int = 1,
) -> int:
    """Chunk-safe :func:`split_instances`: blockwise with a halo, globally unique ids.

    ``mask_zarr`` and ``dist_zarr`` are ZYX array-likes (numpy or Zarr, sliceable), and
    ``labels_out_zarr`` a ZYX ``uint32`` array of the same shape (blocks default to its chunks,
    so parallel writers own whole chunks). See the module docstring for the three passes and the
    ownership rule; the result equals the whole-volume result whenever objects are smaller than
    ``halo``. Returns the number of objects N (ids are 1..N).
    """
    shape = tuple(int(s) for s in labels_out_zarr.shape)
    if tuple(mask_zarr.shape) != shape or tuple(dist_zarr.shape) != shape or len(shape) != 3:
        raise InputDataError(
            f"mask {tuple(mask_zarr.shape)}, distance "
            f"{tuple(dist_zarr.shape)} and output {shape} must be ZYX arrays "
            "of the same shape."
        )
    halo3 = zyx(halo, "halo")
    _check_values(mask_threshold, h, min_size, halo3)
    if block_shape is None:
        chunks = getattr(labels_out_zarr, "chunks", None)
        block_shape = tuple(chunks) if chunks is not None else shape
    blocks = block_grid(shape, block_shape)
    mask_zarr, dist_zarr = _cached(mask_zarr, halo3), _cached(dist_zarr, halo3)

    def read(block: Block) -> tuple[Block, Block, np.ndarray, np.ndarray]:
        outer, inner = expand_block(block, halo3, shape)
        return outer, inner, np.asarray(mask_zarr[outer]), np.asarray(dist_zarr[outer])

    # pass B (markers + watershed, once per block): write the block's *local* ids and keep
    # its markers' first-voxel indices; the markers a block owns are exactly those pass A of
    # the module docstring would find, since both compute them on the same grown block
    local_first: dict[int, np.ndarray] = {}

    def pass_b(item: tuple[int, Block]) -> np.ndarray:
        index, block = item
        outer, inner, mask, dist = read(block)
        labels, first = segment_sparse(
            mask,
            dist,
            mask_threshold=mask_threshold,
            h=h,
            fill_holes=fill_holes,
            origin=[s.start for s in outer],
            global_shape=shape,
            inner=inner,
        )
        labels_out_zarr[block] = labels[inner].astype(np.uint32, copy=False)
        local_first[index] = first
        return first[_in_block(first, block, shape)]

    owned = _run(pass_b, list(enumerate(blocks)), workers, "split_instances watershed")
    all_first = np.sort(np.concatenate([np.zeros(0, np.int64), *owned]))
    n_objects = len(all_first)
    sizes = np.zeros(n_objects + 1, dtype=np.int64)
    lock = threading.Lock()
    orphans = [0, 0]  # marker views not found, foreground voxels left unlabelled

    def pass_global(item: tuple[int, Block]) -> None:  # local ids -> global ids (cheap)
        index, block = item
        first = local_first[index]
        lookup = np.zeros(len(first) + 1, dtype=np.uint32)
        if len(first) and n_objects:
            pos = np.clip(np.searchsorted(all_first, first), 0, n_objects - 1)
            found = all_first[pos] == first
            lookup[1:][found] = (pos[found] + 1).astype(np.uint32)
            missing = int((~found).sum())
        else:
            missing = len(first)
        core = lookup[np.asarray(labels_out_zarr[block])]
        labels_out_zarr[block] = core
        ids, counts = np.unique(core, return_counts=True)
        lost = int(np.count_nonzero((core == 0) & (np.asarray(mask_zarr[block]) > mask_threshold)))
        with lock:
            sizes[ids] += counts
            orphans[0] += missing
            orphans[1] += lost

    _run(pass_global, list(enumerate(blocks)), workers, "split_instances global ids")
    if orphans[1]:
        log.warning(
            "%d foreground voxels could not be given a global id (%d marker views cut "
            "by a halo border): objects are larger than the halo %s; increase 'halo'.",
            orphans[1],
            orphans[0],
            halo3,
        )
    if min_size > 0 and n_objects:
        lookup = _drop_small(sizes, min_size)

        def pass_c(block: Block) -> None:
            labels_out_zarr[block] = lookup[np.asarray(labels_out_zarr[block])]

        _run(pass_c, blocks, workers, "split_instances min_size")
        n_objects = int(lookup.max())
    log.info(
        "split_instances: %d objects in a volume of shape %s (%d blocks, halo %s)",
        n_objects,
        shape,
        len(blocks),
        halo3,
    )
    return n_objects
