"""Does per-volume percentile normalisation suit the real crops (camera offset ≈ 2000)?

For every (volume, annotated channel): the raw offset (1st percentile), and, after fewlabel's
normalisation ``(I - p1) / (p99.8 - p1)``, the median normalised background (the volume's
median) and the median normalised peak of the clicked spots (max of a 3 x 5 x 5 box at each
click). If the offset leaked into the normalised values, or the 99.8th percentile were set by
the spots themselves, clicked spots would sit at very different normalised heights in
different volumes. The other modes of ``detection.train.normalisation`` (robust z-score;
background: white top-hat of 1 µm half-size, then robust z-score) are listed as the clicked
peak height in noise units (median and 10th percentile over the clicks).
Run: ``python benchmarks/real_spots/normalisation.py`` (seconds).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data


def clicked_peaks(norm: np.ndarray, clicks: np.ndarray) -> list[float]:
    """Max of a 3 x 5 x 5 box at each click."""
    peaks = []
    for z, y, x in np.rint(clicks).astype(int):
        box = norm[max(z - 1, 0) : z + 2, max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3]
        peaks.append(float(box.max()))
    return peaks


def main() -> None:
    from fewlabel.config import NormalisationConfig
    from fewlabel.normalize import apply_range, percentile_range, prepare, recipe

    rows = []
    for stem, channel in data.TRAIN + data.TEST:
        vol = data.load(stem, channel)
        low, high = percentile_range(vol.image, (1.0, 99.8))
        norm = apply_range(vol.image, low, high)
        peaks = clicked_peaks(norm, vol.clicks)
        background = float(np.median(norm))
        other = {}  # the other modes: median clicked peak in noise units (background ~ 0)
        for mode in ("robust", "background"):
            how = recipe(mode, (1.0, 99.8), NormalisationConfig().background_um)
            view, lo, hi = prepare(vol.image, how, vol.voxel_size)
            heights = clicked_peaks(apply_range(np.asarray(view[...]), lo, hi), vol.clicks)
            other[f"{mode}: clicked peak (median)"] = round(float(np.median(heights)), 2)
            other[f"{mode}: clicked peak (10th pct)"] = round(float(np.percentile(heights, 10)), 2)
        rows.append(
            {
                "volume": vol.name,
                "p1 (offset)": low,
                "p99.8": high,
                "norm. background (median)": round(background, 3),
                "norm. clicked peak (median)": round(float(np.median(peaks)), 3),
                "peak - background": round(float(np.median(peaks)) - background, 3),
                **other,
                "clicks": len(vol.clicks),
            }
        )
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False))
    table.to_csv(data.HERE / "normalisation.tsv", sep="\t", index=False)


if __name__ == "__main__":
    main()
