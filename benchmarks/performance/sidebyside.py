"""Trained DM-DetNet3D and ISL U-Net through fewlabel's engine and MONAI's
``sliding_window_inference`` (Gaussian), and with nnU-Net's settings (step 0.5 = overlap of
half a tile, Gaussian σ = tile/8, no mirroring), same volume / overlap / device in one run.

Models are trained here, briefly, with fewlabel's own training functions on synthetic data
(DM-DetNet3D: demo settings, 2 spot volumes; ISL U-Net: config defaults, 10 epochs on 2
synthetic nuclei pairs). Each engine run is its own process (peak RSS of that run alone).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SIZES = {"A": (32, 256, 256), "B": (32, 384, 384)}
DET_TILE, DET_OVERLAP = [16, 128, 128], [8, 48, 48]
UNET_TILE, UNET_OVERLAP = [16, 96, 96], [8, 44, 44]


def _spot_item(work: Path, name: str, shape: tuple[int, int, int], seed: int) -> dict[str, Any]:
    from fewlabel.config import DensityTargetsConfig
    from fewlabel.detection.density.targets import make_density_targets
    from fewlabel.io import write_ome_zarr, write_points_csv
    from fewlabel.synth import spot_volume

    paths = {k: str(work / f"{name}_{k}.ome.zarr") for k in ("image", "target", "weight")}
    paths["points"] = str(work / f"{name}.csv")
    vol = spot_volume(shape, snr=4.0, density="medium", seed=seed)
    gt = vol.points[["z", "y", "x"]].to_numpy(float)
    np.save(work / f"{name}_gt.npy", gt)
    if Path(paths["image"]).exists():
        return {"sample": name, **paths}
    write_ome_zarr(
        paths["image"], vol.image.astype(np.float32), (1.0, 1.0, 1.0), chunks=(16, 128, 128)
    )
    write_points_csv(vol.points[["z", "y", "x"]], paths["points"])
    make_density_targets(
        paths["image"], paths["points"], paths["target"], paths["weight"],
        params=DensityTargetsConfig(sigma=(1.0, 1.5, 1.5)), sample=name,
    )  # fmt: skip
    return {"sample": name, **paths}


def train_detector_model(work: Path) -> Path:
    from fewlabel.config import DetectorTrainConfig, PeaksConfig
    from fewlabel.detection.density.training import train_detector

    folder = work / "detector"
    if (folder / "thresholds.json").exists():
        return folder
    items = [_spot_item(work, f"dtrain{k}", (16, 128, 128), 10 + k) for k in range(3)]
    params = DetectorTrainConfig(
        epochs=20, steps_per_epoch=10, batch_size=4, crop=(8, 48, 48), lr=1e-3, patience=5,
        model={"base_channels": 8, "depth": 2}, gate=3.0,
    )  # fmt: skip
    train_detector(
        items[:2], items[2:], folder, params=params, peaks=PeaksConfig(min_distance=(1, 2, 2)),
        seed=0, threads=1,
    )  # fmt: skip
    return folder


def train_isl_model(work: Path) -> Path:
    from fewlabel.config import IslConfig
    from fewlabel.io import write_ome_zarr
    from fewlabel.segmentation.distance.isl import pretrain_isl
    from fewlabel.synth.nuclei import nuclei_pair

    folder = work / "isl"
    if (folder / "model.json").exists():
        return folder
    items = []
    for k in range(3):
        pair = nuclei_pair((16, 96, 96), n_nuclei=10, seed=20 + k)
        image, target = work / f"isl{k}_lf.ome.zarr", work / f"isl{k}_fl.ome.zarr"
        write_ome_zarr(image, pair.label_free, (1.0, 1.0, 1.0), chunks=(16, 96, 96))
        write_ome_zarr(target, pair.fluorescence, (1.0, 1.0, 1.0), chunks=(16, 96, 96))
        items.append({"sample": f"isl{k}", "image": str(image), "target": str(target)})
    params = IslConfig.model_validate({"epochs": 10, "steps_per_epoch": 8})
    pretrain_isl(items[:2], items[2:], folder, params=params, seed=0, threads=1)
    return folder


def _f1(work: Path, out: Path, gt_name: str, threshold: float) -> dict[str, float]:
    import zarr

    from fewlabel.detection.peaks import extract_points
    from fewlabel.metrics.detection import match_points

    density = np.asarray(zarr.open_array(str(out), mode="r")[...])
    gt = np.load(work / f"{gt_name}_gt.npy")
    det = extract_points(density, threshold=threshold, min_distance=(1, 2, 2), refine_radius=1)
    res = match_points(gt, det[["z", "y", "x"]].to_numpy(float), max_distance=3.0)
    return {
        "tp": res.tp,
        "fp": res.fp,
        "fn": res.fn,
        "f1": 2 * res.tp / max(2 * res.tp + res.fp + res.fn, 1),
    }


def _max_diff(a: Path, b: Path) -> float:
    import zarr

    x = np.asarray(zarr.open_array(str(a), mode="r")[...])
    y = np.asarray(zarr.open_array(str(b), mode="r")[...])
    return float(np.abs(x - y).max())


def side_by_side(
    work: Path, monai_site: str, run_case: Callable[..., dict[str, Any]]
) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    from run import write_volume

    det = train_detector_model(work)
    threshold = json.loads((det / "thresholds.json").read_text())["detection_threshold"]
    isl = train_isl_model(work)
    results: dict[str, Any] = {"detector_threshold": threshold}
    for model_name, folder, tile, overlap in (
        ("DM-DetNet3D (trained)", det, DET_TILE, DET_OVERLAP),
        ("ISL U-Net (trained)", isl, UNET_TILE, UNET_OVERLAP),
    ):
        # the shared 2 cores allow: both sizes and nnU-Net's settings for the detector, the
        # config overlap on volume A for the U-Net
        settings = [("config overlap", overlap, list(SIZES) if model_name[0] == "D" else ["A"])]
        if model_name[0] == "D":
            settings.append(("nnU-Net (step 0.5)", [t // 2 for t in tile], ["A"]))
        for setting, ov, sizes in settings:
            for size in sizes:
                shape = SIZES[size]
                if model_name.startswith("DM"):
                    image = Path(_spot_item(work, f"test{size}", shape, 30)["image"])
                else:
                    image = write_volume(work / f"unet_in_{size}.ome.zarr", shape, seed=5)
                tag = f"{folder.name}_{size}_{ov[1]}"
                ref = work / f"{tag}_f32.zarr"
                common = {
                    "model_dir": str(folder),
                    "image": str(image),
                    "tile": tile,
                    "overlap": ov,
                    "threads": 1,
                }
                auto = work / f"{tag}_auto.zarr"
                fl32 = {**common, "kind": "tiled", "precision": "float32", "output": str(ref)}
                fl = {**common, "kind": "tiled", "precision": "auto", "output": str(auto)}
                mon = {**common, "kind": "monai", "monai_site": monai_site, "reference": str(ref)}
                rows = {
                    "fewlabel float32": run_case({**fl32, "label": f"{tag} fl32"}),
                    "fewlabel default": run_case({**fl, "label": f"{tag} auto"}),
                    "MONAI float32": run_case({**mon, "label": f"{tag} monai"}),
                }
                rows["fewlabel default"]["max_abs_diff"] = _max_diff(ref, auto)
                if model_name.startswith("DM"):
                    gt = f"test{size}"
                    rows["fewlabel float32"]["detection"] = _f1(work, ref, gt, threshold)
                    rows["fewlabel default"]["detection"] = _f1(work, auto, gt, threshold)
                key = f"{model_name} | {setting} | {size} {list(shape)}"
                results[key] = {"overlap": ov, "tile": tile, "rows": rows}
    return results
