"""What mirroring and an ensemble cost at prediction: the tiled engine's wall time for one
network, the same network mirrored, and the library's two-network mirrored folder.

``OMP_NUM_THREADS=2 python benchmarks/real_spots/tta_cost.py --workdir /tmp/spots3/split``
(the folders of ``split.py``'s default row and its ``ensemble 2 + mirroring`` row) on a
16 x 256 x 256 Poisson volume of the crops' voxel size, float32, 2 threads; prints seconds.
Measured on the 2-core VM (README, "Test-time mirroring"): 1.4 / 4.7 / 8.6 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

DEFAULT = "DM_DetNet3D_partial_annotation"
LIBRARY = "DM_DetNet3D_partial_annotation_ensemble_2_mirroring"


def main() -> None:
    from fewlabel.config import DetectionPredictConfig
    from fewlabel.inference.engine import predict_volume
    from fewlabel.io import write_ome_zarr

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(args.workdir)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image = np.random.default_rng(0).poisson(100, (16, 256, 256)).astype(np.uint16)
        write_ome_zarr(tmp / "img.ome.zarr", image, (0.4, 0.11, 0.11), chunks=(16, 128, 128))
        mirrored = tmp / "mirrored"  # the default row's network with model.json's record
        shutil.copytree(work / DEFAULT / "model", mirrored)
        described = json.loads((mirrored / "model.json").read_text())
        described["inference"] = {"members": 1, "mirror_axes": ["y", "x"]}
        (mirrored / "model.json").write_text(json.dumps(described))
        params = DetectionPredictConfig(precision="float32")
        for label, folder in (
            ("one network", work / DEFAULT / "model"),
            ("one network, mirrored", mirrored),
            ("two networks, mirrored (library)", work / LIBRARY / "model"),
        ):
            start = time.perf_counter()
            predict_volume(folder, tmp / "img.ome.zarr", tmp / f"{folder.name}.ome.zarr",
                           params=params, sample="s", device="cpu")  # fmt: skip
            print(f"{label}: {time.perf_counter() - start:.2f} s", flush=True)


if __name__ == "__main__":
    main()
