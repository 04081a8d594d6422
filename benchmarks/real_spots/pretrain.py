"""Synthetic pretraining for the real-spots benchmark: DM-DetNet3D trained on fully annotated
synthetic spot volumes that look like the smFISH crops, then fine-tuned on the real clicks
(``train_detector(..., init_from=...)``).

Synthetic set (fixed before any fine-tuned row was scored): ``fewlabel.synth.spot_volume``,
10 x 128 x 128 voxels of 0.35 x 0.11 x 0.11 µm (between the two acquisitions' z steps), PSF
s.d. 1.5 voxels in y/x (0.165 µm, the clicked spots' width) and 0.8 in z, medium density,
uneven background with out-of-class blobs (``clutter``), Poisson noise; training volumes at
PTC SNR 2, 3, 4 and 7, validation at 2 and 4 (seeds 0-5). Every spot is labelled
(``annotation: full``); the targets' σ is the detector's default in µm, as in the fine-tuning.
The model is trained once per work folder (``<workdir>/synthetic_pretrain/model``).

``pairs`` (``neighbourhood.py``'s pair check, declared there): the same set drawn at high
density with spots at least 1.5 PSF s.d. apart instead of 3. Then 29 % of the spots have
another within 0.75 µm, against 9 %. The folder is ``synthetic_pretrain_pairs``.
"""

from __future__ import annotations

from pathlib import Path

import data

VOXEL_UM = (0.35, 0.11, 0.11)
TRAIN_SNR = (2.0, 3.0, 4.0, 7.0)
VAL_SNR = (2.0, 4.0)


PAIRS = {"density": "high", "min_separation": 1.5}  # pair-rich layout (``pairs``)


def synthetic_volumes(
    seed: int = 0, pairs: bool = False
) -> tuple[list[data.Volume], list[data.Volume]]:
    """Training and validation volumes; ``seed`` > 0 draws another set (volume seeds + 100 s);
    ``pairs``: the pair-rich layout :data:`PAIRS`."""
    from fewlabel.synth.spots import spot_volume

    layout = PAIRS if pairs else {}

    def make(snr: float, seed: int, role: str) -> data.Volume:
        s = spot_volume((10, 128, 128), snr=snr, sigma_xy=1.5, sigma_z=0.8, seed=seed, **layout)
        points = s.points[["z", "y", "x"]].to_numpy(float)
        return data.Volume(f"synth_{role}_snr{snr:g}", s.image, points, VOXEL_UM)

    train = [make(snr, 100 * seed + i, "train") for i, snr in enumerate(TRAIN_SNR)]
    val = [make(snr, 100 * seed + 10 + i, "val") for i, snr in enumerate(VAL_SNR)]
    return train, val


def pretrained(workdir: Path, params, epochs: int, seed: int = 0, pairs: bool = False) -> Path:
    """The synthetic model folder under ``workdir`` (trained on first use with ``params``,
    the fine-tuning's DetectorTrainConfig, for ``epochs``, as one plain network); ``seed`` > 0:
    another synthetic set and training seed, in ``synthetic_pretrain_seed<seed>``; ``pairs``:
    the pair-rich set, in ``synthetic_pretrain_pairs[_seed<seed>]``."""
    import run

    from fewlabel.config import DensityTargetsConfig
    from fewlabel.detection.density.training import train_detector

    name = "synthetic_pretrain" + ("_pairs" if pairs else "")
    root = workdir / (name + (f"_seed{seed}" if seed else ""))
    model = root / "model"
    if (model / "weights.pt").is_file():
        return model
    targets = DensityTargetsConfig(annotation="full")
    train, val = synthetic_volumes(seed, pairs)
    items = [run._zarrs(v, root, targets, None) for v in train]
    val_items = [run._zarrs(v, root, targets, None) for v in val]
    settings = params.model_copy(
        update={"epochs": epochs, "select": "loss", "ensemble": 1, "mirror": False}
    )
    train_detector(
        items, val_items, model, params=settings, seed=seed, threads=1,
        evaluation={"gate": run.GATE_UM, "gate_unit": "um"},
    )  # fmt: skip
    return model
