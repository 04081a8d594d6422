"""Demo inputs of the default workflow: spots and nuclei TIFFs + CSVs per split, manifest."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fewlabel.config import DemoParams
from fewlabel.synth.common import POINT_COLUMNS, derive_seed
from fewlabel.synth.nuclei import nuclei_pair
from fewlabel.synth.spots import spot_volume

log = logging.getLogger(__name__)

DEMO_SPLITS = ("train", "val", "test")


def write_tiff(path: str | Path, data: np.ndarray, voxel_size: Sequence[float]) -> None:
    """Write a ZYX array atomically as an ImageJ hyperstack TIFF with voxel size (µm).

    uint8/uint16/float32 go to ImageJ TIFF (wider unsigned integers, e.g. uint32 labels, are
    stored as uint16 when their maximum allows); anything else goes to OME-TIFF.
    """
    import tifffile

    from fewlabel.io import atomic_path

    vz, vy, vx = (float(v) for v in voxel_size)
    if data.dtype.kind == "u" and data.dtype.itemsize > 2 and int(data.max(initial=0)) < 65536:
        data = data.astype(np.uint16)
    with atomic_path(path) as tmp:
        if data.dtype in (np.uint8, np.uint16, np.float32):
            tifffile.imwrite(
                tmp,
                data,
                imagej=True,
                resolution=(1.0 / vx, 1.0 / vy),
                metadata={"axes": "ZYX", "spacing": vz, "unit": "um"},
            )
        else:
            tifffile.imwrite(
                tmp,
                data,
                ome=True,
                photometric="minisblack",
                metadata={
                    "axes": "ZYX",
                    "PhysicalSizeZ": vz,
                    "PhysicalSizeY": vy,
                    "PhysicalSizeX": vx,
                },
            )


def _write_csv(points: pd.DataFrame, path: Path) -> None:
    from fewlabel.io import write_points_csv

    write_points_csv(points[POINT_COLUMNS], path)


def _clicks(
    points: pd.DataFrame, p: DemoParams, split: str, seed: int
) -> tuple[pd.DataFrame, list[int] | None]:
    """The clicked spots of a demo volume: all for test; ``spots_click_fraction`` at random
    for train and val (at least one), plus, for val, every spot of the fully annotated left
    half, whose box ``z0, y0, x0, z1, y1, x1`` is returned."""
    if split == "test" or len(points) == 0:
        return points, None
    rng = np.random.default_rng(derive_seed(seed, "clicks", split))
    keep = rng.random(len(points)) < p.spots_click_fraction
    keep[int(rng.integers(len(points)))] = True
    region = None
    if split == "val":
        z, y, x = (int(v) for v in p.spots_shape)
        region = [0, 0, 0, z, y, x // 2]
        keep |= points["x"].to_numpy(float) < x // 2
    return points.loc[keep].reset_index(drop=True), region


def make_demo(
    outdir: str | Path, *, params: DemoParams | None = None, seed: int = 0
) -> list[dict[str, str]]:
    """Write the demo inputs and return their sample-sheet rows.

    Files (for each split train, val, test): ``spots_{split}.tif`` (uint16 Poisson counts)
    + ``spots_{split}.csv``; ``nuclei_{split}_labelfree.tif``, ``nuclei_{split}_fluo.tif``
    (float32), ``nuclei_{split}_labels.tif`` (uint16 instance ids) + ``nuclei_{split}.csv``
    (centroids); ``manifest.json`` written last (its presence means complete). Each file set
    uses its own seed ``derive_seed(seed, kind, split)``. The spot CSVs of train and val hold only
    the clicked spots (``spots_click_fraction``; all in ``spots_{split}_all.csv``); val's fully
    clicked half is ``spots_val_region.csv``. Rows have keys sample, image, channel,
    voxel_size, split, task, points, labels, target, annotated_region (paths as
    ``outdir/<name>``).
    """
    from fewlabel.runtime import checksum, write_json

    params = params if params is not None else DemoParams()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    manifest_path = outdir / "manifest.json"
    if manifest_path.exists():
        manifest_path.unlink()  # an old manifest must not vouch for a partial rewrite
    p = params
    rows: list[dict[str, str]] = []
    files: list[str] = []

    def vs_text(v: Sequence[float]) -> str:
        return ",".join(f"{float(x):g}" for x in v)

    for split in DEMO_SPLITS:
        s = spot_volume(
            p.spots_shape,
            snr=p.spots_snr,
            density=p.spots_density,
            sigma_xy=p.spots_sigma_xy,
            sigma_z=p.spots_sigma_z,
            background=p.spots_background,
            clutter=p.spots_clutter,
            seed=derive_seed(seed, "spots", split),
        )
        image = np.clip(np.rint(s.image), 0, 65535).astype(np.uint16)
        write_tiff(outdir / f"spots_{split}.tif", image, p.spots_voxel_size)
        clicked, region = _clicks(s.points, p, split, seed)
        _write_csv(clicked, outdir / f"spots_{split}.csv")
        _write_csv(s.points, outdir / f"spots_{split}_all.csv")
        files += [f"spots_{split}.tif", f"spots_{split}.csv", f"spots_{split}_all.csv"]
        if region is not None:
            pd.DataFrame([region], columns=["z0", "y0", "x0", "z1", "y1", "x1"]).to_csv(
                outdir / f"spots_{split}_region.csv", index=False
            )
            files.append(f"spots_{split}_region.csv")
        rows.append(
            {
                "sample": f"spots_{split}",
                "image": str(outdir / f"spots_{split}.tif"),
                "channel": "",
                "voxel_size": vs_text(p.spots_voxel_size),
                "split": split,
                "task": "detect",
                "points": str(outdir / f"spots_{split}.csv"),
                "labels": "",
                "target": "",
                "annotated_region": ""
                if region is None
                else str(outdir / f"spots_{split}_region.csv"),
            }
        )

    for split in DEMO_SPLITS:
        anisotropy = float(p.nuclei_voxel_size[0]) / float(p.nuclei_voxel_size[2])
        n = nuclei_pair(
            p.nuclei_shape,
            n_nuclei=p.nuclei_count,
            radius_range=p.nuclei_radius_range,
            anisotropy=anisotropy,
            seed=derive_seed(seed, "nuclei", split),
        )
        stem = f"nuclei_{split}"
        write_tiff(outdir / f"{stem}_labelfree.tif", n.label_free, p.nuclei_voxel_size)
        write_tiff(outdir / f"{stem}_fluo.tif", n.fluorescence, p.nuclei_voxel_size)
        write_tiff(outdir / f"{stem}_labels.tif", n.labels, p.nuclei_voxel_size)
        _write_csv(n.points, outdir / f"{stem}.csv")
        files += [f"{stem}_labelfree.tif", f"{stem}_fluo.tif", f"{stem}_labels.tif", f"{stem}.csv"]
        rows.append(
            {
                "sample": stem,
                "image": str(outdir / f"{stem}_labelfree.tif"),
                "channel": "",
                "voxel_size": vs_text(p.nuclei_voxel_size),
                "split": split,
                "task": "segment",
                "points": str(outdir / f"{stem}.csv"),
                "labels": str(outdir / f"{stem}_labels.tif"),
                "target": str(outdir / f"{stem}_fluo.tif"),
            }
        )
    write_json(
        {
            "seed": int(seed),
            "params": params.model_dump(mode="json"),
            "files": {name: checksum(outdir / name) for name in files},
            "samples": rows,
        },
        manifest_path,
    )
    log.info("demo data: %d files in %s", len(files), outdir)
    return rows


__all__ = ["DEMO_SPLITS", "make_demo", "write_tiff"]
