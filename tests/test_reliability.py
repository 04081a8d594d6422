"""Nothing is lost and nothing half-written survives: temporaries of killed jobs, full disks."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from fewlabel.errors import OutputError
from fewlabel.io.atomic import atomic_path, temporary_siblings


def test_temporaries_of_a_killed_attempt_are_removed_by_the_next(tmp_path):
    final = tmp_path / "out" / "x.ome.zarr"
    final.parent.mkdir()
    stale = final.parent / ".x.ome.zarr.tmp-deadbeef"  # what kill -9 leaves behind
    (stale / "c").mkdir(parents=True)
    (stale / "c" / "0").write_bytes(b"half")
    other = final.parent / ".y.ome.zarr.tmp-deadbeef"  # another output's: not ours to remove
    other.mkdir()
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "zarr.json").write_text("{}")
    assert (final / "zarr.json").is_file()
    assert temporary_siblings(final) == [] and other.exists()


def test_failed_block_leaves_neither_final_nor_temporary(tmp_path):
    final = tmp_path / "x.csv"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert not final.exists() and temporary_siblings(final) == []


def test_full_disk_is_a_clear_error_naming_the_output(tmp_path):
    final = tmp_path / "results" / "predict" / "s1" / "detection.ome.zarr"
    with pytest.raises(OutputError) as info, atomic_path(final) as tmp:
        tmp.mkdir()
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:  # zarr wraps storage errors; the cause chain is searched
            raise RuntimeError("store write failed") from exc
    message = str(info.value)
    assert "no space left" in message and str(final) in message and "df -h" in message
    assert not final.exists() and temporary_siblings(final) == []


def test_stage_errors_name_the_sample(tmp_path):
    from fewlabel.cli import main

    missing = tmp_path / "none.ome.zarr"
    code = main(
        [
            "finalize_prediction",
            "--sample",
            "s1",
            "--output",
            str(missing),
            "--log",
            str(tmp_path / "log.txt"),
        ]
    )
    text = Path(tmp_path / "log.txt").read_text()
    assert code == 2
    assert "sample 's1'" in text and "--forcerun init_prediction_slabs" in text
