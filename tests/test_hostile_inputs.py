"""Hostile inputs: values from the sample sheet and the config must never execute as shell.

Every value that can reach a rule's shell line (sheet paths and channel, the sheet's own path,
config paths, the demo output folder) is tried with quotes, ``$()``, backticks, spaces and
newlines. A new rule or column is covered by adding its value here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from fewlabel.config import load_samples
from fewlabel.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]

# Each tries to create a file named PWNED* in the working directory when run by a shell.
HOSTILE_CHANNELS = [
    "0'$(touch PWNED_channel)'",
    "0`touch PWNED_tick`",
    'a"b',
    "x; touch PWNED_semicolon",
    "c'd",
    "$(touch PWNED_plain)",
    "ch\nnewline",
]
HOSTILE_NAME = "img $(touch PWNED_path) `touch PWNED_tick2` 'q' \"d\" #2 x"


def write_sheet(path: Path, rows: list[dict[str, str]]) -> Path:
    header = ["sample", "image", "channel", "voxel_size", "split"]
    lines = ["\t".join(header)] + ["\t".join(r.get(c, "") for c in header) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def assert_nothing_executed(workdir: Path) -> None:
    pwned = sorted(p.name for p in workdir.rglob("PWNED*"))
    assert pwned == [], f"a shell ran a value from the sheet/config: {pwned}"


@pytest.mark.parametrize("channel", HOSTILE_CHANNELS)
def test_unsafe_channel_is_refused_at_parse_time(tmp_path, channel):
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.zeros((2, 8, 8), np.uint16))
    sheet = write_sheet(
        tmp_path / "s.tsv",
        [{"sample": "a", "image": str(image), "channel": channel, "split": "predict"}],
    )
    with pytest.raises(ConfigError) as info:
        load_samples(sheet)
    message = str(info.value)
    assert "row 2" in message and "channel" in message and "sample 'a'" in message
    assert_nothing_executed(tmp_path)


@pytest.mark.parametrize("axes", [*HOSTILE_CHANNELS, "ZZYX", "ZCY", "QZYX", "ZCYX "])
def test_unsafe_or_invalid_axes_are_refused_at_parse_time(tmp_path, axes):
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.zeros((2, 8, 8), np.uint16))
    sheet = tmp_path / "s.tsv"
    sheet.write_text(f"sample\timage\taxes\tsplit\na\t{image}\t{axes}\tpredict\n")
    if axes == "ZCYX ":  # surrounding blanks are stripped like every cell
        assert load_samples(sheet).loc["a", "axes"] == "ZCYX"
        return
    with pytest.raises(ConfigError) as info:
        load_samples(sheet)
    message = str(info.value)
    assert "column 'axes'" in message and "sample 'a'" in message and "ZCYX" in message
    assert_nothing_executed(tmp_path)


@pytest.mark.parametrize("channel", ["0", "12", "DAPI", "GFP-2", "Alexa 488", "ch.1+x"])
def test_safe_channel_names_are_accepted(tmp_path, channel):
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.zeros((2, 8, 8), np.uint16))
    sheet = write_sheet(
        tmp_path / "s.tsv",
        [{"sample": "a", "image": str(image), "channel": channel, "split": "predict"}],
    )
    assert load_samples(sheet).loc["a", "channel"] == channel


def test_injection_through_channel_fails_before_any_job_in_snakemake(tmp_path):
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.zeros((2, 8, 8), np.uint16))
    write_sheet(
        tmp_path / "samples.tsv",
        [{"sample": "a", "image": "img.tif", "channel": HOSTILE_CHANNELS[0], "split": "predict"}],
    )
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({"samples": "samples.tsv", "demo": {"enabled": False}})
    )
    result = subprocess.run(
        [
            *SNAKEMAKE,
            "-d",
            str(tmp_path),
            "--configfile",
            str(tmp_path / "config.yaml"),
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0
    assert "column 'channel'" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()
    assert_nothing_executed(tmp_path)


@pytest.mark.workflow
def test_hostile_paths_and_config_values_never_execute(tmp_path):
    """A real run (ingest, summary, demo data) with every path that reaches a shell line made
    hostile: the image path, the sample sheet's path, the demo output folder."""
    workdir = tmp_path / "work dir"
    data = workdir / f"data {HOSTILE_NAME}"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    tifffile.imwrite(
        data / f"{HOSTILE_NAME}.tif",
        rng.integers(0, 1000, (4, 2, 16, 16), dtype=np.uint16),
        imagej=True,
        metadata={"axes": "ZCYX"},
    )
    sheet = "config/s$(touch PWNED_sheet) 'x' `touch PWNED_sheet2`.tsv"
    write_sheet(
        workdir / sheet,
        [
            {
                "sample": "a",
                "image": f"{data.name}/{HOSTILE_NAME}.tif",
                "channel": "1",
                "voxel_size": "0.5,0.2,0.2",
                "split": "predict",
            }
        ],
    )
    demo_dir = "demo $(touch PWNED_demo) 'q'"
    config = {
        "samples": sheet,
        "demo": {
            "enabled": False,
            "output_dir": demo_dir,
            "params": {"spots_shape": [8, 32, 32], "nuclei_shape": [8, 32, 32], "nuclei_count": 2},
        },
        "ingest": {"chunks": [4, 16, 16]},
        "roi": {"enabled": False},
        "detection": {"enabled": False},  # a predict-only sheet: nothing to train on here
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    base = [
        *SNAKEMAKE,
        "-d",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--cores",
        "2",
    ]
    result = subprocess.run(
        [*base, "results/summary.tsv", f"{demo_dir}/manifest.json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert_nothing_executed(tmp_path)
    summary = (workdir / "results" / "summary.tsv").read_text()
    assert "a" in summary.splitlines()[1]
    assert (workdir / demo_dir / "manifest.json").is_file()
    assert not list(workdir.glob("*\n*")), "the demo folder name was split by the shell"


@pytest.mark.parametrize(
    ("voxel", "expected"),
    [
        ("3e-7,1e-7,1e-7", "if it is in metres, that is 0.3 µm"),
        ("1e-30,1,1", "implausibly small"),
        ("300,100,100", "if it is in nm, that is 0.3 µm"),
        ("1e300,1,1", "implausibly large"),
    ],
)
def test_voxel_sizes_in_the_wrong_unit_fail_at_parse_time(tmp_path, voxel, expected):
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.zeros((2, 8, 8), np.uint16))
    sheet = write_sheet(
        tmp_path / "s.tsv",
        [{"sample": "a", "image": str(image), "voxel_size": voxel, "split": "predict"}],
    )
    with pytest.raises(ConfigError) as info:
        load_samples(sheet)
    message = str(info.value)
    assert expected in message and "row 2" in message and "sample 'a'" in message


def test_sheet_rows_keep_their_line_numbers_and_hash_in_paths(tmp_path):
    folder = tmp_path / "run #3"
    folder.mkdir()
    image = folder / "img#1.tif"
    tifffile.imwrite(image, np.zeros((2, 8, 8), np.uint16))
    text = (
        "# my samples\nsample\timage\tvoxel_size\tsplit\n\n"
        f"a\t{image}\t0.5,0.1,0.1\tpredict\n\n# next\nb\t{image}\tbad\tpredict\n"
    )
    (tmp_path / "s.tsv").write_text(text)
    with pytest.raises(ConfigError, match="row 7 column 'voxel_size'"):
        load_samples(tmp_path / "s.tsv")
    (tmp_path / "s.tsv").write_text(text.replace("bad", "0.5,0.1,0.1"))
    sheet = load_samples(tmp_path / "s.tsv")
    assert sheet.loc["a", "image"] == str(image) and list(sheet.index) == ["a", "b"]


def test_very_long_sample_id_fails_at_parse_time(tmp_path):
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.zeros((2, 8, 8), np.uint16))
    sheet = write_sheet(
        tmp_path / "s.tsv", [{"sample": "a" * 250, "image": str(image), "split": "predict"}]
    )
    with pytest.raises(ConfigError, match="250 characters"):
        load_samples(sheet)


def test_braces_in_a_path_fail_at_parse_time_with_the_fix(tmp_path):
    image = tmp_path / "img {1}.tif"
    tifffile.imwrite(image, np.zeros((2, 8, 8), np.uint16))
    sheet = write_sheet(
        tmp_path / "s.tsv", [{"sample": "a", "image": str(image), "split": "predict"}]
    )
    with pytest.raises(ConfigError, match="braces in input paths as wildcards"):
        load_samples(sheet)


SHELL_RE = re.compile(r'shell:\s*\n((?:\s*"(?:[^"\\]|\\.)*"\s*\n)+)')


MAYBE_EMPTY = [
    ("channel", "channel"),
    ("axes", "axes"),
    ("reference", "ref"),
    ("voxel-size", "voxel"),
]


def test_every_rule_quotes_its_params_and_sheet_paths():
    """Static guard for new rules: a `{params.x}` or sheet-derived input reaches the shell
    only with `:q` (wildcards are safe by their constraints; other inputs are templates)."""
    rules_dir = REPO / "workflow" / "rules"
    checked = 0
    for path in sorted(rules_dir.glob("*.smk")):
        for match in SHELL_RE.finditer(path.read_text()):
            shell = match.group(1)
            for name, quoted in re.findall(r"\{params\.(\w+)(:q)?\}", shell):
                checked += 1
                assert quoted, f"{path.name}: {{params.{name}}} reaches the shell unquoted"
            if path.name == "ingest.smk":  # the rules whose inputs are the sheet's own paths
                for name, quoted in re.findall(r"\{(input[.\w]*)(:q)?\}", shell):
                    assert quoted, f"{path.name}: sheet path {{{name}}} reaches the shell unquoted"
    assert checked > 20
    # values that may be "" use `--opt={params.x:q}`: Snakemake's :q drops an empty string,
    # which would make `--opt {params.x:q}` swallow the next option as its value
    ingest = (rules_dir / "ingest.smk").read_text()
    for option, name in MAYBE_EMPTY:
        assert f"--{option}={{params.{name}:q}}" in ingest, f"--{option} loses an empty value"
    common = (rules_dir / "common.smk").read_text()
    for wildcard in ("sample", "slab", "n_slabs"):
        assert re.search(rf"^\s*{wildcard}=", common, re.MULTILINE), wildcard
