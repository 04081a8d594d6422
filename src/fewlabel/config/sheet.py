"""Sample-sheet validation (run at Snakemake parse time, before any job).

The hand-written JSON schema ``workflow/schemas/samples.schema.yaml`` defines the columns'
forms; this module adds the checks a schema cannot express (unique and safe sample ids,
existing paths, voxel sizes) and reports every problem with the sheet row and column that
caused it. (The configuration itself is validated by the models of :mod:`fewlabel.config`.)
"""

from __future__ import annotations

import copy
import io
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import yaml

from fewlabel.config.sheet_paths import check_annotated_region, existing_input
from fewlabel.errors import ConfigError

SAMPLE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CHANNEL = re.compile(r"^([0-9]+|[A-Za-z0-9][A-Za-z0-9 _.+-]*)$")
SPLITS = ("train", "val", "test", "predict")
TASKS = ("detect", "segment", "both")
PATH_COLUMNS = ("image", "points", "labels", "target")
SHEET_COLUMNS = (
    "sample",
    "image",
    "channel",
    "axes",
    "voxel_size",
    "split",
    "task",
    *PATH_COLUMNS[1:],
    "annotated_region",
)
AXIS_LETTERS = "TCZYX"
SCHEMA_DIR = Path(__file__).resolve().parents[3] / "workflow" / "schemas"


def load_schema(name: str, schema_dir: Path = SCHEMA_DIR) -> dict[str, Any]:
    """Load ``workflow/schemas/<name>.schema.yaml``."""
    return yaml.safe_load((schema_dir / f"{name}.schema.yaml").read_text())


def _set_defaults(validator_class: Any) -> Any:
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: Any, instance: Any, schema: Any) -> Any:
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if "default" in subschema and key not in instance:
                    instance[key] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultingValidator = _set_defaults(jsonschema.Draft202012Validator)


VOXEL_MIN_UM = 5e-5
"""Smallest plausible voxel side in µm (0.5 Å: below cryo-electron tomography)."""
VOXEL_MAX_UM = 50.0
"""Largest plausible voxel side in µm (coarse light-sheet / whole-organ imaging)."""
MAX_SAMPLE_ID = 100
"""Sample ids name folders and files (plus suffixes such as ``.0-of-4.log``)."""


def check_voxel_size(
    values: tuple[float, ...],
    *,
    where: str,
    sample: str | None = None,
    path: str | Path | None = None,
) -> None:
    """Raise ConfigError unless every voxel side is a plausible size in µm.

    Catches sizes given in metres (3e-7) or nanometres (300) before any µm-derived kernel
    becomes millions of voxels; ``where`` names the sheet row/column or the file metadata.
    """
    for value in values:
        if value < VOXEL_MIN_UM:
            guess = f"; if it is in metres, that is {value * 1e6:g} µm" if value > 1e-12 else ""
            raise ConfigError(
                f"{where}: voxel size {value:g} µm is implausibly small (< {VOXEL_MIN_UM:g} µm)"
                f"{guess}.",
                sample=sample,
                path=path,
                fix="give voxel sizes in µm, z,y,x, e.g. 0.5,0.1,0.1 (the sheet's voxel_size "
                "column overrides the file's metadata).",
            )
        if value > VOXEL_MAX_UM:
            guess = f"; if it is in nm, that is {value / 1000:g} µm" if value < 1e6 else ""
            raise ConfigError(
                f"{where}: voxel size {value:g} µm is implausibly large (> {VOXEL_MAX_UM:g} µm)"
                f"{guess}.",
                sample=sample,
                path=path,
                fix="give voxel sizes in µm, z,y,x, e.g. 0.5,0.1,0.1 (the sheet's voxel_size "
                "column overrides the file's metadata).",
            )


def parse_voxel_size(
    text: Any, *, row: int | None = None, sample: str | None = None
) -> tuple[float, float, float] | None:
    """Parse ``"z,y,x"`` (µm, positive, finite); empty → None (taken from the file later)."""
    if text is None or (isinstance(text, float) and pd.isna(text)) or str(text).strip() == "":
        return None
    parts = [p.strip() for p in str(text).split(",")]
    where = f"row {row}" if row is not None else ""
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(v > 0 and v < float("inf") for v in values):
        raise ConfigError(
            f"sample sheet {where} column 'voxel_size': '{text}' is not three positive numbers.",
            sample=sample,
            fix="write the voxel size as z,y,x in µm, e.g. 0.5,0.1,0.1.",
        )
    check_voxel_size(values, where=f"sample sheet {where} column 'voxel_size'", sample=sample)
    return values  # type: ignore[return-value]


