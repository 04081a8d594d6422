"""Fully annotated boxes of the real smFISH benchmark: boxes.csv and box_spots.csv.

One 64 x 64 voxel (≈ 7 x 7 µm) box, all z slices, per evaluated volume (and one in the
validation volume img2_c0), placed where the annotator clicked. Inside a box every spot is
listed: the local maxima (z, y, x; ellipsoid radius 1, 2, 2 voxels) of the background-subtracted
image ``G(0.5, 1, 1 voxels) * I - median_(1 x 15 x 15)(I)`` whose contrast is at least the
weakest clicked spot's contrast in the same volume (the annotator's own notion of a spot),
plus every click in the box. The result was inspected on max projections
(box_<volume>.png, written by this script) before being committed; nothing was edited by hand.

Second, lenient truth ``box_spots_half.csv`` (added later; box_spots.csv is unchanged): the same
rule with the contrast floor at half the weakest click's contrast, so dimmer real spots that a
detector finds are not counted as false positives (more spots, and more of them noise).
Run: ``python benchmarks/real_spots/make_truth.py`` (seconds).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data

BOX = 64
CORNERS = {  # volume: (y0, x0) of its box; z is complete
    "img2_c0": (40, 80),
    "img4_c0": (40, 100),
    "img4_c1": (80, 0),
    "img5_c0": (60, 60),
    "img6_c1": (40, 0),
}


def contrast_map(image: np.ndarray) -> np.ndarray:
    """Smoothed image minus its lateral median background (spots stand out by their contrast)."""
    img = image.astype(np.float64)
    return (
        ndimage.gaussian_filter(img, (0.5, 1.0, 1.0)) - ndimage.median_filter(img, size=(1, 15, 15))
    ).astype(np.float32)


def contrast_maxima(vol: data.Volume) -> tuple[pd.DataFrame, np.ndarray, float]:
    """The rule's candidates: every local maximum of :func:`contrast_map` (score = contrast),
    the rows the clicks match (within 2.5 voxels), and the weakest clicked contrast."""
    from fewlabel.detection.peaks import find_peaks
    from fewlabel.metrics.detection import match_points

    peaks = find_peaks(
        contrast_map(vol.image), threshold=0.0, min_distance=(1, 2, 2), refine_radius=0
    )
    match = match_points(vol.clicks, peaks[["z", "y", "x"]].to_numpy(), max_distance=2.5)
    clicked = match.pairs[:, 1].astype(int)
    return peaks, clicked, float(peaks["score"].to_numpy()[clicked].min())


def main() -> None:
    boxes, spots, half = [], [], []
    for name, (y0, x0) in CORNERS.items():
        stem, channel = name.split("_c")
        vol = data.load(stem, int(channel))
        peaks, _, weakest = contrast_maxima(vol)
        z1 = vol.image.shape[0]
        boxes.append(
            {"volume": name, "z0": 0, "y0": y0, "x0": x0, "z1": z1, "y1": y0 + BOX, "x1": x0 + BOX}
        )
        clicks = vol.clicks[
            (vol.clicks[:, 1] >= y0)
            & (vol.clicks[:, 1] < y0 + BOX)
            & (vol.clicks[:, 2] >= x0)
            & (vol.clicks[:, 2] < x0 + BOX)
        ]
        for floor, rows in ((1.0, spots), (0.5, half)):
            found, keep = _box_maxima(peaks, (y0, x0), floor * weakest, clicks)
            table = np.concatenate([clicks, found[keep]])
            rows += [
                {"volume": name, "z": z, "y": y, "x": x, "clicked": i < len(clicks)}
                for i, (z, y, x) in enumerate(table)
            ]
        found, keep = _box_maxima(peaks, (y0, x0), weakest, clicks)
        print(
            f"{name}: weakest click contrast {weakest:.0f}; box spots "
            f"{sum(r['volume'] == name for r in spots)} ({len(clicks)} clicked); "
            f"at half the floor {sum(r['volume'] == name for r in half)}"
        )
        _picture(vol, (y0, x0), clicks, found[keep], name)
    pd.DataFrame(boxes).to_csv(data.HERE / "boxes.csv", index=False)
    pd.DataFrame(spots).round(3).to_csv(data.HERE / "box_spots.csv", index=False)
    pd.DataFrame(half).round(3).to_csv(data.HERE / "box_spots_half.csv", index=False)


def _box_maxima(peaks: pd.DataFrame, corner, floor: float, clicks: np.ndarray):
    """Maxima in the box with contrast >= floor, and which of them no click replaces (a click
    replaces the maximum it matches: the annotator's position is kept)."""
    from fewlabel.metrics.detection import match_points

    y0, x0 = corner
    inside = (
        (peaks["y"] >= y0)
        & (peaks["y"] < y0 + BOX)
        & (peaks["x"] >= x0)
        & (peaks["x"] < x0 + BOX)
        & (peaks["score"] >= floor)
    )
    found = peaks.loc[inside, ["z", "y", "x"]].to_numpy(np.float64)
    near = match_points(clicks, found, max_distance=2.5)
    keep = np.ones(len(found), dtype=bool)
    keep[near.pairs[:, 1].astype(int)] = False
    return found, keep


def _picture(vol: data.Volume, corner, clicks, added, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y0, x0 = corner
    mip = vol.image[:, y0 : y0 + BOX, x0 : x0 + BOX].max(0).astype(float)
    lo, hi = np.percentile(mip, [1, 99.9])
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(np.clip((mip - lo) / (hi - lo), 0, 1) ** 0.7, cmap="gray")
    ax.scatter(clicks[:, 2] - x0, clicks[:, 1] - y0, s=30, c="red", marker="x", label="clicked")
    ax.scatter(
        added[:, 2] - x0,
        added[:, 1] - y0,
        s=60,
        facecolors="none",
        edgecolors="yellow",
        label="added (contrast >= weakest click)",
    )
    ax.set_title(f"{name} box y{y0}:{y0 + BOX} x{x0}:{x0 + BOX} (max projection)", fontsize=8)
    ax.legend(fontsize=6, loc="lower left")
    ax.axis("off")
    fig.savefig(data.HERE / f"box_{name}.png", dpi=80, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
