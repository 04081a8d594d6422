"""Detection settings derived from the object size (``detection.object_diameter_um``).

The density target σ, the peak minimum distance and the training crop must follow the size
of the objects: defaults sized for diffraction-limited spots (σ 1-1.5 voxels, crops of
8 x 48 x 48 voxels, peaks 1-2 voxels apart) give an F1 near 0.1 on cell-sized objects. With
``detection.object_diameter_um = d`` set, each stage that has the image (and so the voxel
size ``v``, per sample) derives, for every key left at its model default:

* ``detection.targets.sigma`` = d / 4 µm per axis (``sigma_unit: um``). DM-DetNet3D (Spilger
  et al. 2020, §2) treats σ as the annotation uncertainty and gives no rule tying it to the
  object size; d / 4 (= r / 2) keeps the Gaussian inside the object (≈ 95 % of its mass
  within r along an axis) and two touching objects (centres d = 4σ apart) well separated
  peaks, while the annotation of a centre of a large object is uncertain in proportion to r.
* ``detection.peaks.min_distance`` = round(r / v) voxels per axis (r = d / 2): two touching
  objects (d apart) are both kept, two maxima within one object are merged.
* ``detection.train.crop`` = ceil(4 d / v) voxels per axis (at least 4 object diameters of
  context), never smaller than the configured crop, capped at :data:`MAX_CROP_AXIS` voxels
  and at the largest training volume's side.
* ``normalisation.background_um`` (``detection.train``, ``detection.log`` and
  ``detection.pu``) = d µm per axis:
  the top-hat box of mode ``background`` spans two diameters, so objects keep their contrast.

A key whose value differs from its model default is explicit and wins (config.yaml lists
every key at its default, so "set" means "changed"). Every derived or kept value is logged.
:func:`size_warnings` checks, at training time, the target σ against d / 4 (when d is set)
or against the annotated nearest-neighbour spacing (when it is not).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

from fewlabel.config import DensityTargetsConfig, DetectorTrainConfig, PeaksConfig

M = TypeVar("M")

log = logging.getLogger(__name__)

SIGMA_PER_DIAMETER = 0.25
"""Target σ = SIGMA_PER_DIAMETER x object diameter (µm)."""
CROP_DIAMETERS = 4
"""Training crops span at least this many object diameters per axis."""
MAX_CROP_AXIS = 128
"""Derived crops are capped at this many voxels per axis (memory: batch x crop voxels)."""
SIGMA_MISMATCH = 3.0
"""Warn when the target σ (µm) is more than this factor away from diameter / 4."""
SPACING_PER_SIGMA = 4 * SIGMA_MISMATCH
"""Without a diameter: warn when the mean nearest-neighbour spacing of the annotations
exceeds this many target σ (touching objects of diameter ≈ spacing would want σ ≈ spacing/4,
over SIGMA_MISMATCH times larger)."""


def _is_default(model: Any, field: str) -> bool:
    return getattr(model, field) == type(model).model_fields[field].get_default(
        call_default_factory=True
    )


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):.3g}" for v in values) + ")"


def target_sigma_um(diameter_um: float) -> float:
    """The density-target σ (µm) for objects of ``diameter_um``: d / 4."""
    return SIGMA_PER_DIAMETER * float(diameter_um)


def min_distance_voxels(diameter_um: float, voxel_size: Sequence[float]) -> tuple[int, int, int]:
    """Peak minimum distance ≈ the object radius, in voxels per axis (z, y, x)."""
    r = 0.5 * float(diameter_um)
    return tuple(int(math.floor(r / float(v) + 0.5)) for v in voxel_size)  # type: ignore[return-value]


def crop_voxels(
    diameter_um: float,
    voxel_size: Sequence[float],
    *,
    minimum: Sequence[int] = (1, 1, 1),
    limit: Sequence[int] | None = None,
) -> tuple[int, int, int]:
    """Training crop of ≥ :data:`CROP_DIAMETERS` diameters per axis, in voxels (z, y, x).

    ``ceil(4 d / v)`` capped at :data:`MAX_CROP_AXIS` and ``limit`` (the largest training
    volume), never below ``minimum`` (the configured crop).
    """
    out = []
    for axis, v in enumerate(voxel_size):
        want = min(math.ceil(CROP_DIAMETERS * float(diameter_um) / float(v) - 1e-9), MAX_CROP_AXIS)
        if limit is not None:
            want = min(want, int(limit[axis]))
        out.append(max(int(minimum[axis]), want))
    return tuple(out)  # type: ignore[return-value]


def derive_targets(
    targets: DensityTargetsConfig,
    diameter_um: float | None,
    voxel_size: Sequence[float],
    *,
    sample: str | None = None,
) -> DensityTargetsConfig:
    """``detection.targets`` with σ = d / 4 µm unless sigma / sigma_unit were changed."""
    if diameter_um is None:
        return targets
    sigma = target_sigma_um(diameter_um)
    if not (_is_default(targets, "sigma") and _is_default(targets, "sigma_unit")):
        log.info(
            "sample %s: detection.targets.sigma = %s %s is explicit and kept "
            "(detection.object_diameter_um = %g µm would give %.3g µm)",
            sample,
            list(targets.sigma),
            targets.sigma_unit,
            diameter_um,
            sigma,
        )
        return targets
    log.info(
        "sample %s: detection.targets.sigma derived from detection.object_diameter_um = %g µm: "
        "d/4 = %.3g µm = %s voxels at voxel size %s µm",
        sample,
        diameter_um,
        sigma,
        _fmt([sigma / float(v) for v in voxel_size]),
        _fmt(voxel_size),
    )
    return targets.model_copy(update={"sigma": (sigma, sigma, sigma), "sigma_unit": "um"})


def derive_peaks(
    peaks: PeaksConfig,
    diameter_um: float | None,
    voxel_size: Sequence[float],
    *,
    sample: str | None = None,
) -> PeaksConfig:
    """``detection.peaks`` with min_distance in voxels of this volume: ≈ the object radius
    when ``diameter_um`` is given and min_distance was not changed, else the configured value
    (µm converted with ``voxel_size`` and rounded; ``min_distance_unit: voxel`` as is)."""
    explicit = not (_is_default(peaks, "min_distance") and _is_default(peaks, "min_distance_unit"))
    if diameter_um is None or explicit:
        converted = peaks_in_voxels(peaks, voxel_size, sample=sample)
        if diameter_um is not None:
            log.info(
                "sample %s: detection.peaks.min_distance = %s %s is explicit and kept "
                "(detection.object_diameter_um = %g µm would give %s voxels)",
                sample,
                list(peaks.min_distance),
                peaks.min_distance_unit,
                diameter_um,
                list(min_distance_voxels(diameter_um, voxel_size)),
            )
        return converted
    derived = min_distance_voxels(diameter_um, voxel_size)
    log.info(
        "sample %s: detection.peaks.min_distance derived from detection.object_diameter_um = "
        "%g µm: radius %.3g µm = %s voxels at voxel size %s µm",
        sample,
        diameter_um,
        0.5 * diameter_um,
        list(derived),
        _fmt(voxel_size),
    )
    return peaks.model_copy(update={"min_distance": derived, "min_distance_unit": "voxel"})


def peaks_in_voxels(
    peaks: PeaksConfig, voxel_size: Sequence[float], *, sample: str | None = None
) -> PeaksConfig:
    """``peaks`` with min_distance in whole voxels (µm / voxel size, rounded half up)."""
    if peaks.min_distance_unit == "voxel":
        values = tuple(int(math.floor(float(d) + 0.5)) for d in peaks.min_distance)
    else:
        values = tuple(
            int(math.floor(float(d) / float(v) + 0.5))
            for d, v in zip(peaks.min_distance, voxel_size, strict=True)
        )
        log.debug(
            "sample %s: detection.peaks.min_distance %s µm = %s voxels at voxel size %s µm",
            sample,
            list(peaks.min_distance),
            list(values),
            _fmt(voxel_size),
        )
    return peaks.model_copy(update={"min_distance": values, "min_distance_unit": "voxel"})


def derive_train(
    params: DetectorTrainConfig,
    diameter_um: float | None,
    voxel_sizes: Sequence[Sequence[float]],
    shapes: Sequence[Sequence[int]],
) -> DetectorTrainConfig:
    """``detection.train`` with a crop of ≥ 4 diameters unless the crop was changed.

    One crop serves every training volume: per axis the largest over ``voxel_sizes`` (finest
    voxels need the most), capped at the largest side in ``shapes``.
    """
    if diameter_um is None or not voxel_sizes:
        return params
    limit = [max(int(s[a]) for s in shapes) for a in range(3)] if shapes else None
    wanted = [crop_voxels(diameter_um, v, minimum=params.crop, limit=limit) for v in voxel_sizes]
    derived = tuple(max(c[a] for c in wanted) for a in range(3))
    if not _is_default(params, "crop"):
        log.info(
            "detection.train.crop = %s voxels is explicit and kept (detection.object_diameter_um"
            " = %g µm would give %s)",
            list(params.crop),
            diameter_um,
            list(derived),
        )
        return params
    log.info(
        "detection.train.crop derived from detection.object_diameter_um = %g µm: %s voxels "
        "(>= %d diameters per axis, at least the default %s, at most %d voxels and the largest "
        "training volume %s)",
        diameter_um,
        list(derived),
        CROP_DIAMETERS,
        list(params.crop),
        MAX_CROP_AXIS,
        limit,
    )
    return params.model_copy(update={"crop": derived})


def derive_normalisation(params: M, diameter_um: float | None) -> M:
    """``params`` (``detection.train``, ``detection.log`` or ``detection.pu``) with the top-hat
    half-size of ``normalisation.background_um`` set to one object diameter per axis (a box of
    two diameters, so objects keep their contrast) unless it was changed or no diameter is set."""
    norm = params.normalisation  # type: ignore[attr-defined]
    if diameter_um is None:
        return params
    derived = (float(diameter_um),) * 3
    if not _is_default(norm, "background_um"):
        log.info(
            "normalisation.background_um = %s µm is explicit and kept (object_diameter_um = %g)",
            list(norm.background_um),
            diameter_um,
        )
        return params
    log.info(
        "normalisation.background_um derived from detection.object_diameter_um: %s µm "
        "(top-hat box of two diameters; used by mode background, now %s)",
        list(derived),
        norm.mode,
    )
    update = {"normalisation": norm.model_copy(update={"background_um": derived})}
    return params.model_copy(update=update)  # type: ignore[attr-defined]


def mean_nearest_neighbour_um(points: np.ndarray, voxel_size: Sequence[float]) -> float | None:
    """Mean distance (µm) from each point (ZYX voxels) to its nearest other point."""
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3) * np.asarray(voxel_size, float)
    if len(pts) < 2:
        return None
    distances, _ = cKDTree(pts).query(pts, k=2)
    return float(np.mean(distances[:, 1]))


def size_warnings(
    sigma_um: Sequence[float],
    diameter_um: float | None,
    spacing_um: float | None,
    *,
    sample: str | None = None,
) -> list[str]:
    """Warnings (also logged) when the target σ (µm, z y x) does not fit the object size.

    With ``diameter_um``: σ more than :data:`SIGMA_MISMATCH` times away from d / 4 on any
    axis. Without: the mean nearest-neighbour spacing of the annotations (µm) over
    :data:`SPACING_PER_SIGMA` times the largest σ (objects as large as their spacing would
    want a σ that much larger).
    """
    out: list[str] = []
    sig = [float(s) for s in sigma_um]
    if diameter_um is not None:
        want = target_sigma_um(diameter_um)
        far = [s for s in sig if not want / SIGMA_MISMATCH <= s <= want * SIGMA_MISMATCH]
        if far:
            out.append(
                f"the density target σ {_fmt(sig)} µm (z, y, x) is more than "
                f"{SIGMA_MISMATCH:g}x away from detection.object_diameter_um / 4 = {want:.3g} µm; "
                "the targets will not look like the objects. Fix: leave detection.targets.sigma "
                "at its default (it is then derived from object_diameter_um) or set it to about "
                "a quarter of the object diameter."
            )
    elif spacing_um is not None and spacing_um > SPACING_PER_SIGMA * max(sig):
        out.append(
            f"the annotated points are on average {spacing_um:.3g} µm from their nearest "
            f"neighbour, over {SPACING_PER_SIGMA:g}x the density target σ {_fmt(sig)} µm "
            "(z, y, x): if the objects are about as large as their spacing (cells, nuclei), "
            "σ, the training crop and the peak distance are too small for them. Fix: set "
            "detection.object_diameter_um (σ, peaks.min_distance and train.crop then follow "
            "it), or ignore this for sparse small particles."
        )
    for message in out:
        log.warning("sample %s: %s", sample, message)
    return out


__all__ = [
    "CROP_DIAMETERS",
    "MAX_CROP_AXIS",
    "SIGMA_MISMATCH",
    "SIGMA_PER_DIAMETER",
    "SPACING_PER_SIGMA",
    "crop_voxels",
    "derive_peaks",
    "derive_targets",
    "derive_train",
    "mean_nearest_neighbour_um",
    "min_distance_voxels",
    "size_warnings",
    "target_sigma_um",
]


def tuning_gate(
    gate: float | None,
    gate_unit: str,
    evaluation: Any = None,
    *,
    what: str = "detection.train.gate",
) -> tuple[float, str]:
    """The (gate, unit) that tunes a detection threshold: ``what`` when set, else the
    ``evaluation.detection`` gate (a mapping or model; default: its defaults). A set gate that
    differs from the evaluation's is logged with the reason (the user asked for it)."""
    from fewlabel.config.sections import DetectionEvalConfig

    ev = DetectionEvalConfig.model_validate(
        evaluation.model_dump() if hasattr(evaluation, "model_dump") else (evaluation or {})
    )
    if gate is None:
        log.info(
            "threshold tuning gate = evaluation.detection gate %g %s (%s is null): tuned and "
            "scored with the same matching rule",
            ev.gate,
            ev.gate_unit,
            what,
        )
        return float(ev.gate), ev.gate_unit
    if (float(gate), gate_unit) != (float(ev.gate), ev.gate_unit):
        log.warning(
            "threshold tuning gate %s = %g %s differs from evaluation.detection gate %g %s "
            "because it was set explicitly: the threshold is chosen against another matching "
            "rule than the one scored (set %s: null to use the evaluation gate)",
            what,
            gate,
            gate_unit,
            ev.gate,
            ev.gate_unit,
            what,
        )
    return float(gate), gate_unit
