"""Parse-time check that every stage accepts its config section (kept apart from
:mod:`fewlabel.config` because it imports the stages, torch included)."""

from __future__ import annotations

import copy
from typing import Any

from fewlabel.errors import ConfigError


def check_stage_params(config: dict[str, Any]) -> None:
    """Build every stage's typed parameters from the config, so that a value the schema
    accepts but a stage would reject (e.g. an inconsistent combination) fails at parse time."""
    from fewlabel.cli.evaluate import DetectionEvalParams
    from fewlabel.segmentation.instances import SplitParams
    from fewlabel.inference.engine import PredictParams
    from fewlabel.roi import RoiParams
    from fewlabel.synth import DemoParams
    from fewlabel.detection.density.training import DetectorTrainParams
    from fewlabel.segmentation.distance.isl import IslParams
    from fewlabel.segmentation.distance.segmenter import SegmenterParams

    checks = [
        ("demo.params", DemoParams, config["demo"]["params"]),
        ("roi", RoiParams, {k: v for k, v in config["roi"].items() if k != "enabled"}),
        ("detection.train", DetectorTrainParams, config["detection"]["train"]),
        ("detection.predict", PredictParams, config["detection"]["predict"]),
        ("evaluation.detection", DetectionEvalParams, config["evaluation"]["detection"]),
        ("segmentation.isl", IslParams, config["segmentation"]["isl"]),
        ("segmentation.train", SegmenterParams, config["segmentation"]["train"]),
        ("segmentation.predict", PredictParams, config["segmentation"]["predict"]),
        ("segmentation.instances", SplitParams, config["segmentation"]["instances"]),
    ]
    for key, params_class, section in checks:
        try:
            params_class.from_dict(copy.deepcopy(section))
        except ConfigError as error:
            raise ConfigError(f"config key '{key}': {error}",
                              fix="edit config/config.yaml (see the comments there).") from None
