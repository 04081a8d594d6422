"""The whole configuration (:class:`FewlabelConfig`) and its parse-time validation."""

from __future__ import annotations

import functools
from collections.abc import MutableMapping
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from fewlabel.config.base import ConfigModel, NonNegInt, _model_in, config_error
from fewlabel.config.detection import DetectionConfig
from fewlabel.config.sections import (
    DemoConfig,
    EvaluationConfig,
    IngestConfig,
    ReportConfig,
    RoiConfig,
)
from fewlabel.config.segmentation import SegmentationConfig


class FewlabelConfig(ConfigModel):
    """fewlabel configuration (config/config.yaml). Every key has a default; unknown keys are
    errors. Threads, memory, GPUs and partitions live in profiles/, never here."""

    samples: str = Field(
        "config/samples.tsv",
        min_length=1,
        description="sample sheet (TSV): one row per volume; see config/README.md for the columns",
    )
    seed: NonNegInt = Field(
        0,
        description="global seed: every random choice (crops, "
        "subsamples, initialisation) derives from it",
    )
    demo: DemoConfig = Field(default_factory=DemoConfig, description="synthetic demo inputs")
    ingest: IngestConfig = Field(default_factory=IngestConfig, description="ingest to OME-Zarr")
    roi: RoiConfig = Field(default_factory=RoiConfig, description="ROI segmentation")
    detection: DetectionConfig = Field(
        default_factory=DetectionConfig, description="particle detection"
    )
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig, description="evaluation against ground truth"
    )
    report: ReportConfig = Field(default_factory=ReportConfig, description="the run report")
    segmentation: SegmentationConfig = Field(
        default_factory=SegmentationConfig, description="few-image instance segmentation"
    )


@functools.cache
def _walk() -> tuple[dict[str, str], dict[str, type[BaseModel]]]:
    paths: dict[str, str] = {}
    models: dict[str, type[BaseModel]] = {FewlabelConfig.__name__: FewlabelConfig}

    def visit(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            sub = _model_in(field.annotation)
            if sub is None:
                continue
            path = f"{prefix}.{name}" if prefix else name
            paths.setdefault(sub.__name__, path)
            models.setdefault(sub.__name__, sub)
            visit(sub, path)

    visit(FewlabelConfig, "")
    return paths, models


def section_paths() -> dict[str, str]:
    """``{model class name: config key path}`` of every section model (first occurrence)."""
    return _walk()[0]


def model_by_name(name: str) -> type[BaseModel] | None:
    """The section model class called ``name`` (None if it is not part of the config)."""
    return _walk()[1].get(name)


def validate_config(config: MutableMapping[str, Any]) -> FewlabelConfig:
    """``FewlabelConfig.model_validate(config)``, then the full configuration (defaults
    included, JSON types) written back into ``config`` so that every rule sees whole sections.

    Raises ConfigError naming the key path of each problem and the fix.
    """
    try:
        model = FewlabelConfig.model_validate(dict(config))
    except ValidationError as exc:
        raise config_error(exc, model=FewlabelConfig, prefix="") from None
    config.update(model.model_dump(mode="json"))
    return model
