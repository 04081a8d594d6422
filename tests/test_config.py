"""Config and sample-sheet validation: a bad value fails at parse time naming key or row."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fewlabel.config import FewlabelConfig, load_samples, validate_config
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
    table = load_samples(
        sheet(tmp_path, row(), row("s2", split="train", points="pts.csv")), base_dir=tmp_path
    )
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
    table = load_samples(
        sheet(tmp_path, row(image="demo/x.tif")), base_dir=tmp_path, generated_dirs=["demo"]
    )
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


def test_train_row_with_only_a_target_is_accepted_for_isl(tmp_path, image):
    """ISL pretrains on train/val rows with a fluorescence target and no annotations."""
    target_only = "\t".join(
        ["s1", "img.tif", "", "1,0.5,0.5", "train", "segment", "", "", "img.tif"]
    )
    table = load_samples(sheet(tmp_path, target_only), base_dir=tmp_path)
    assert table.loc["s1", "target"] == "img.tif" and table.loc["s1", "labels"] == ""
    # a target alone is no annotation for detection: the message names the task to set
    detect_only = target_only.replace("\tsegment\t", "\tdetect\t")
    with pytest.raises(ConfigError, match=r"only segmentation uses.*task is 'detect'") as error:
        load_samples(sheet(tmp_path, detect_only), base_dir=tmp_path)
    assert "set task to 'segment'" in str(error.value)


def test_axes_column_is_checked_and_normalised(tmp_path, image):
    path = tmp_path / "samples.tsv"
    path.write_text("sample\timage\taxes\tsplit\ns1\timg.tif\tzcyx\ttest\ns2\timg.tif\t\ttest\n")
    table = load_samples(path, base_dir=tmp_path)
    assert list(table["axes"]) == ["ZCYX", ""]
    for bad, problem in (
        ("ZCYXZ", "more than once"),
        ("ZCY", "lacks the Y and X"),
        ("ZQYX", "'Q'"),
    ):
        path.write_text(f"sample\timage\taxes\tsplit\ns1\timg.tif\t{bad}\ttest\n")
        with pytest.raises(ConfigError, match=rf"row 2 column 'axes'.*{problem}"):
            load_samples(path, base_dir=tmp_path)
    # the hand-written schema says the same to other readers of the sheet
    import jsonschema

    from fewlabel.config.sheet import load_schema

    validator = jsonschema.Draft202012Validator(load_schema("samples"))
    base = {"sample": "s1", "image": "i.tif", "split": "test"}
    assert validator.is_valid({**base, "axes": "TZCYX"})
    for bad in ("ZZYX", "ZCY", "ZQYX", "ZCYX'"):
        assert not validator.is_valid({**base, "axes": bad}), bad


def test_unknown_column(tmp_path, image):
    path = tmp_path / "samples.tsv"
    path.write_text("sample\timage\tsplit\tcolour\ns1\timg.tif\ttest\tred\n")
    with pytest.raises(ConfigError, match=r"unknown column\(s\) \['colour'\]"):
        load_samples(path, base_dir=tmp_path)


def test_shipped_config_is_valid(repo):
    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    model = validate_config(config)
    assert isinstance(model, FewlabelConfig)
    assert config["ingest"]["chunks"] == [16, 128, 128]


def _leaves(value, path=()):
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    else:
        yield path, value


def test_shipped_config_equals_model_defaults(repo):
    """config/config.yaml lists every key with exactly the models' default value."""
    shipped = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    FewlabelConfig.model_validate(shipped)
    defaults = FewlabelConfig().model_dump(mode="json")
    assert dict(_leaves(shipped)) == dict(_leaves(defaults))


def test_committed_schema_is_generated(repo):
    """workflow/schemas/config.schema.yaml is what `python -m fewlabel.config.schema` writes."""
    from fewlabel.config.schema import SCHEMA_PATH, main, schema_text

    assert SCHEMA_PATH == repo / "workflow" / "schemas" / "config.schema.yaml"
    assert SCHEMA_PATH.read_text() == schema_text(), (
        "stale schema: run `python -m fewlabel.config.schema`"
    )
    assert main(["--check"]) == 0


def test_generated_schema_accepts_shipped_config(repo):
    """The generated file is a valid JSON schema that agrees with the models on config.yaml."""
    import jsonschema

    from fewlabel.config.schema import config_schema

    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((repo / "config" / "config.yaml").read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"roi": {"colour": 1}}, schema)


def test_schema_check_detects_stale_file(tmp_path):
    from fewlabel.config.schema import main

    stale = tmp_path / "config.schema.yaml"
    stale.write_text("type: object\n")
    assert main(["--check", "--output", str(stale)]) == 1
    assert main(["--output", str(stale)]) == 0
    assert main(["--check", "--output", str(stale)]) == 0


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"ingest": {"chunks": [16, 128]}}, "ingest.chunks"),
        ({"ingest": {"chunks": [0, 32, 32]}}, "ingest.chunks.0"),
        ({"roi": {"posterior_threshold": 2}}, "roi.posterior_threshold"),
        ({"roi": {"colour": 1}}, "roi.colour"),
        ({"seeed": 1}, "seeed"),
        ({"detection": {"train": {"model": {"channels": 3}}}}, "detection.train.model.channels"),
        ({"detection": {"slabs": 0}}, "detection.slabs"),
        ({"segmentation": {"instances": {"h": "high"}}}, "segmentation.instances.h"),
        (
            {"segmentation": {"train": {"loss": "dice", "loss_params": {"bogus": 1}}}},
            "segmentation.train.loss_params",
        ),
    ],
)
def test_bad_config_names_key(patch, key):
    with pytest.raises(ConfigError, match=rf"config key '{re.escape(key)}'"):
        validate_config(patch)


