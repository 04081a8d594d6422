"""Few-shot training of the DM-DetNet3D density regressor and detection-threshold tuning.

Validation and threshold tuning themselves: :mod:`fewlabel.detection.density.tuning`.

Training (Spilger et al.): random crops (mini-batch of ``batch_size``, random y/x flips) of the
normalised image (``train.normalisation``: percentiles, robust z-score or background-subtracted
z-score, :mod:`fewlabel.normalize`) are mapped to the Gaussian density target; the loss is the
weighted adaptive wing loss (seed eqs. 1–3; or weighted MSE); AMSGrad (Adam, β = 0.9/0.999);
early stopping on the validation loss, computed each epoch on the whole validation volumes
(or, for large ones, on fixed deterministic crops). The best weights (lowest validation loss)
are then used to predict every validation volume, detections are the density peaks
(:func:`fewlabel.detection.peaks.find_peaks`) and the detection threshold maximising the pooled
validation F1 (:func:`fewlabel.metrics.detection.match_points`, gate in voxels) over
``threshold_grid`` is stored in the model folder's ``thresholds.json``.

Volumes smaller than the crop along an axis are **padded** (image mirrored, target 0, weight 0,
so padded voxels do not count in the loss). Same seed + same thread count → identical weights
on the CPU.

``ensemble: N`` trains N networks with seeds seed, seed + 1, ... (one network's loop:
:mod:`fewlabel.detection.density.member`) and ``mirror`` adds test-time mirroring; the threshold
is tuned on the composed network (:mod:`fewlabel.models.compose`), which the model folder
records, so every prediction applies the same one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewlabel.config import DetectorTrainConfig, PeaksConfig
from fewlabel.detection.density.member import MemberRun, fit_member, initial_state
from fewlabel.detection.density.tuning import tune_threshold
from fewlabel.detection.density.volumes import (
    IN_MEMORY_MAX_VOXELS,
    DetectorItem,
    Volume,
    load_volume,
    normalisation_recipe,
)
from fewlabel.detection.sizes import (
    derive_normalisation,
    derive_peaks,
    derive_train,
    mean_nearest_neighbour_um,
    size_warnings,
    tuning_gate,
)
from fewlabel.errors import ConfigError
from fewlabel.training import json_ready

log = logging.getLogger(__name__)

__all__ = ["IN_MEMORY_MAX_VOXELS", "DetectorItem", "train_detector"]


# --------------------------------------------------------------------------- training
def train_detector(
    train_items: Sequence[Any],
    val_items: Sequence[Any],
    out_dir: str | Path,
    *,
    params: DetectorTrainConfig | None = None,
    peaks: PeaksConfig | None = None,
    seed: int = 0,
    threads: int = 1,
    object_diameter_um: float | None = None,
    evaluation: Any = None,
    init_from: str | Path | None = None,
    model_grid: bool = True,
) -> dict[str, Any]:
    """Train DM-DetNet3D on annotated volumes and write the model folder ``out_dir``.

    Parameters
    ----------
    train_items, val_items : :class:`DetectorItem` (or dicts ``{sample, image, target, weight,
        points}`` / 4-tuples ``(image, target, weight, points)``). Without validation items the
        training items are used for early stopping and threshold tuning (logged).
    out_dir : model folder to write (weights.pt = best, weights_last.pt, model.json,
        training.json, thresholds.json, normalization.json, curve.tsv, curve.png; an ensemble
        also weights_member<i>.pt, weights_last_member<i>.pt, curve_member<i>.tsv/png).
    params : :class:`~fewlabel.config.DetectorTrainConfig` (``detection.train``; default: its
        defaults).
    peaks : :class:`~fewlabel.config.PeaksConfig` (``detection.peaks``): the peak rule used to
        tune the threshold, the same one ``extract_points`` applies it with; recorded in
        thresholds.json.
    seed, threads : determinism and CPU threads.
    object_diameter_um : ``detection.object_diameter_um``: when given, a crop and peak
        min_distance left at their defaults are derived from it and the volumes' voxel sizes
        (:mod:`fewlabel.detection.sizes`). Either way the target σ is checked against the
        object size (or the annotated spacing) and a mismatch is warned about.
    evaluation : the ``evaluation.detection`` section: its gate tunes the threshold unless
        ``params.gate`` is set (:func:`fewlabel.detection.sizes.tuning_gate`).
    model_grid : ``detection.predict.model_grid``: the threshold is tuned (and ``select: f1``
        validates) on the grid prediction will use: the training grid (true) or each
        validation volume's own (false).

    Partially annotated volumes (density targets made with ``annotation: clicks`` or an
    annotated region; :mod:`fewlabel.detection.density.partial`): crops are centred on voxels
    that carry loss except a share ``params.background_crop_fraction`` placed at random, the
    loss adds the PU risk on unlabelled voxels, and the threshold is tuned on click recall and
    known-region precision (:func:`fewlabel.detection.density.partial.known_sweep`).

    Returns
    -------
    Summary dict (best epoch, validation loss, threshold, F1).
    """
    from fewlabel.detection.density.detnet import ARCH_NAME
    from fewlabel.device import configure_torch
    from fewlabel.inference.resample import training_grid
    from fewlabel.models.compose import compose, mirror_axes
    from fewlabel.models.store import save_model
    from fewlabel.runtime import provenance

    params = derive_normalisation(params or DetectorTrainConfig(), object_diameter_um)
    peaks = peaks if peaks is not None else PeaksConfig()
    train = [DetectorItem.coerce(item, i) for i, item in enumerate(train_items)]
    val = [DetectorItem.coerce(item, i) for i, item in enumerate(val_items)]
    if not train:
        raise ConfigError(
            "no samples with points in the train split; the detector needs at "
            "least one annotated training volume.",
            fix="set split=train and a points CSV for at least one sample in config/samples.tsv.",
        )
    device = configure_torch(threads, seed)
    log.info(
        "training DM-DetNet3D on %d volume(s), validating on %d, device %s, seed %d, %d thread(s)",
        len(train),
        len(val),
        device,
        seed,
        threads,
    )
    train_vols = [load_volume(item, params, training=True) for item in train]
    tuned_on = "val"
    if val:
        val_vols = [load_volume(item, params, training=False) for item in val]
    else:
        log.warning(
            "no validation volumes: early stopping and threshold tuning use the "
            "training volumes (expect optimistic F1)"
        )
        val_vols = train_vols
        tuned_on = "train"
    params = derive_train(
        params,
        object_diameter_um,
        [v.voxel_size for v in train_vols],
        [v.shape for v in train_vols],
    )
    val_peaks = {
        v.item.sample: derive_peaks(peaks, object_diameter_um, v.voxel_size, sample=v.item.sample)
        for v in val_vols
    }
    size_checks = _size_warnings(train_vols, object_diameter_um)
    # the grid prediction resamples to (fewlabel.inference.resample); tuning predicts on it too
    grid = training_grid([v.voxel_size for v in train_vols])
    tune_grid = grid if model_grid else None
    log.info(
        "threshold tuning predicts on %s (detection.predict.model_grid: %s)",
        f"the training grid {list(grid)} µm" if model_grid else "each volume's own grid",
        str(model_grid).lower(),
    )

    gate, gate_unit = tuning_gate(params.gate, params.gate_unit, evaluation)
    kwargs = params.model.kwargs()
    if params.model.log_prior:
        kwargs["log_prior_sigma"] = prior_sigma(train_vols, grid)
        log.info("LoG prior: sigma %s voxels of the training grid", kwargs["log_prior_sigma"])
        size_checks += prior_grid_warnings(train_vols, grid)
    arch = {"name": ARCH_NAME, "kwargs": json_ready(kwargs)}
    init_from = init_from if init_from is not None else params.init_from
    init_state = (
        None if init_from is None else initial_state(arch, init_from, normalisation_recipe(params))
    )
    run = MemberRun(
        train_vols, val_vols, val_peaks, params, peaks, device, gate, gate_unit, grid, tune_grid,
        arch, init_state,
    )  # fmt: skip
    nets, results = [], []
    for member in range(params.ensemble):  # member i = the training with seed + i
        if member:
            configure_torch(threads, seed + member)
            log.info(
                "ensemble member %d of %d: seed %d", member + 1, params.ensemble, seed + member
            )
        model, result = fit_member(run, seed + member)
        nets.append(model)
        results.append(result)
    result = results[0]
    axes = mirror_axes(params.flip_z, params.mirror)
    composed = compose(nets, axes).eval()
    if len(nets) > 1 or axes:
        log.info(
            "inference: mean of %d network(s)%s; the threshold is tuned on it",
            len(nets),
            f", mirrored along {axes}" if axes else "",
        )
    # threshold tuning with the best weights (pooled F1 over the validation volumes)
    threshold, f1_table, tuned_with = tune_threshold(
        composed,
        val_vols,
        val_peaks,
        params,
        peaks,
        device,
        gate=gate,
        gate_unit=gate_unit,
        grid=tune_grid,
        trained=grid,
    )
    best = f1_table.loc[f1_table["threshold"] == threshold].iloc[0]
    thresholds = {
        "detection_threshold": float(threshold),
        "val_f1": float(best["f1"]),
        "val_precision": float(best["precision"]),
        "val_recall": float(best["recall"]),
        "f1_curve": f1_table.to_dict(orient="records"),
        "min_distance": list(val_peaks[val_vols[0].item.sample].min_distance),
        "min_distance_per_sample": {k: list(p.min_distance) for k, p in val_peaks.items()},
        "refine_radius": list(peaks.refine_radius),
        "gate": float(gate),
        "gate_unit": gate_unit,
        "tuned_on": tuned_on,
        "tuned_with": tuned_with,
        "tuned_on_grid": "training" if model_grid else "own",
    }
    log.info(
        "detection threshold %.3f: %s F1 %.3f (P %.3f, R %.3f; %s; gate %g %s)",
        threshold,
        tuned_on,
        best["f1"],
        best["precision"],
        best["recall"],
        tuned_with,
        gate,
        gate_unit,
    )
    summary = {
        **result.summary(),
        **(
            {"members": [{"seed": seed + i, **r.summary()} for i, r in enumerate(results)]}
            if len(results) > 1
            else {}
        ),
        "detection_threshold": float(threshold),
        "val_f1": float(best["f1"]),
        "tuned_with": tuned_with,
    }
    trained = [
        f"network {i + 1} of {len(results)} (seed {seed + i}): {text}" if len(results) > 1 else text
        for i, r in enumerate(results)
        if (text := r.extra.get("warning"))
    ]
    if size_checks or trained:  # shown in the report's training table
        summary["warnings"] = [*size_checks, *trained]
    training = {
        "stage": "train_detector",
        "params": params.model_dump(mode="json"),
        "peaks": peaks.model_dump(mode="json"),
        "object_diameter_um": object_diameter_um,
        "seed": seed,
        "threads": threads,
        "device": device,
        "train": [dataclasses.asdict(i) for i in train],
        "val": [dataclasses.asdict(i) for i in val],
        "init_from": None if init_from is None else str(init_from),
        "normalisation_ranges": {v.item.sample: [v.low, v.high] for v in train_vols},
        "voxel_size_um": list(grid),
        **summary,
        "provenance": provenance(
            {**params.model_dump(mode="json"), "peaks": peaks.model_dump(mode="json")}
        ),
    }
    save_model(
        out_dir,
        result.best_state,
        arch=arch,
        training=training,
        thresholds=thresholds,
        curve=result.curve,
        extra_states={
            "weights_last": result.last_state,  # member i >= 1: weights_last_member<i>.pt
            **{f"weights_last_member{i}": r.last_state for i, r in enumerate(results[1:], 1)},
        },
        members=[r.best_state for r in results[1:]],
        mirror_axes=axes,
        extra_curves={f"member{i}": r.curve for i, r in enumerate(results[1:], start=1)},
        normalization={**normalisation_recipe(params), "per_volume": True},
    )
    return summary


def prior_sigma(vols: Sequence[Volume], grid: Sequence[float]) -> list[float]:
    """σ (voxels of ``grid``) of ``detection.train.model.log_prior``: the density targets' σ in
    µm (median over the training volumes), so the filter matches the spots the network is
    taught."""
    key = "detection.train.model.log_prior"
    sigmas = [np.asarray(vol.target_sigma(key)) * np.asarray(vol.voxel_size) for vol in vols]
    um = np.median(np.asarray(sigmas, dtype=float), axis=0)
    return [round(float(s) / float(g), 4) for s, g in zip(um, grid, strict=True)]


def prior_grid_warnings(vols: Sequence[Volume], grid: Sequence[float]) -> list[str]:
    """Warnings (logged and returned) for training volumes off the training ``grid``: training
    crops are not resampled, so the LoG prior filters them with σ in voxels of ``grid``, a
    different σ in µm from the one it predicts with."""
    from fewlabel.inference.resample import target_grid

    off = [v for v in vols if target_grid(v.voxel_size, grid) is not None]
    if not off:
        return []
    text = (
        f"LoG prior: training volume(s) {', '.join(v.item.sample for v in off)} (voxel size "
        f"{', '.join(str(list(v.voxel_size)) for v in off)} µm) are not on the training grid "
        f"{list(grid)} µm; their crops are filtered with the prior's sigma in voxels of that "
        "grid, so the network learns its correction against another filter size there than "
        "the one it predicts with. Fix: train on volumes of one voxel size (resample the "
        "others), or drop detection.train.model.log_prior."
    )
    log.warning(text)
    return [text]


def _size_warnings(vols: Sequence[Volume], diameter_um: float | None) -> list[str]:
    """:func:`fewlabel.detection.sizes.size_warnings` on the training volumes' targets."""
    out: list[str] = []
    for vol in vols:
        if vol.sigma_voxels is None:
            continue
        sigma_um = [s * v for s, v in zip(vol.sigma_voxels, vol.voxel_size, strict=True)]
        spacing = mean_nearest_neighbour_um(vol.points, vol.voxel_size)
        out += size_warnings(sigma_um, diameter_um, spacing, sample=vol.item.sample)
    return out
