"""Typed configuration (torch-free, imported by the Snakefile at parse time).

One frozen pydantic model per config section holds the only defaults and all validation of
that section; the stages validate their ``--params`` with the same models, and the library
functions take them as arguments. ``workflow/schemas/config.schema.yaml`` is generated from
:class:`FewlabelConfig` (:mod:`fewlabel.config.schema`). The sample sheet is checked by
:mod:`fewlabel.config.sheet`.

Layout: :mod:`.base` (base model, z/y/x field types, errors), :mod:`.shared` (predict,
training and network blocks), :mod:`.detection`, :mod:`.segmentation`, :mod:`.sections`
(demo, ingest, roi, evaluation, report), :mod:`.root` (the whole configuration).
"""

from fewlabel.config.base import (
    CONFIG_FIX,
    ConfigModel,
    NonNegFloat,
    NonNegInt,
    Percentiles,
    PosFloat,
    PosInt,
    ZYXFloat,
    ZYXInt,
    ZYXNonNegFloat,
    ZYXNonNegInt,
    config_error,
    parse,
    zyx,
)
from fewlabel.config.bfs import (
    BfsCentresConfig,
    BfsConfig,
    BfsInstancesConfig,
    BfsPrmConfig,
    BfsS1Config,
    BfsS2Config,
)
from fewlabel.config.detection import (
    AWingConfig,
    DensityTargetsConfig,
    DetectionConfig,
    DetectorModelConfig,
    DetectorTrainConfig,
    LogConfig,
    PeaksConfig,
)
from fewlabel.config.root import FewlabelConfig, section_paths, validate_config
from fewlabel.config.sections import (
    DemoConfig,
    DemoParams,
    DetectionEvalConfig,
    EvaluationConfig,
    IngestConfig,
    ReportConfig,
    RoiConfig,
    SegmentationEvalConfig,
)
from fewlabel.config.segmentation import (
    LOSS_PARAMETERS,
    MASK_LOSSES,
    InstancesConfig,
    IslConfig,
    SegmentationConfig,
    SegmentationPredictConfig,
    SegmenterModelConfig,
    SegmenterTrainConfig,
    UNetTrainConfig,
)
from fewlabel.config.shared import (
    IntensityAugmentConfig,
    ModelConfig,
    NormalisationConfig,
    PredictConfig,
    TrainConfig,
    UNetConfig,
)
from fewlabel.config.sheet import (
    CHANNEL,
    PATH_COLUMNS,
    SAMPLE_ID,
    SCHEMA_DIR,
    SHEET_COLUMNS,
    SPLITS,
    TASKS,
    load_samples,
    load_schema,
    parse_voxel_size,
)

__all__ = [
    "CHANNEL",
    "CONFIG_FIX",
    "LOSS_PARAMETERS",
    "MASK_LOSSES",
    "PATH_COLUMNS",
    "SAMPLE_ID",
    "SCHEMA_DIR",
    "SHEET_COLUMNS",
    "SPLITS",
    "TASKS",
    "AWingConfig",
    "BfsCentresConfig",
    "BfsConfig",
    "BfsInstancesConfig",
    "BfsPrmConfig",
    "BfsS1Config",
    "BfsS2Config",
    "ConfigModel",
    "DemoConfig",
    "DemoParams",
    "DensityTargetsConfig",
    "DetectionConfig",
    "DetectionEvalConfig",
    "DetectorModelConfig",
    "DetectorTrainConfig",
    "EvaluationConfig",
    "FewlabelConfig",
    "IngestConfig",
    "InstancesConfig",
    "IntensityAugmentConfig",
    "IslConfig",
    "LogConfig",
    "ModelConfig",
    "NormalisationConfig",
    "NonNegFloat",
    "NonNegInt",
    "PeaksConfig",
    "Percentiles",
    "PosFloat",
    "PosInt",
    "PredictConfig",
    "ReportConfig",
    "RoiConfig",
    "SegmentationConfig",
    "SegmentationEvalConfig",
    "SegmentationPredictConfig",
    "SegmenterModelConfig",
    "SegmenterTrainConfig",
    "TrainConfig",
    "UNetConfig",
    "UNetTrainConfig",
    "ZYXFloat",
    "ZYXInt",
    "ZYXNonNegFloat",
    "ZYXNonNegInt",
    "config_error",
    "load_samples",
    "load_schema",
    "parse",
    "parse_voxel_size",
    "section_paths",
    "validate_config",
    "zyx",
]
