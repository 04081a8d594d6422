"""Bad inputs found by the reliability review: each is lossless, bounded or refused clearly.

64-bit label ids, huge or truncated TIFFs, multiscale OME-Zarr level order, duplicate points,
provenance checksums of many files, labels/target of another shape than the image.
"""

from __future__ import annotations

import logging
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from fewlabel.errors import InputDataError
from fewlabel.io import (
    ingest_volume,
    open_input_volume,
    open_ome_zarr,
    read_points_csv,
    write_ome_zarr,
)

CHUNKS = (2, 8, 8)


def ingest(src: Path, dst: Path, **kwargs) -> dict:
    kwargs.setdefault("voxel_size", (1.0, 1.0, 1.0))
    return ingest_volume(src, dst, sample="s1", chunks=CHUNKS, **kwargs)


# ------------------------------------------------------------------ 1. 64-bit label ids
def test_uint64_label_ids_beyond_uint32_are_relabelled_losslessly(tmp_path, caplog):
    labels = np.zeros((3, 12, 10), np.uint64)
    labels[0, :4, :4] = 2**32  # a plain cast would make this background (0)
    labels[1, 5:9, 2:6] = 2**32 + 5  # ... and this id 5
    labels[2, 1:3, 7:9] = 7
    labels[2, 8:10, 0:2] = 5  # must stay distinct from 2**32 + 5
    tifffile.imwrite(tmp_path / "l.tif", labels, photometric="minisblack")
    with caplog.at_level(logging.WARNING, logger="fewlabel.io.ingest"):
        summary = ingest(
            tmp_path / "l.tif", tmp_path / "l.ome.zarr", kind="labels", max_block_bytes=1
        )  # many bands: the id set must span all of them
    out = open_ome_zarr(tmp_path / "l.ome.zarr").array[:]
    assert out.dtype == np.uint32
    # lossless: a one-to-one map of ids, background kept, order of ids kept
    pairs = {(int(a), int(b)) for a, b in zip(labels.ravel(), out.ravel(), strict=True)}
    assert pairs == {(0, 0), (5, 1), (7, 2), (2**32, 3), (2**32 + 5, 4)}
    assert summary["relabelled"]["objects"] == 4
    assert summary["relabelled"]["source_id_max"] == 2**32 + 5
    message = caplog.text
    assert "s1" in message and "l.tif" in message and "relabelled 4 objects" in message


def test_uint64_label_ids_that_fit_are_copied_unchanged(tmp_path):
    labels = np.zeros((2, 8, 8), np.uint64)
    labels[0, 1:3, 1:3] = 2**32 - 1
    labels[1, 4:6, 4:6] = 9
    tifffile.imwrite(tmp_path / "l.tif", labels, photometric="minisblack")
    summary = ingest(tmp_path / "l.tif", tmp_path / "l.ome.zarr", kind="labels")
    out = open_ome_zarr(tmp_path / "l.ome.zarr").array[:]
    np.testing.assert_array_equal(out, labels.astype(np.uint32))
    assert "relabelled" not in summary


def test_int64_negative_label_id_is_an_error(tmp_path):
    labels = np.zeros((2, 8, 8), np.int64)
    labels[1, 2, 3] = -1
    labels[0, 1, 1] = 3
    tifffile.imwrite(tmp_path / "neg.tif", labels)
    with pytest.raises(
        InputDataError,
        match=r"sample 's1'.*neg\.tif.*negative label ids "
        r"\(ids range -1\.\.3\).*Fix:",
    ):
        ingest(tmp_path / "neg.tif", tmp_path / "l.ome.zarr", kind="labels")
    assert not (tmp_path / "l.ome.zarr").exists()


def test_int32_negative_label_id_names_the_value(tmp_path):
    labels = np.zeros((2, 8, 8), np.int32)
    labels[1, 2, 3] = -4
    tifffile.imwrite(tmp_path / "neg.tif", labels)
    with pytest.raises(InputDataError, match=r"neg\.tif.*negative label ids \(lowest -4"):
        ingest(tmp_path / "neg.tif", tmp_path / "l.ome.zarr", kind="labels")


# ------------------------------------------------------------------ 2. bounded open probe
@pytest.mark.parametrize(
    "options",
    [{}, {"compression": "zlib"}, {"tile": (32, 32)}],
    ids=["uncompressed", "zlib", "tiled"],
)
def test_tiff_whose_last_plane_is_cut_fails_at_open(tmp_path, rng, options):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(
        path,
        rng.integers(0, 4000, (3, 64, 64), dtype=np.uint16),
        photometric="minisblack",
        **options,
    )
    with tifffile.TiffFile(path) as tf:  # cut inside the last plane's data
        last = tf.series[0].pages[-1]
        end = max(o + n for o, n in zip(last.dataoffsets, last.databytecounts, strict=True))
    raw = path.read_bytes()
    path.write_bytes(raw[: end - 10])
    with pytest.raises(InputDataError, match=r"sample 's1'.*cut\.tif.*truncated.*Fix:"):
        open_input_volume(path, sample="s1")


