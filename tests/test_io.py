"""Ingest of every supported format round-trips values and voxel size; bad input fails clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

from fewlabel.cli import main
from fewlabel.errors import InputDataError
from fewlabel.io import (
    ingest_volume,
    open_input_volume,
    open_ome_zarr,
    read_points_csv,
    write_ome_zarr,
)

CHUNKS = (4, 16, 16)


def ingest(src: Path, tmp_path: Path, **kwargs) -> tuple[np.ndarray, tuple[float, float, float]]:
    out = tmp_path / "out.ome.zarr"
    kwargs.setdefault("voxel_size", None)
    ingest_volume(src, out, sample="s1", chunks=CHUNKS, **kwargs)
    volume = open_ome_zarr(out)
    return volume.array[:], volume.voxel_size


def no_output_left(tmp_path: Path) -> bool:
    return not any(p.name.startswith(("out", ".out")) for p in tmp_path.iterdir())


def test_plain_tiff_3d_with_sheet_voxel_size(tmp_path, rng):
    data = rng.integers(0, 4000, (9, 33, 21), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", data)
    values, voxel = ingest(tmp_path / "a.tif", tmp_path, voxel_size=(2.0, 0.3, 0.3))
    np.testing.assert_array_equal(values, data)
    assert voxel == (2.0, 0.3, 0.3)
    assert values.dtype == np.uint16


def test_plain_tiff_2d_becomes_z1(tmp_path, rng):
    data = rng.random((40, 30)).astype(np.float32)
    tifffile.imwrite(tmp_path / "a.tif", data)
    values, _ = ingest(tmp_path / "a.tif", tmp_path, voxel_size=(1, 0.5, 0.5))
    assert values.shape == (1, 40, 30)
    np.testing.assert_array_equal(values[0], data)


def test_imagej_hyperstack_channel_and_voxel_size(tmp_path, rng):
    data = rng.integers(0, 255, (5, 3, 20, 24), dtype=np.uint8)  # ZCYX
    tifffile.imwrite(
        tmp_path / "h.tif",
        data,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.25),
        metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "um"},
    )
    values, voxel = ingest(tmp_path / "h.tif", tmp_path, channel="2")
    np.testing.assert_array_equal(values, data[:, 2])
    assert voxel == pytest.approx((1.5, 0.25, 0.25))


def test_ome_tiff_channel_by_name(tmp_path, rng):
    data = rng.random((2, 6, 17, 19)).astype(np.float32)  # CZYX
    tifffile.imwrite(
        tmp_path / "o.ome.tif",
        data,
        ome=True,
        metadata={
            "axes": "CZYX",
            "PhysicalSizeZ": 2.0,
            "PhysicalSizeY": 0.1,
            "PhysicalSizeX": 0.1,
            "Channel": {"Name": ["dapi", "gfp"]},
        },
    )
    values, voxel = ingest(tmp_path / "o.ome.tif", tmp_path, channel="gfp")
    np.testing.assert_array_equal(values, data[1])
    assert voxel == pytest.approx((2.0, 0.1, 0.1))


def test_plain_zarr_array(tmp_path, rng):
    data = rng.random((6, 20, 20)).astype(np.float32)
    zarr.save_array(str(tmp_path / "plain.zarr"), data)
    values, voxel = ingest(tmp_path / "plain.zarr", tmp_path, voxel_size=(1, 1, 1))
    np.testing.assert_array_equal(values, data)


def test_ome_zarr_v05_roundtrip(tmp_path, rng):
    data = rng.integers(0, 60000, (7, 19, 23), dtype=np.uint16)
    write_ome_zarr(tmp_path / "in.ome.zarr", data, (3.0, 0.2, 0.2), chunks=(2, 8, 8))
    values, voxel = ingest(tmp_path / "in.ome.zarr", tmp_path)
    np.testing.assert_array_equal(values, data)
    assert voxel == (3.0, 0.2, 0.2)


def test_ome_zarr_v04_czyx(tmp_path, rng):
    """NGFF 0.4 (zarr v2) image with a channel axis, as written by older tools."""
    data = rng.random((2, 4, 10, 12)).astype(np.float32)
    group = zarr.open_group(str(tmp_path / "v4.ome.zarr"), mode="w", zarr_format=2)
    group.create_array("0", data=data, chunks=(1, 2, 5, 6))
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [
                {"name": "c", "type": "channel"},
                {"name": "z", "type": "space"},
                {"name": "y", "type": "space"},
                {"name": "x", "type": "space"},
            ],
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [{"type": "scale", "scale": [1, 4.0, 0.5, 0.5]}],
                }
            ],
        }
    ]
    values, voxel = ingest(tmp_path / "v4.ome.zarr", tmp_path, channel=1)
    np.testing.assert_array_equal(values, data[1])
    assert voxel == (4.0, 0.5, 0.5)


def test_output_is_ngff_05_with_axes_and_chunks(tmp_path, rng):
    data = rng.random((9, 40, 40)).astype(np.float32)
    tifffile.imwrite(tmp_path / "a.tif", data)
    ingest_volume(
        tmp_path / "a.tif",
        tmp_path / "out.ome.zarr",
        sample="s",
        chunks=CHUNKS,
        voxel_size=(1, 2, 3),
    )
    group = zarr.open_group(str(tmp_path / "out.ome.zarr"), mode="r")
    ome = group.attrs["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 2.0, 3.0]
    assert group["0"].chunks == CHUNKS
    assert group["0"].metadata.zarr_format == 3


def test_ingest_reads_bounded_bands(tmp_path, rng):
    """With a tiny byte budget, reads are chunk-aligned bands, never whole planes."""
    data = rng.random((10, 70, 33)).astype(np.float32)
    data[9, 69, 32] = np.nan
    tifffile.imwrite(tmp_path / "a.tif", data)
    with pytest.raises(InputDataError, match="z=9, y=69, x=32"):
        ingest_volume(
            tmp_path / "a.tif",
            tmp_path / "bad.ome.zarr",
            sample="s",
            chunks=CHUNKS,
            voxel_size=(1, 1, 1),
            max_block_bytes=1,
        )
    data[9, 69, 32] = 0.5
    tifffile.imwrite(tmp_path / "a.tif", data)
    ingest_volume(
        tmp_path / "a.tif",
        tmp_path / "out.ome.zarr",
        sample="s",
        chunks=CHUNKS,
        voxel_size=(1, 1, 1),
        max_block_bytes=1,
    )
    np.testing.assert_array_equal(open_ome_zarr(tmp_path / "out.ome.zarr").array[:], data)


def test_large_tiff_is_streamed_not_loaded(tmp_path, rng):
    """Ingest reads one chunk-deep slab at a time (InputVolume.read calls are bounded)."""
    data = rng.integers(0, 100, (20, 32, 32), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", data)
    volume = open_input_volume(tmp_path / "a.tif")
    reads: list[tuple[int, ...]] = []
    original = volume.read

    def spy(zyx=None):
        block = original(zyx)
        reads.append(block.shape)
        return block

    volume.read = spy  # type: ignore[method-assign]
    import fewlabel.io.ingest as io_module

    real_open = io_module.open_input_volume
    io_module.open_input_volume = lambda *a, **k: volume  # type: ignore[assignment]
    try:
        ingest_volume(
            tmp_path / "a.tif",
            tmp_path / "out.ome.zarr",
            sample="s",
            chunks=CHUNKS,
            voxel_size=(1, 1, 1),
        )
    finally:
        io_module.open_input_volume = real_open
    assert max(shape[0] for shape in reads) <= CHUNKS[0]
    np.testing.assert_array_equal(open_ome_zarr(tmp_path / "out.ome.zarr").array[:], data)


# ----------------------------------------------------------------------------- bad input
def test_truncated_tiff(tmp_path, rng):
    data = rng.integers(0, 4000, (8, 64, 64), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "t.tif", data)
    raw = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputDataError, match=r"sample 's1'.*t\.tif.*(unreadable|truncated)"):
        ingest(tmp_path / "t.tif", tmp_path, voxel_size=(1, 1, 1))
    assert no_output_left(tmp_path)


def test_garbage_file_named_tif(tmp_path):
    (tmp_path / "g.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(InputDataError, match="unreadable"):
        ingest(tmp_path / "g.tif", tmp_path, voxel_size=(1, 1, 1))


def test_4d_without_axes(tmp_path, rng):
    zarr.save_array(str(tmp_path / "q.zarr"), rng.random((2, 3, 8, 8)).astype(np.float32))
    with pytest.raises(InputDataError, match=r"sample 's1'.*4D array.*no axis information"):
        ingest(tmp_path / "q.zarr", tmp_path, voxel_size=(1, 1, 1))
    assert no_output_left(tmp_path)


def test_4d_tiff_without_axes_names_the_sheet_column(tmp_path, rng):
    tifffile.imwrite(tmp_path / "q.tif", rng.integers(0, 99, (4, 2, 8, 8), dtype=np.uint16))
    with pytest.raises(InputDataError, match=r"4D array.*no axis information") as error:
        ingest(tmp_path / "q.tif", tmp_path, voxel_size=(1, 1, 1))
    assert "'axes' column" in str(error.value) and "ZCYX" in str(error.value)


@pytest.mark.parametrize(
    ("axes", "shape", "pick"),
    [
        ("ZCYX", (5, 3, 12, 10), lambda d: d[:, 1]),
        ("czyx", (3, 5, 12, 10), lambda d: d[1]),
        ("TZCYX", (1, 5, 3, 12, 10), lambda d: d[0, :, 1]),
        ("ZYXC", (5, 12, 10, 3), lambda d: d[..., 1]),
    ],
)
def test_sheet_axes_read_a_raw_tiff_stack(tmp_path, rng, axes, shape, pick):
    """The sheet's axes column states the order of a TIFF without axis metadata."""
    data = rng.integers(0, 4000, shape, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "raw.tif", data, photometric="minisblack")
    values, _ = ingest(tmp_path / "raw.tif", tmp_path, voxel_size=(1, 1, 1), axes=axes, channel=1)
    np.testing.assert_array_equal(values, pick(data))