def parse_axes(text: Any, *, row: int | None = None, sample: str | None = None) -> str:
    """Check the sheet's ``axes`` (the image file's axis order, e.g. ``ZCYX``); ``""`` = from
    the file. Letters from ``TCZYX`` (any case), each at most once, Y and X included."""
    value = "" if text is None else str(text).strip().upper()
    if not value:
        return ""
    where = f"sample sheet row {row} column 'axes'" if row is not None else "axes"
    fix = (
        "give the image's axis order, slowest first, with letters T, C, Z, Y, X (each once; "
        "Y and X required), e.g. ZCYX, CZYX, ZYX, YX or TZCYX (a T axis must have size 1)."
    )
    unknown = sorted({a for a in value if a not in AXIS_LETTERS})
    if unknown:
        raise ConfigError(
            f"{where}: {str(text)!r} has letter(s) {unknown} that are not axes.",
            sample=sample,
            fix=fix,
        )
    repeated = sorted({a for a in value if value.count(a) > 1})
    if repeated:
        raise ConfigError(
            f"{where}: {str(text)!r} names axis {', '.join(repeated)} more than once.",
            sample=sample,
            fix=fix,
        )
    if "Y" not in value or "X" not in value:
        raise ConfigError(f"{where}: {str(text)!r} lacks the Y and X axes.", sample=sample, fix=fix)
    return value


