"""What the workflow builds, from the sample sheet and the config: output path templates, which
samples each stage uses, and the file lists of the stages that read many samples.

One home for this knowledge, torch-free: the Snakefile (``workflow/rules/*.smk``) builds its DAG
from it, and the multi-sample stages (training, aggregation, summary, report) rebuild the same
lists from the sheet instead of receiving them on the shell line (a sheet of thousands of rows
keeps every logged command short and readable).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fewlabel.errors import ConfigError

# ---------------------------------------------------------------- output templates (workdir)
IMAGE = "results/ingest/{sample}/image.ome.zarr"
IMAGE_SUMMARY = "results/ingest/{sample}/image.json"
TILE_CHECK = "results/ingest/predict_tiles.json"
LABELS = "results/ingest/{sample}/labels.ome.zarr"
TARGET = "results/ingest/{sample}/target.ome.zarr"
POINTS = "results/ingest/{sample}/points.csv"
ROI_MASK = "results/roi/{sample}/roi.ome.zarr"
ROI_JSON = "results/roi/{sample}/roi.json"
CONFIG_SNAPSHOT = "results/config.yaml"
RUN_SUMMARY = "results/summary.tsv"
PROVENANCE = "results/provenance.json"
REPORT = "results/report/report.html"
# detection (DM-DetNet3D or the LoG baseline)
DENSITY_TARGET = "results/labels/{sample}/density.ome.zarr"
DENSITY_WEIGHT = "results/labels/{sample}/weight.ome.zarr"
DETECTOR = "results/models/detector"
DETECTION_MAP = "results/predict/{sample}/detection.ome.zarr"
DETECTION_SLAB_PLAN = "results/predict/{sample}/slab_plan.json"
DETECTION_SLAB_MARKER = (
    "results/predict/{sample}/detection.ome.zarr.slabs/slab-{slab}-of-{n_slabs}.json"
)
DETECTIONS = "results/points/{sample}/points.csv"
DETECTION_METRICS = "results/evaluate/{sample}/detection.tsv"
DETECTION_MATCHES = "results/evaluate/{sample}/detection_matches.csv"
DETECTION_SUMMARY = "results/evaluate/detection_summary.tsv"
# segmentation (ISL pretraining + mask/distance fine-tuning + h-maxima watershed)
ISL_MODEL = "results/models/isl"
SEGMENTER = "results/models/segmenter"
FLUORESCENCE = "results/predict/{sample}/fluorescence.ome.zarr"
SEGMENTATION_MAP = "results/predict/{sample}/segmentation.ome.zarr"
INSTANCES = "results/instances/{sample}/labels.ome.zarr"
SEGMENTATION_METRICS = "results/evaluate/{sample}/segmentation.tsv"
SEGMENTATION_SUMMARY = "results/evaluate/segmentation_summary.tsv"
# segmentation.method: bfs (BFS-Net from centroid clicks; final labels at INSTANCES)
from fewlabel.plan_bfs import (  # noqa: E402
    BFS_S1,
    BFS_S2,
    BfsPlan,
)
from fewlabel.plan_log import LOG_BASELINE, LOG_BASELINE_SUMMARY, LogPlan  # noqa: E402


def expand(template: str, samples: Iterable[str]) -> list[str]:
    """``template`` filled in for each sample."""
    return [template.format(sample=s) for s in samples]


@dataclass(frozen=True)
class Plan(BfsPlan, LogPlan):
    """The validated sample sheet (indexed by sample id) and the config (defaults filled)."""

    sheet: pd.DataFrame
    config: Mapping[str, Any]

    @classmethod
    def from_sheet(cls, sheet: str | Path) -> Plan:
        """For stages that only select samples (no config-dependent choices)."""
        from fewlabel.config import load_samples

        return cls(load_samples(sheet), {})

    @classmethod
    def from_files(cls, sheet: str | Path, config: str | Path) -> Plan:
        """For stages: re-read the sheet and the run's config snapshot (``CONFIG_SNAPSHOT``)."""
        from fewlabel.config import load_samples

        config_path = Path(config)
        if not config_path.is_file():
            raise ConfigError(
                "config snapshot not found.",
                path=config_path,
                fix="run the workflow (rule record_config writes it).",
            )
        settings = yaml.safe_load(config_path.read_text())
        return cls(load_samples(sheet), settings)

    # ------------------------------------------------------------------ sample selection
    def samples_where(
        self,
        split: str | Iterable[str] | None = None,
        task: str | None = None,
        has: str | None = None,
    ) -> list[str]:
        """Sample ids filtered by split(s), task (``both`` matches either) and a non-empty
        column, in sheet order."""
        rows = self.sheet
        if split is not None:
            rows = rows[rows["split"].isin([split] if isinstance(split, str) else list(split))]
        if task is not None:
            rows = rows[rows["task"].isin([task, "both"])]
        if has is not None:
            rows = rows[rows[has] != ""]
        return list(rows["sample"])

    def has(self, sample: str, column: str) -> bool:
        return bool(self.sheet.loc[sample, column])

    # detection
    def detection_fit_samples(self, split: str | Iterable[str] = ("train", "val")) -> list[str]:
        """Annotated detection samples used for fitting (train/val with points)."""
        return self.samples_where(split=split, task="detect", has="points")

    def detection_predict_samples(self) -> list[str]:
        return self.samples_where(split=["test", "predict"], task="detect")

    def detection_eval_samples(self) -> list[str]:
        return self.samples_where(split="test", task="detect", has="points")

    def detection_enabled(self) -> bool:
        """Detection runs with a model to reuse or annotated train rows to train on."""
        section = self.config["detection"]
        return bool(
            section["enabled"] and (section.get("model") or self.detection_fit_samples("train"))
        )

    def detector_dir(self) -> str:
        """The detector folder used for prediction: the reused one, or the one trained here."""
        return self.config["detection"].get("model") or DETECTOR

    def detector_items(self, split: str) -> list[dict[str, str]]:
        """Training/validation items of ``train_detector``."""
        return [
            {
                "sample": s,
                "image": IMAGE.format(sample=s),
                "target": DENSITY_TARGET.format(sample=s),
                "weight": DENSITY_WEIGHT.format(sample=s),
                "points": POINTS.format(sample=s),
            }
            for s in self.detection_fit_samples(split)
        ]

    def pu_items(self, split: str) -> list[dict[str, str]]:
        """Training items of ``train_pu`` (image, clicked points, ROI mask)."""
        return [
            {
                "sample": s,
                "image": IMAGE.format(sample=s),
                "points": POINTS.format(sample=s),
                "roi": ROI_MASK.format(sample=s),
            }
            for s in self.detection_fit_samples(split)
        ]

    # segmentation
    def isl_samples(self, splits: str | Iterable[str]) -> list[str]:
        """Segmentation samples with a paired fluorescence target."""
        return self.samples_where(split=splits, task="segment", has="target")

    def segmentation_fit_samples(self, split: str | Iterable[str] = ("train", "val")) -> list[str]:
        """Train/val segmentation rows with what the method learns from: instance labels
        (distance) or centroid clicks (bfs)."""
        if self.segmentation_method() == "bfs":
            return self.bfs_fit_samples(split)
        return self.samples_where(split=split, task="segment", has="labels")

    def segmentation_predict_samples(self) -> list[str]:
        return self.samples_where(split=["test", "predict"], task="segment")

    def segmentation_eval_samples(self) -> list[str]:
        return self.samples_where(split="test", task="segment", has="labels")

    def use_isl(self) -> bool:
        """Pretrain with in silico labelling when enabled, paired training data exist and the
        segmenter is trained here (not reused)."""
        section = self.config["segmentation"]
        return bool(
            section["pretrain_isl"]
            and self.segmentation_method() != "bfs"
            and not section.get("model")
            and self.isl_samples("train")
        )

    def segmentation_enabled(self) -> bool:
        """Segmentation runs with a model to reuse or labelled train rows to train on."""
        section = self.config["segmentation"]
        return bool(
            section["enabled"] and (section.get("model") or self.segmentation_fit_samples("train"))
        )

    def segmenter_dir(self) -> str:
        """The segmenter folder used for prediction: the reused one, or the one trained here
        (BFS-Net: its S2)."""
        if self.segmentation_method() == "bfs":
            return BFS_S2
        return self.config["segmentation"].get("model") or SEGMENTER

    def problems(self) -> list[str]:
        """Sheet/config combinations that would silently produce nothing, and reused model
        folders that are not model folders (checked at parse time by the Snakefile)."""
        out = []
        for key, samples, enabled, what in (
            ("detection", self.detection_predict_samples(), self.detection_enabled(), "points"),
            (
                "segmentation",
                self.segmentation_predict_samples(),
                self.segmentation_enabled(),
                "points" if self.segmentation_method() == "bfs" else "labels",
            ),
        ):
            if self.config[key]["enabled"] and samples and not enabled:
                shown = ", ".join(samples[:3]) + (", ..." if len(samples) > 3 else "")
                out.append(
                    f"{len(samples)} sample(s) for {key} ({shown}) but no train rows with "
                    f"{what} and no {key}.model: set {key}.model to a trained model folder "
                    f"(e.g. results/models/{'detector' if key == 'detection' else 'segmenter'}"
                    f" of an earlier run), add train rows with {what}, or set "
                    f"{key}.enabled: false."
                )
            model = self.config[key].get("model")
            if key == "segmentation" and model and self.segmentation_method() == "bfs":
                out.append(
                    "segmentation.model cannot be reused with segmentation.method: bfs (BFS-Net "
                    "trains S1 and S2 from the sheet's clicks): set segmentation.model: null."
                )
                continue
            if model and not (Path(model) / "model.json").is_file():
                out.append(
                    f"{key}.model '{model}' is not a trained model folder (no "
                    "model.json): point it at results/models/<name> of an earlier run."
                )
        init = self.config["detection"].get("train", {}).get("init_from")
        if (
            self.config["detection"]["enabled"]
            and init
            and not (Path(init) / "model.json").is_file()
        ):
            out.append(
                f"detection.train.init_from '{init}' is not a trained model folder (no "
                "model.json): point it at a DM-DetNet3D model folder, or set it to null."
            )
        return out

    # prediction tiles (checked right after ingest, before any training)
    def segmentation_dims(self) -> int:
        """2 or 3: the segmenter's dimensionality (of the reused model folder, if any)."""
        section = self.config["segmentation"]
        model = section.get("model")
        if self.segmentation_method() == "bfs":
            return 3
        if model:
            try:
                arch = yaml.safe_load((Path(model) / "model.json").read_text()) or {}
                return int((arch.get("kwargs") or {}).get("dims", 3))
            except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
                return 3
        return int(section["train"]["dims"])

    def predict_tiles(self, sample: str) -> list[dict[str, Any]]:
        """The prediction tiles ``sample``'s volume must hold: ``{key, tile, pad_to_tile}`` for
        the density detector (``detection.predict``) and the segmenter / ISL network
        (``segmentation.predict``; (1, y, x) for 2D networks) when they predict it."""
        out: list[dict[str, Any]] = []
        detection = self.config["detection"]
        if (
            detection["method"] in ("density", "pu")
            and self.detection_enabled()
            and sample in self.detection_predict_samples()
        ):
            pu = detection["method"] == "pu"
            predict = detection["pu"]["predict"] if pu else detection["predict"]
            out.append(
                {
                    "key": "detection.pu.predict" if pu else "detection.predict",
                    "tile": [int(t) for t in predict["tile"]],
                    "pad_to_tile": bool(predict["pad_to_tile"]),
                }
            )
        segmentation = self.config["segmentation"]
        if self.segmentation_enabled() and sample in self.segmentation_predict_samples():
            predict = segmentation["predict"]
            tile = [int(t) for t in predict["tile"]]
            if self.segmentation_dims() == 2:
                tile[0] = 1
            out.append(
                {
                    "key": "segmentation.predict",
                    "tile": tile,
                    "pad_to_tile": bool(predict["pad_to_tile"]),
                }
            )
        return out

    def tile_check_samples(self) -> list[str]:
        """Samples whose volumes some prediction tiles (``check_predict_tiles`` reads them)."""
        return [s for s in self.sheet.index if self.predict_tiles(s)]

    def check_predict_tiles(self) -> dict[str, dict[str, Any]]:
        """Check every volume to predict against its prediction tiles, before any training
        (:func:`fewlabel.plan_tiles.check_predict_tiles`)."""
        from fewlabel.plan_tiles import check_predict_tiles

        return check_predict_tiles(self)

    def isl_items(self, split: str) -> list[dict[str, str]]:
        return [
            {"sample": s, "image": IMAGE.format(sample=s), "target": TARGET.format(sample=s)}
            for s in self.isl_samples(split)
        ]

    def segmenter_items(self, split: str) -> list[dict[str, str]]:
        return [
            {"sample": s, "image": IMAGE.format(sample=s), "labels": LABELS.format(sample=s)}
            for s in self.segmentation_fit_samples(split)
        ]

    def has_fluorescence_eval(self, sample: str) -> bool:
        """Whether a segmentation sample's ISL prediction is scored against its target."""
        return self.use_isl() and self.has(sample, "target")

    # ------------------------------------------------------------------ run-level files
    def roi_enabled(self) -> bool:
        return bool(self.config["roi"]["enabled"])

    def prediction_roi(self, sample: str) -> str:
        """The ROI mask gating ``sample``'s detection prediction, or '' (``roi.enabled`` and
        ``roi.gate_prediction``; segmentation is not gated)."""
        roi = self.config["roi"]
        if roi["enabled"] and roi.get("gate_prediction", True):
            return ROI_MASK.format(sample=sample)
        return ""

    def trained_models(self) -> dict[str, str]:
        """Role -> folder of every model this run predicts with (trained here or reused); the
        run's provenance records the versions each was trained with."""
        models: dict[str, str] = {}
        if self.detection_enabled():
            models["detector"] = self.detector_dir()
        if self.segmentation_enabled():
            if self.use_isl():
                models["isl"] = ISL_MODEL
            if self.segmentation_method() == "bfs":
                models["bfs_centres"] = BFS_S1
            models["segmenter"] = self.segmenter_dir()
        return models

    def summary_inputs(self) -> dict[str, list[str]]:
        """Files read by ``summarize_run``: per-sample ingest (and ROI) summaries and the
        model folders whose training provenance the run's record includes."""
        samples = list(self.sheet.index)
        return {
            "images": expand(IMAGE_SUMMARY, samples),
            "rois": expand(ROI_JSON, samples) if self.roi_enabled() else [],
            "models": list(self.trained_models().values()),
        }

    def final_outputs(self) -> list[str]:
        """Everything ``snakemake`` builds by default."""
        samples = list(self.sheet.index)
        outputs = expand(IMAGE, samples)
        if self.roi_enabled():
            outputs += expand(ROI_JSON, samples)
        for column, template in (("points", POINTS), ("labels", LABELS), ("target", TARGET)):
            outputs += expand(template, self.samples_where(has=column))
        outputs += [RUN_SUMMARY, PROVENANCE]
        if self.detection_enabled():
            outputs += expand(DETECTIONS, self.detection_predict_samples())
            if self.detection_eval_samples():
                outputs.append(DETECTION_SUMMARY)
            if self.compare_log():
                outputs.append(LOG_BASELINE)
            if self.compare_log_on_test():
                outputs.append(LOG_BASELINE_SUMMARY)
        if self.segmentation_enabled():
            outputs += expand(INSTANCES, self.segmentation_predict_samples())
            if self.segmentation_eval_samples():
                outputs.append(SEGMENTATION_SUMMARY)
        outputs.append(REPORT)
        return outputs

    def report_files(self) -> list[str]:
        """Every file the report reads (:func:`fewlabel.plan_report.report_files`)."""
        from fewlabel.plan_report import report_files

        return report_files(self)
