"""Block processing with a halo equals applying the function to the whole volume."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from fewlabel.blocks import block_grid, expand_block, map_blocks, reduce_blocks
from fewlabel.io import create_ome_zarr, open_ome_zarr


def gaussian(block: np.ndarray) -> np.ndarray:
    return ndi.gaussian_filter(block, 1.2, truncate=2.5)


def closing(block: np.ndarray) -> np.ndarray:
    return ndi.grey_closing(block, size=(3, 5, 5))


def test_block_grid_covers_volume_exactly_once():
    shape = (7, 20, 13)
    hits = np.zeros(shape, int)
    for block in block_grid(shape, (3, 8, 5)):
        hits[block] += 1
    assert (hits == 1).all()


def test_expand_block_inner_recovers_block():
    shape = (10, 10, 10)
    block = (slice(0, 4), slice(4, 8), slice(8, 10))
    outer, inner = expand_block(block, (2, 2, 2), shape)
    assert outer == (slice(0, 6), slice(2, 10), slice(6, 10))
    data = np.arange(1000).reshape(shape)
    np.testing.assert_array_equal(data[outer][inner], data[block])


@pytest.mark.parametrize(
    ("func", "chunks", "halo", "workers"),
    [
        (gaussian, (8, 16, 16), 3, 1),
        (gaussian, (5, 7, 11), (3, 3, 3), 2),
        (closing, (4, 9, 6), (2, 4, 4), 2),  # closing = dilation+erosion: radius 2x
        (closing, (37, 45, 51), 0, 1),  # one block = whole volume
    ],
)
def test_chunked_equals_whole_volume(tmp_path, rng, func, chunks, halo, workers):
    source = rng.random((37, 45, 51)).astype(np.float32)  # not a multiple of any chunk
    target = create_ome_zarr(tmp_path / "out.ome.zarr", source.shape, "float32", chunks, (1, 1, 1))
    map_blocks(func, source, target, halo=halo, workers=workers)
    np.testing.assert_array_equal(open_ome_zarr(tmp_path / "out.ome.zarr").array[:], func(source))


def test_too_small_halo_differs(tmp_path, rng):
    """The property is not vacuous: without a halo, a spatial filter differs at block borders."""
    source = rng.random((20, 30, 30)).astype(np.float32)
    target = np.zeros_like(source)
    map_blocks(gaussian, source, target, halo=0, block_shape=(10, 10, 10))
    assert not np.allclose(target, gaussian(source))


def test_zarr_source_and_processes(tmp_path, rng):
    data = rng.random((12, 40, 40)).astype(np.float32)
    src = create_ome_zarr(tmp_path / "in.ome.zarr", data.shape, "float32", (4, 16, 16), (1, 1, 1))
    src[...] = data
    dst = create_ome_zarr(tmp_path / "o.ome.zarr", data.shape, "float32", (4, 16, 16), (1, 1, 1))
    map_blocks(gaussian, src, dst, halo=3, workers=2, use_processes=True)
    np.testing.assert_array_equal(dst[:], gaussian(data))


def test_function_adding_channel_axis(rng):
    data = rng.random((9, 17, 17)).astype(np.float32)
    target = np.zeros((2, *data.shape), np.float32)
    map_blocks(lambda b: np.stack([gaussian(b), -b]), data, target, halo=3, block_shape=(4, 8, 8))
    np.testing.assert_array_equal(target[0], gaussian(data))
    np.testing.assert_array_equal(target[1], -data)


def test_reduce_blocks_sum(rng):
    data = rng.random((9, 17, 17))
    parts = reduce_blocks(np.sum, data, block_shape=(4, 8, 8), workers=2)
    assert np.isclose(sum(parts), data.sum())
