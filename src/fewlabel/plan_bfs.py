"""The BFS-Net part of :class:`fewlabel.plan.Plan` (``segmentation.method: bfs``): output
templates and the samples / training items of its stages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

IMAGE = "results/ingest/{sample}/image.ome.zarr"  # = fewlabel.plan.IMAGE
BFS_CENTRES = "results/labels/{sample}/bfs_centres.ome.zarr"
BFS_S1 = "results/models/bfs_centres"
BFS_LIKELIHOOD = "results/predict/{sample}/bfs_centres.ome.zarr"
BFS_PSEUDO = "results/labels/{sample}/bfs_pseudo.ome.zarr"
BFS_RESPONSE = "results/labels/{sample}/bfs_response.ome.zarr"
BFS_S2 = "results/models/bfs_segmenter"
BFS_MASK = "results/predict/{sample}/bfs_mask.ome.zarr"
BFS_PEAKS = "results/instances/{sample}/bfs_centres.csv"


class BfsPlan:
    """Mixin of :class:`fewlabel.plan.Plan` for BFS-Net."""

    sheet: pd.DataFrame
    config: Mapping[str, Any]

    if TYPE_CHECKING:  # provided by Plan

        def samples_where(
            self, split: Any = None, task: Any = None, has: Any = None
        ) -> list[str]: ...

        def segmentation_predict_samples(self) -> list[str]: ...

    def segmentation_method(self) -> str:
        """``segmentation.method`` (``distance`` when the plan has no config)."""
        return str((self.config.get("segmentation") or {}).get("method", "distance"))

    def bfs_fit_samples(self, split: str | Iterable[str] = ("train", "val")) -> list[str]:
        """BFS-Net training rows: segmentation train/val rows with a points CSV."""
        return self.samples_where(split=split, task="segment", has="points")

    def bfs_s1_samples(self) -> list[str]:
        """Volumes S1 predicts: its training rows (pseudo-labels) and the rows to segment."""
        wanted = set(self.bfs_fit_samples()) | set(self.segmentation_predict_samples())
        return [s for s in self.sheet.index if s in wanted]

    def bfs_items(self, split: str) -> list[dict[str, str]]:
        """S1 training items ``{sample, image, centres}`` (``train_bfs_centres``)."""
        return [
            {"sample": s, "image": IMAGE.format(sample=s), "centres": BFS_CENTRES.format(sample=s)}
            for s in self.bfs_fit_samples(split)
        ]

    def bfs_pseudo_items(self, split: str) -> list[dict[str, str]]:
        """S2 training items ``{sample, image, pseudo}`` (``train_bfs_segmenter``)."""
        return [
            {"sample": s, "image": IMAGE.format(sample=s), "pseudo": BFS_PSEUDO.format(sample=s)}
            for s in self.bfs_fit_samples(split)
        ]
