"""Config and sample-sheet validation: a bad value fails at parse time naming key or row."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fewlabel.config import load_samples, validate_config
from fewlabel.errors import ConfigError

HEADER = "sample\timage\tchannel\tvoxel_size\tsplit\ttask\tpoints\tlabels\ttarget\n"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "img.tif"
    path.write_bytes(b"x")
    (tmp_path / "pts.csv").write_text("z,y,x\n1,1,1\n")
    return path


def sheet(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "samples.tsv"
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def row(sample="s1", image="img.tif", voxel="1,0.5,0.5", split="test", points="", channel=""):
    return "\t".join([sample, image, channel, voxel, split, "detect", points, "", ""])


def test_valid_sheet(tmp_path, image):
    table = load_samples(sheet(tmp_path, row(), row("s2", split="train", points="pts.csv")),
                         base_dir=tmp_path)
    assert list(table.index) == ["s1", "s2"]
    assert table.loc["s1", "voxel_size"] == [1.0, 0.5, 0.5]
    assert table.loc["s1", "task"] == "detect"


@pytest.mark.parametrize("bad_id", ["a;rm -rf x", "../x", "", "-x", "a b", "x/y", ".hidden"])
def test_unsafe_sample_ids(tmp_path, image, bad_id):
    with pytest.raises(ConfigError, match=r"row 2: sample id .* is not allowed"):
        load_samples(sheet(tmp_path, row(bad_id)), base_dir=tmp_path)


def test_duplicate_sample_id(tmp_path, image):
    with pytest.raises(ConfigError, match=r"rows 2 and 3: duplicate sample id 's1'"):
        load_samples(sheet(tmp_path, row(), row()), base_dir=tmp_path)


def test_missing_image_file(tmp_path, image):
    with pytest.raises(ConfigError, match=r"sample 's1'.*row 2 column 'image': file 'gone\.tif'"):
        load_samples(sheet(tmp_path, row(image="gone.tif")), base_dir=tmp_path)


def test_generated_paths_may_be_missing(tmp_path, image):
    table = load_samples(sheet(tmp_path, row(image="demo/x.tif")), base_dir=tmp_path,
                         generated_dirs=["demo"])
    assert table.loc["s1", "image"] == "demo/x.tif"


@pytest.mark.parametrize("voxel", ["1,2", "a,b,c", "0,1,1", "-1,1,1", "1;1;1", "inf,1,1"])
def test_bad_voxel_size(tmp_path, image, voxel):
    with pytest.raises(ConfigError, match=r"sample 's1'.*(voxel_size|pattern)"):
        load_samples(sheet(tmp_path, row(voxel=voxel)), base_dir=tmp_path)


def test_bad_split(tmp_path, image):
    with pytest.raises(ConfigError, match=r"row 2 column 'split'"):
        load_samples(sheet(tmp_path, row(split="training")), base_dir=tmp_path)


def test_train_split_needs_annotations(tmp_path, image):
    with pytest.raises(ConfigError, match=r"split 'train' needs annotations"):
        load_samples(sheet(tmp_path, row(split="train")), base_dir=tmp_path)


def test_unknown_column(tmp_path, image):
    path = tmp_path / "samples.tsv"
    path.write_text("sample\timage\tsplit\tcolour\ns1\timg.tif\ttest\tred\n")
    with pytest.raises(ConfigError, match=r"unknown column\(s\) \['colour'\]"):
        load_samples(path, base_dir=tmp_path)


def test_shipped_config_is_valid(repo):
    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    validate_config(config)
    assert config["ingest_volume"]["chunks"] == [16, 128, 128]


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"ingest": {"chunks": [16, 128]}}, "ingest.chunks"),
        ({"roi": {"posterior_threshold": 2}}, "roi.posterior_threshold"),
        ({"roi": {"colour": 1}}, "roi"),
        ({"seeed": 1}, "<top>"),
    ],
)
def test_bad_config_names_key(patch, key):
    with pytest.raises(ConfigError, match=rf"config key '{key}'"):
        validate_config(patch)


def test_defaults_filled():
    config: dict = {}
    validate_config(config)
    assert config["roi"]["extend_radius_um"] == 1.0
    assert config["demo"]["params"]["spots_snr"] == 4.0


def test_shipped_config_builds_every_stage_params(repo):
    from fewlabel.stage_params import check_stage_params

    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    validate_config(config)
    check_stage_params(config)


def test_stage_rejects_value_schema_cannot_judge():
    """Inconsistent values that pass the schema still fail at parse time, naming the key."""
    from fewlabel.stage_params import check_stage_params

    config = {"roi": {"clip_percentiles": [99.0, 1.0]}}
    validate_config(config)
    with pytest.raises(ConfigError, match=r"config key 'roi'"):
        check_stage_params(config)
