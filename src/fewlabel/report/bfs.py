"""BFS-Net report panels (``segmentation.method: bfs``): per volume, the middle z-slice of the
input, the Voronoi centre map (eq. 1, training volumes), S1's centre likelihood, the strongest
peak response, S2's foreground probability, and the pseudo-label outlines (training volumes).
The final instances are shown by the segmentation section's instance outlines."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fewlabel.report.data import _open_volume
from fewlabel.report.figures import _isl_figure, _segmentation_overlay

log = logging.getLogger(__name__)

PANELS = (
    ("image", "input"),
    ("centres", "centre map (eq. 1)"),
    ("likelihood", "S1 centre likelihood"),
    ("response", "peak response (strongest)"),
    ("mask", "S2 foreground probability"),
)


def bfs_sample_context(entry: Mapping[str, Any], max_px: int) -> dict[str, Any]:
    """A segmentation-section sample entry with the BFS-Net figures of one volume."""
    sample = str(entry["sample"])
    log.info("report: BFS-Net figures of %s", sample)
    vols = {k: _open_volume(entry[k], sample) for k in dict(PANELS) if entry.get(k)}
    pseudo = _open_volume(entry["pseudo"], sample) if entry.get("pseudo") else None
    voxel = vols["image"].voxel_size
    aspect = float(voxel[1]) / float(voxel[2])
    panels = [(title, vols[key].array) for key, title in PANELS if key in vols]
    figures = [{"caption": "BFS-Net maps", "uri": _isl_figure(sample, panels, aspect, max_px)}]
    if pseudo is not None:
        figures.append(
            {
                "caption": "pseudo-labels from peak response maps (outlines)",
                "uri": _segmentation_overlay(
                    sample, vols["image"].array, None, pseudo.array, voxel, max_px
                ),
            }
        )
    return {"sample": f"{sample} (BFS-Net)", "pcc": None, "metrics": None, "figures": figures}