def test_unknown_key_error_names_path_and_allowed_keys():
    with pytest.raises(ConfigError) as info:
        validate_config({"detection": {"points": {"min_distance": [1, 2, 2]}}})
    message = str(info.value)
    assert "config key 'detection.points': unknown key" in message
    assert "'peaks'" in message  # the allowed keys are listed
    assert "Fix: edit config/config.yaml" in message


def test_cross_field_rules_name_their_section():
    """Values that are only wrong together fail at parse time, naming the section."""
    with pytest.raises(ConfigError, match=r"config key 'roi.clip_percentiles'"):
        validate_config({"roi": {"clip_percentiles": [99.0, 1.0]}})
    with pytest.raises(ConfigError, match=r"config key 'roi': .*together"):
        validate_config({"roi": {"expected_particles": 10}})
    with pytest.raises(ConfigError, match=r"config key 'detection.predict': overlap"):
        validate_config({"detection": {"predict": {"tile": [8, 32, 32], "overlap": [8, 8, 8]}}})


def test_defaults_filled():
    config: dict = {}
    validate_config(config)
    assert config["roi"]["extend_radius_um"] == 1.0
    assert config["demo"]["params"]["spots_snr"] == 4.0
    assert config["detection"]["peaks"]["min_distance"] == [0.3, 0.2, 0.2]
    assert config["detection"]["peaks"]["min_distance_unit"] == "um"
    assert config["segmentation"]["predict"]["tile"] == [16, 96, 96]


def test_partial_sections_keep_their_own_defaults():
    """A partial section keeps the other defaults of *that* section (no second set of
    defaults, e.g. in a schema, can disagree)."""
    model = FewlabelConfig.model_validate(
        {
            "segmentation": {"predict": {"batch_size": 1}},
            "detection": {"train": {"model": {"depth": 3}}},
        }
    )
    assert model.segmentation.predict.tile == (16, 96, 96)
    assert model.detection.predict.tile == (16, 128, 128)
    assert model.detection.train.model.base_channels == 8  # depth alone does not change width
    isl, segmenter = model.segmentation.isl, model.segmentation.train
    assert isl.model.base_channels == segmenter.model.base_channels == 8


def test_config_is_torch_free(repo):
    """The Snakefile imports fewlabel.config at parse time: it must not pull in torch."""
    code = (
        "import sys, fewlabel.config, fewlabel.config.schema; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo / "src")},
    )


def test_loss_parameter_table_matches_the_losses():
    """The torch-free table used to validate loss_params at parse time equals the losses'
    keyword parameters."""
    from fewlabel.config import LOSS_PARAMETERS, MASK_LOSSES
    from fewlabel.segmentation import losses

    assert set(LOSS_PARAMETERS) == set(losses.LOSS_NAMES)
    assert set(MASK_LOSSES) == set(losses.LOSS_NAMES) - {"mask_distance"}
    for name in MASK_LOSSES:
        assert set(LOSS_PARAMETERS[name]) == set(losses._allowed(losses._FUNCS[name])), name


def test_section_paths_name_every_stage_model():
    from fewlabel.config import section_paths

    paths = section_paths()
    assert paths["DetectorTrainConfig"] == "detection.train"
    assert paths["PeaksConfig"] == "detection.peaks"
    assert paths["SegmentationPredictConfig"] == "segmentation.predict"
    assert paths["InstancesConfig"] == "segmentation.instances"


def test_parse_names_the_section_key():
    from fewlabel.config import DetectorTrainConfig, parse

    with pytest.raises(ConfigError, match=r"config key 'detection.train.epochs'"):
        parse(DetectorTrainConfig, {"epochs": 0})
    assert parse(DetectorTrainConfig, {"epochs": 3}).epochs == 3


def test_nested_command_line_overrides_are_typed_like_yaml():
    """`snakemake --config detection='{train: {epochs: 2}}'`: Snakemake parses nested values
    with YAML's BaseLoader (every scalar a string); they must validate like config.yaml."""
    from snakemake.cli import parse_config
    from snakemake.utils import update_config

    config: dict = {}
    update_config(
        config,
        parse_config(
            [
                "detection={train: {epochs: 2, flip_z: true, lr: 0.01}, model: null, slabs: 2}",
                "roi={clahe_kernel_voxels: ~, expected_particles: 5, particle_radius_um: 0.3}",
                "segmentation={train: {dims: 2, loss: focal, loss_params: {gamma: 3}}}",
                "seed=4",
            ]
        ),
    )
    assert config["detection"]["train"]["epochs"] == "2"  # what Snakemake hands over
    model = validate_config(config)
    assert model.detection.train.epochs == 2 and model.detection.train.flip_z is True
    assert model.detection.train.lr == 0.01 and model.detection.slabs == 2
    assert model.detection.model is None and model.roi.clahe_kernel_voxels is None
    assert model.segmentation.train.dims == 2
    assert model.segmentation.train.loss_params == {"gamma": 3}
    assert config["detection"]["train"]["epochs"] == 2 and model.seed == 4
    # strings stay strings where the field is a string; bad values still fail by key
    validate_config(cfg := {"report": {"title": "2024"}})
    assert cfg["report"]["title"] == "2024"
    with pytest.raises(ConfigError, match="config key 'detection.train.epochs'"):
        validate_config(parse_config(["detection={train: {epochs: two}}"]))
