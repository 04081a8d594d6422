"""Real smFISH crops (../shared/data/smfish_tissue_spots_partial) as single-channel volumes.

Each (image, annotated channel) pair is one volume; its points are the clicks on that channel.
Voxel sizes from the data README (ImageJ spacing): z 0.4 µm (img1, img2) or 0.3 µm (img4-6),
xy 0.1099 µm. Nothing is copied into the repository: volumes are written under a scratch folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(os.environ.get("SMFISH_DATA", "/work/shared/data/smfish_tissue_spots_partial"))
HERE = Path(__file__).resolve().parent
XY_UM = 0.1099
Z_UM = {"img1": 0.4, "img2": 0.4, "img4": 0.3, "img5": 0.3, "img6": 0.3}
TRAIN = [("img1", 1), ("img2", 0)]  # img1: train, img2: validation (threshold tuning)
TEST = [("img4", 0), ("img4", 1), ("img5", 0), ("img6", 1)]


@dataclass
class Volume:
    name: str  # e.g. img4_c1
    image: np.ndarray  # ZYX uint16
    clicks: np.ndarray  # (N, 3) z, y, x voxels
    voxel_size: tuple[float, float, float]


def load(stem: str, channel: int) -> Volume:
    import tifffile

    data = tifffile.imread(DATA / f"{stem}.tif")  # ZCYX
    table = pd.read_csv(DATA / f"{stem}.csv")
    clicks = table.loc[table["c"] == channel, ["z", "y", "x"]].to_numpy(np.float64)
    return Volume(
        f"{stem}_c{channel}",
        np.ascontiguousarray(data[:, channel]),
        clicks,
        (Z_UM[stem], XY_UM, XY_UM),
    )


def boxes(name: str) -> np.ndarray:
    """The fully annotated boxes of a volume (z0,y0,x0,z1,y1,x1 voxels), from boxes.csv."""
    table = pd.read_csv(HERE / "boxes.csv")
    return table.loc[table["volume"] == name, ["z0", "y0", "x0", "z1", "y1", "x1"]].to_numpy(int)


def box_spots(name: str, truth: str = "box_spots.csv") -> np.ndarray:
    """Every spot inside the boxes of a volume (z,y,x voxels), from box_spots.csv (or the
    lenient truth box_spots_half.csv: contrast floor at half the weakest click)."""
    table = pd.read_csv(HERE / truth)
    return table.loc[table["volume"] == name, ["z", "y", "x"]].to_numpy(np.float64)