def test_sheet_axes_override_the_file_and_must_match_its_dimensions(tmp_path, rng):
    data = rng.integers(0, 255, (5, 3, 20, 24), dtype=np.uint8)  # really ZCYX
    tifffile.imwrite(tmp_path / "h.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    vol = open_input_volume(tmp_path / "h.tif", sample="s1", axes="CZYX", channel=0)
    assert vol.axes == "CZYX" and vol.shape == (3, 20, 24)  # the sheet wins over the file
    vol.close()
    with pytest.raises(
        InputDataError,
        match=r"sample 's1'.*axes 'ZYX' name 3 axes but the "
        r"image has 4 dimensions.*file's own axes are 'ZCYX'",
    ) as error:
        open_input_volume(tmp_path / "h.tif", sample="s1", axes="ZYX")
    assert "4 letters" in str(error.value)
    with pytest.raises(InputDataError, match=r"axis Z repeated"):
        open_input_volume(tmp_path / "h.tif", sample="s1", axes="ZZYX")
    tifffile.imwrite(  # ImageJ squeezes the T of size 1 away; a declared T is still fine
        tmp_path / "t.tif", data[None], imagej=True, metadata={"axes": "TZCYX"}
    )
    vol = open_input_volume(tmp_path / "t.tif", sample="s1", axes="TZCYX", channel=2)
    np.testing.assert_array_equal(vol.read(), data[:, 2])
    vol.close()
    zarr.save_array(str(tmp_path / "q.zarr"), data)  # a plain Zarr array: no dimension names
    vol = open_input_volume(tmp_path / "q.zarr", sample="s1", axes="ZCYX", channel=2)
    np.testing.assert_array_equal(vol.read(), data[:, 2])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_voxels(tmp_path, rng, bad):
    data = rng.random((10, 16, 16)).astype(np.float32)
    data[7, 3, 4] = bad
    tifffile.imwrite(tmp_path / "n.tif", data)
    with pytest.raises(InputDataError, match=r"sample 's1'.*1 NaN/Inf.*z=7, y=3, x=4"):
        ingest(tmp_path / "n.tif", tmp_path, voxel_size=(1, 1, 1))
    assert no_output_left(tmp_path)


def test_constant_volume(tmp_path):
    tifffile.imwrite(tmp_path / "c.tif", np.full((5, 16, 16), 7, np.uint16))
    with pytest.raises(InputDataError, match=r"sample 's1'.*constant volume"):
        ingest(tmp_path / "c.tif", tmp_path, voxel_size=(1, 1, 1))
    assert no_output_left(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(InputDataError, match=r"sample 's1'.*nope\.tif.*does not exist"):
        ingest(tmp_path / "nope.tif", tmp_path, voxel_size=(1, 1, 1))


def test_missing_voxel_size_everywhere(tmp_path, rng):
    tifffile.imwrite(
        tmp_path / "a.tif", rng.random((3, 8, 8)).astype(np.float32), photometric="minisblack"
    )
    with pytest.raises(InputDataError, match="no voxel size"):
        ingest(tmp_path / "a.tif", tmp_path)


def test_channel_required_and_range(tmp_path, rng):
    data = rng.random((2, 4, 10, 12)).astype(np.float32)
    tifffile.imwrite(tmp_path / "o.ome.tif", data, ome=True, metadata={"axes": "CZYX"})
    with pytest.raises(InputDataError, match="2 channels but the sample sheet names none"):
        ingest(tmp_path / "o.ome.tif", tmp_path, voxel_size=(1, 1, 1))
    with pytest.raises(InputDataError, match="channel 5 is out of range"):
        ingest(tmp_path / "o.ome.tif", tmp_path, voxel_size=(1, 1, 1), channel="5")


def test_cli_reports_error_and_exit_code(tmp_path, capsys):
    code = main(
        [
            "ingest_volume",
            "--sample",
            "s9",
            "--input",
            str(tmp_path / "x.tif"),
            "--output",
            str(tmp_path / "o.ome.zarr"),
            "--chunks",
            "[4,8,8]",
        ]
    )
    assert code == 2
    assert "sample 's9'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- points
def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_points_valid_and_2d_without_z(tmp_path):
    table = read_points_csv(
        write_csv(tmp_path / "p.csv", "z,y,x,extra\n1,2.5,3,a\n0,0,0,b\n"),
        shape=(4, 8, 8),
        sample="s1",
    )
    assert table[["z", "y", "x"]].to_numpy().tolist() == [[1, 2.5, 3], [0, 0, 0]]
    table2d = read_points_csv(write_csv(tmp_path / "q.csv", "y,x\n2,3\n"), shape=(1, 8, 8))
    assert table2d["z"].tolist() == [0.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("z,y,x\n1,2,30\n", r"1 point\(s\) outside the volume.*row 1"),
        ("z,y\n1,2\n", r"lacks column\(s\) \['x'\]"),
        ("z,y,x\n", "holds no points"),
        ("", "points file is empty"),
        ("z,y,x\n1,nan,3\n", "missing or non-numeric"),
        ("z,y,x\n1,abc,3\n", "missing or non-numeric"),
    ],
)
def test_points_bad(tmp_path, text, message):
    path = write_csv(tmp_path / "p.csv", text)
    with pytest.raises(InputDataError, match=r"sample 's1'.*p\.csv.*" + message):
        read_points_csv(path, shape=(4, 8, 8), sample="s1")


def test_ingest_points_cli_writes_normalised_csv(tmp_path, rng):
    write_ome_zarr(tmp_path / "v.ome.zarr", rng.random((4, 8, 8)), (1, 1, 1), chunks=(2, 4, 4))
    write_csv(tmp_path / "p.csv", " Z , Y , X \n1,2,3\n")
    code = main(
        [
            "ingest_points",
            "--sample",
            "s1",
            "--points",
            str(tmp_path / "p.csv"),
            "--volume",
            str(tmp_path / "v.ome.zarr"),
            "--output",
            str(tmp_path / "o.csv"),
        ]
    )
    assert code == 0
    assert pd.read_csv(tmp_path / "o.csv").columns.tolist()[:3] == ["z", "y", "x"]


def test_zyx_view_of_one_channel_reads_lazily_and_keeps_the_chunk_grid(tmp_path):
    from fewlabel.io import ChannelView, create_ome_zarr, zyx_view

    data = np.arange(2 * 4 * 6 * 8, dtype=np.float32).reshape(2, 4, 6, 8)
    arr = create_ome_zarr(tmp_path / "c.ome.zarr", data.shape, np.float32, (1, 2, 3, 4), (1, 1, 1))
    arr[...] = data
    view = zyx_view(arr, 1)
    assert isinstance(view, ChannelView)
    assert (view.shape, view.chunks, view.ndim, view.dtype) == ((4, 6, 8), (2, 3, 4), 3, np.float32)
    part = view[1:3, :, 2]
    assert isinstance(part, np.ndarray) and np.array_equal(part, data[1, 1:3, :, 2])
    assert np.array_equal(view[2], data[1, 2]) and np.array_equal(np.asarray(view), data[1])
    plain = zyx_view(data)  # numpy CZYX: channel 0, no chunk grid
    assert plain.chunks is None and np.array_equal(plain[...], data[0])
    zyx = data[0]
    assert zyx_view(zyx) is zyx  # a ZYX array as it is
    assert zyx_view(data[0, 0]).shape == (1, 6, 8)  # YX -> Z = 1
    with pytest.raises(ValueError, match="channel 2"):
        zyx_view(arr, 2)
    with pytest.raises(ValueError, match="ZYX or CZYX"):
        zyx_view(data[None])