def test_opening_a_large_tiff_does_not_read_its_plane(tmp_path):
    path = tmp_path / "large.tif"
    plane = np.zeros((1, 4000, 4000), np.uint16)  # 32 MB in one strip
    plane[0, -1, -1] = 7
    tifffile.imwrite(path, plane)
    del plane
    tracemalloc.start()
    try:
        volume = open_input_volume(path, sample="s1")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    try:
        assert volume.shape == (1, 4000, 4000)
        assert volume.read((slice(0, 1), slice(3999, 4000), slice(3990, 4000)))[0, 0, -1] == 7
    finally:
        volume.close()
    assert peak < 4 * 2**20, f"open allocated {peak / 2**20:.1f} MiB for a 32 MB plane"


def test_header_claiming_a_huge_plane_fails_without_allocating_it(tmp_path):
    path = tmp_path / "liar.tif"
    tifffile.imwrite(path, np.ones((1, 100, 100), np.uint8))
    with tifffile.TiffFile(path, mode="r+b") as tf:  # 100000 x 100000 = 9.3 GiB claimed
        tags = tf.pages[0].tags
        for name in ("ImageWidth", "ImageLength", "RowsPerStrip"):
            tags[name].overwrite(100000)
        tags["StripByteCounts"].overwrite(4_000_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(
            InputDataError,
            match=r"liar\.tif.*\(1, 100000, 100000\).*only "
            r"\d+ bytes",
        ):
            open_input_volume(path, sample="s1")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20


# ------------------------------------------------------------------ 3. multiscale level order
def write_pyramid(path: Path, full: np.ndarray, order: list[int], scales: list[float]) -> None:
    """An NGFF 0.5 image with levels 0 (full), 1 (/2), 2 (/4), listed in ``order``."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    datasets = []
    for level in order:
        data = full[:, :: 2**level, :: 2**level]
        group.create_array(str(level), data=data, chunks=(2, 8, 8))
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, scales[level], scales[level]]}
                ],
            }
        )
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {"axes": [{"name": a, "type": "space"} for a in "zyx"], "datasets": datasets}
        ],
    }


@pytest.mark.parametrize(
    "order", [[0, 1, 2], [2, 1, 0], [1, 2, 0]], ids=["high-to-low", "low-to-high", "mixed"]
)
def test_multiscale_input_gives_the_full_resolution_level_in_any_order(tmp_path, rng, order):
    full = rng.integers(1, 1000, (3, 32, 32), dtype=np.uint16)
    write_pyramid(tmp_path / "p.ome.zarr", full, order, scales=[0.5, 1.0, 2.0])
    volume = open_input_volume(tmp_path / "p.ome.zarr", sample="s1")
    try:
        assert volume.shape == (3, 32, 32)
        assert volume.voxel_size == (1.0, 0.5, 0.5)
    finally:
        volume.close()
    ingest(tmp_path / "p.ome.zarr", tmp_path / "out.ome.zarr", voxel_size=None)
    np.testing.assert_array_equal(open_ome_zarr(tmp_path / "out.ome.zarr").array[:], full)
    opened = open_ome_zarr(tmp_path / "p.ome.zarr")
    assert opened.shape == (3, 32, 32) and opened.voxel_size == (1.0, 0.5, 0.5)


def test_multiscale_with_contradictory_scales_is_refused(tmp_path, rng):
    full = rng.integers(1, 1000, (3, 32, 32), dtype=np.uint16)
    # the largest array claims the coarsest voxel size: which one is full resolution?
    write_pyramid(tmp_path / "p.ome.zarr", full, [2, 1, 0], scales=[2.0, 1.0, 0.5])
    with pytest.raises(
        InputDataError,
        match=r"sample 's1'.*p\.ome\.zarr.*contradictory "
        r"multiscales.*Fix:",
    ):
        open_input_volume(tmp_path / "p.ome.zarr", sample="s1")


# ------------------------------------------------------------------ 4. duplicate points
def test_exact_duplicate_points_are_dropped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "pts.csv"
    path.write_text("z,y,x\n1,2,3\n4,5,6\n1,2,3\n1.0,2.0,3.0\n1,2,3.4\n")
    with caplog.at_level(logging.WARNING, logger="fewlabel.io.points"):
        table = read_points_csv(path, shape=(8, 8, 8), sample="s1")
    assert table[["z", "y", "x"]].to_numpy().tolist() == [[1, 2, 3], [4, 5, 6], [1, 2, 3.4]]
    assert list(table.index) == [0, 1, 2]
    message = caplog.text
    assert "s1" in message and "pts.csv" in message and "dropped 2 exact duplicate" in message
    assert "data row 3" in message


def test_near_duplicate_points_are_kept_without_warning(tmp_path, caplog):
    path = tmp_path / "pts.csv"
    path.write_text("z,y,x\n1,2,3\n1,2,3.001\n1.5,2,3\n")
    with caplog.at_level(logging.WARNING, logger="fewlabel.io.points"):
        table = read_points_csv(path, sample="s1")
    assert len(table) == 3 and "duplicate" not in caplog.text


def test_duplicate_predictions_still_count_as_false_positives(tmp_path):
    from fewlabel.metrics.detection import evaluate_sample

    (tmp_path / "gt.csv").write_text("z,y,x\n1,2,3\n")
    (tmp_path / "pred.csv").write_text("z,y,x\n1,2,3\n1,2,3\n")
    row = evaluate_sample(tmp_path / "gt.csv", tmp_path / "pred.csv", sample="s1", gate=2.0)
    assert (row["n_pred"], row["tp"], row["fp"]) == (2, 1, 1)


# ------------------------------------------------------------------ 6. labels/target shape
@pytest.mark.parametrize("kind", ["labels", "target"])
def test_labels_or_target_of_another_shape_fail_at_ingest(tmp_path, kind):
    write_ome_zarr(
        tmp_path / "image.ome.zarr", np.ones((4, 16, 16), np.uint16), (1, 1, 1), chunks=CHUNKS
    )
    tifffile.imwrite(tmp_path / "gt.tif", np.ones((4, 16, 15), np.uint16), photometric="minisblack")
    with pytest.raises(InputDataError) as info:
        ingest(
            tmp_path / "gt.tif",
            tmp_path / "gt.ome.zarr",
            kind=kind,
            reference=tmp_path / "image.ome.zarr",
        )
    message = str(info.value)
    assert "sample 's1'" in message and "gt.tif" in message and "image.ome.zarr" in message
    assert "(4, 16, 15)" in message and "(4, 16, 16)" in message and "Fix:" in message
    assert not (tmp_path / "gt.ome.zarr").exists()


def test_labels_of_the_image_shape_pass_the_reference_check(tmp_path):
    write_ome_zarr(
        tmp_path / "image.ome.zarr", np.ones((4, 16, 16), np.uint16), (1, 1, 1), chunks=CHUNKS
    )
    tifffile.imwrite(tmp_path / "gt.tif", np.ones((4, 16, 16), np.uint16), photometric="minisblack")
    summary = ingest(
        tmp_path / "gt.tif",
        tmp_path / "gt.ome.zarr",
        kind="labels",
        reference=tmp_path / "image.ome.zarr",
    )
    assert summary["shape"] == [4, 16, 16]


# ------------------------------------------------------------------ 5. provenance checksums
def old_checksum(path: Path) -> str:
    """The digest recorded before (sorted rglob order), to keep old records comparable."""
    import hashlib

    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def test_provenance_hashes_every_file_of_a_large_folder(tmp_path):
    from fewlabel.runtime import provenance

    folder = tmp_path / "many.zarr"
    (folder / "c").mkdir(parents=True)
    n = 10_005  # more than the old silent cap of 10 000 files
    for i in range(n):
        (folder / "c" / f"{i:05d}").write_bytes(b"x")
    first = provenance({}, [folder])
    (folder / "c" / f"{n - 1:05d}").write_bytes(b"y")  # beyond the old cap
    second = provenance({}, [folder])
    key = str(folder)
    assert first["inputs"][key] != second["inputs"][key]
    assert first["input_details"][key] == {
        "files": n,
        "bytes": n,
        "files_total": n,
        "truncated": False,
    }


def test_capped_checksum_says_it_is_truncated(tmp_path, caplog):
    from fewlabel.runtime import checksum, checksum_record

    folder = tmp_path / "d"
    (folder / "a").mkdir(parents=True)
    for name in ("a/b", "a.txt", "z", "a/c/d"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(name.encode())
    assert checksum(folder) == old_checksum(folder)  # same digest as before when complete
    with caplog.at_level(logging.WARNING, logger="fewlabel.runtime"):
        record = checksum_record(folder, max_files=2)
    assert record["truncated"] is True
    assert (record["files"], record["files_total"]) == (2, 4)
    assert "first 2 of its 4 files" in caplog.text and str(folder) in caplog.text


def test_ingest_cli_passes_reference_and_empty_means_none(tmp_path, capsys):
    from fewlabel.cli import main

    write_ome_zarr(
        tmp_path / "image.ome.zarr", np.ones((4, 16, 16), np.uint16), (1, 1, 1), chunks=CHUNKS
    )
    tifffile.imwrite(tmp_path / "gt.tif", np.ones((4, 16, 15), np.uint16), photometric="minisblack")
    args = [
        "ingest_volume",
        "--sample",
        "s1",
        "--input",
        str(tmp_path / "gt.tif"),
        "--kind",
        "labels",
        "--voxel-size=[1,1,1]",
        "--chunks",
        "[2,8,8]",
    ]
    code = main(
        [
            *args,
            "--output",
            str(tmp_path / "a.ome.zarr"),
            f"--reference={tmp_path / 'image.ome.zarr'}",
        ]
    )
    assert code == 2
    assert "(4, 16, 15)" in capsys.readouterr().err
    assert main([*args, "--output", str(tmp_path / "b.ome.zarr"), "--reference="]) == 0