def load_samples(
    path: str | Path,
    *,
    base_dir: str | Path = ".",
    generated_dirs: Iterable[str | Path] = (),
    schema: dict[str, Any] | None = None,
    segmentation_method: str = "distance",
) -> pd.DataFrame:
    """Read and validate the sample sheet; return it indexed by sample id.

    Paths are resolved relative to ``base_dir``; paths under one of ``generated_dirs`` (e.g.
    the demo-data folder that a rule creates) need not exist yet. With ``segmentation_method``
    ``bfs`` (BFS-Net), segmentation train/val rows need a ``points`` CSV (their clicks).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            "sample sheet not found.",
            path=path,
            fix="set 'samples' in config/config.yaml to your TSV.",
        )
    # Comment lines (first character '#') and blank lines are skipped here, not by pandas, so
    # that '#' inside a path survives and reported row numbers are the file's line numbers.
    lines = path.read_text().splitlines()
    kept = [
        (n, line)
        for n, line in enumerate(lines, start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not kept:
        raise ConfigError(
            "the sample sheet is empty.",
            path=path,
            fix="add a header line (sample, image, split, ...) and one row per volume.",
        )
    try:
        sheet = pd.read_csv(
            io.StringIO("\n".join(line for _, line in kept)),
            sep="\t",
            dtype=str,
            keep_default_na=False,
        )
    except Exception as exc:
        raise ConfigError(f"cannot parse sample sheet as TSV ({exc}).", path=path) from exc
    line_numbers = [n for n, _ in kept[1:]]
    sheet.columns = [c.strip() for c in sheet.columns]
    unknown = [c for c in sheet.columns if c not in SHEET_COLUMNS]
    if unknown:
        raise ConfigError(
            f"unknown column(s) {unknown}; allowed: {list(SHEET_COLUMNS)}.",
            path=path,
            fix="rename or remove the column (tab-separated!).",
        )
    for column in ("sample", "image", "split"):
        if column not in sheet.columns:
            raise ConfigError(
                f"missing required column '{column}'.",
                path=path,
                fix=f"add a '{column}' column (tab-separated).",
            )
    for column in SHEET_COLUMNS:
        if column not in sheet.columns:
            sheet[column] = ""
    sheet = sheet.map(lambda v: v.strip() if isinstance(v, str) else v)
    schema = schema or load_schema("samples")
    validator = _DefaultingValidator(schema)
    generated = [Path(base_dir, g).resolve() for g in generated_dirs]
    seen: dict[str, int] = {}
    voxel_sizes: list[list[float] | None] = []
    axes: list[str] = []
    for index, record in enumerate(sheet.to_dict("records")):
        row = line_numbers[index]  # the row's line in the file
        sample = record["sample"]
        if len(sample) > MAX_SAMPLE_ID:
            raise ConfigError(
                f"sample sheet row {row}: sample id '{sample[:40]}...' has {len(sample)} "
                f"characters (at most {MAX_SAMPLE_ID}).",
                path=path,
                fix="use a shorter id: it names folders and files of every stage.",
            )
        if not SAMPLE_ID.match(sample or ""):
            raise ConfigError(
                f"sample sheet row {row}: sample id '{sample}' is not allowed (unsafe or empty).",
                path=path,
                fix="use letters, digits, '_', '.', '-' only, starting with a letter "
                "or digit (no spaces, '/', ';' or '..').",
            )
        if sample in seen:
            raise ConfigError(
                f"sample sheet rows {seen[sample]} and {row}: duplicate sample id '{sample}'.",
                sample=sample,
                path=path,
                fix="give every row a unique sample id.",
            )
        seen[sample] = row
        if record["channel"] and not CHANNEL.match(record["channel"]):
            raise ConfigError(
                f"sample sheet row {row} column 'channel': {record['channel']!r} is neither a "
                "channel index nor a safe channel name.",
                sample=sample,
                path=path,
                fix="give the 0-based channel index (e.g. 0) or the name from the file's "
                "metadata using letters, digits, space, '_', '.', '+', '-' only.",
            )
        record["axes"] = parse_axes(record["axes"], row=row, sample=sample)
        axes.append(record["axes"])
        doc = {k: v for k, v in record.items() if v != ""}
        for error in validator.iter_errors(doc):
            key = ".".join(str(p) for p in error.path) or "row"
            raise ConfigError(
                f"sample sheet row {row} column '{key}': {error.message}",
                sample=sample,
                path=path,
                fix=f"split must be one of {list(SPLITS)}, task one of {list(TASKS)}.",
            )
        vs = parse_voxel_size(record["voxel_size"], row=row, sample=sample)
        voxel_sizes.append(list(vs) if vs else None)
        for column in PATH_COLUMNS:
            value = record[column]
            if not value:
                continue
            if "{" in value or "}" in value:
                raise ConfigError(
                    f"sample sheet row {row} column '{column}': path '{value}' contains '{{' or "
                    "'}'; Snakemake reads braces in input paths as wildcards.",
                    sample=sample,
                    path=path,
                    fix="rename the file or folder, or point the sheet at a symbolic "
                    "link without braces.",
                )
            existing_input(
                value,
                where=f"sample sheet row {row} column '{column}'",
                sample=sample,
                path=path,
                base_dir=base_dir,
                generated=generated,
            )
        segments = (record["task"] or "detect") in ("segment", "both")
        if (
            segmentation_method == "bfs"
            and segments
            and record["split"] in ("train", "val")
            and not record["points"]
        ):
            raise ConfigError(
                f"sample sheet row {row}: segmentation.method bfs (BFS-Net) learns from "
                f"centroid clicks, but this {record['split']} row has no 'points' CSV"
                f"{' (its labels are not used for training)' if record['labels'] else ''}.",
                sample=sample,
                path=path,
                fix="add a points CSV (z,y,x voxels, one click per cell) in column 'points', "
                "or give the row split test/predict.",
            )
        if record["split"] in ("train", "val") and not (
            record["points"] or record["labels"] or (record["target"] and segments)
        ):
            if record["target"]:
                raise ConfigError(
                    f"sample sheet row {row}: split '{record['split']}' has only a fluorescence "
                    f"'target', which only segmentation uses (ISL pretraining), but task is "
                    f"'{record['task'] or 'detect'}'.",
                    sample=sample,
                    path=path,
                    fix="set task to 'segment' (or 'both') to pretrain ISL on this row, or add "
                    "a points CSV / label image.",
                )
            raise ConfigError(
                f"sample sheet row {row}: split '{record['split']}' needs "
                "annotations ('points' or 'labels'), or a fluorescence 'target' for ISL "
                "pretraining (task segment/both).",
                sample=sample,
                path=path,
                fix="add a points CSV / label image (or a target with task segment), or use "
                "split test/predict.",
            )
        check_annotated_region(record, row=row, path=path, base_dir=base_dir, generated=generated)
    sheet["task"] = sheet["task"].replace("", "detect")
    sheet["voxel_size"] = voxel_sizes
    sheet["axes"] = axes
    return sheet.set_index("sample", drop=False)
