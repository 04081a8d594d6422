"""Sections without a method of their own: demo data, ingest, ROI, evaluation, report."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from fewlabel.config.base import (
    ConfigModel,
    NonNegFloat,
    NonNegInt,
    OpenFraction,
    Percentiles,
    PosFloat,
    PosInt,
    ZYXFloat,
    ZYXInt,
)
from fewlabel.config.detection import Unit


class DemoParams(ConfigModel):
    """Parameters of :func:`fewlabel.synth.make_demo` (stage ``make_demo_data``). Shapes z, y, x in
    voxels, voxel sizes z, y, x in µm; the nuclei anisotropy follows ``nuclei_voxel_size``."""

    spots_shape: ZYXInt = Field(
        (16, 128, 128), description="PTC-like spot volumes z, y, x (>= detection.predict.tile)"
    )
    spots_snr: PosFloat = Field(4.0, description="SNR = (I_obj - I_bg) / sqrt(I_obj)")
    spots_density: Literal["low", "medium", "high"] | PosFloat = Field(
        "medium", description="low | medium | high, or spots per 100^3 voxels"
    )
    spots_voxel_size: ZYXFloat = Field(
        (0.3, 0.1, 0.1), description="voxel size z, y, x (µm) of the spot volumes"
    )
    spots_sigma_xy: PosFloat = Field(1.0, description="spot PSF sigma in y, x (voxels)")
    spots_sigma_z: PosFloat = Field(0.7, description="spot PSF sigma in z (voxels)")
    spots_background: PosFloat = Field(10.0, description="mean background (photons)")
    spots_clutter: bool = Field(True, description="uneven background and out-of-class blobs")
    spots_click_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        0.3,
        description="share of the spots clicked in the train and val volumes (the few-click "
        "case; all spots in spots_<split>_all.csv); the val volume's left half (x < width/2) "
        "is fully clicked and declared in spots_val_region.csv; test stays complete",
    )
    nuclei_shape: ZYXInt = Field(
        (16, 96, 96),
        description="touching nuclei volumes z, y, x "
        "(fluorescence, label-free, labels); >= segmentation tile",
    )
    nuclei_count: PosInt = Field(12, description="nuclei per volume")
    nuclei_radius_range: tuple[PosFloat, PosFloat] = Field(
        (5.0, 9.0), description="nucleus radius range (y, x voxels)"
    )
    nuclei_voxel_size: ZYXFloat = Field(
        (0.5, 0.25, 0.25), description="voxel size z, y, x (µm) of the nuclei volumes"
    )


class DemoConfig(ConfigModel):
    """Synthetic demo inputs, written by rule make_demo_data into ``output_dir``. Sample-sheet
    paths under that folder need not exist before the run."""

    enabled: bool = Field(True, description="generate the demo inputs (false for your own data)")
    output_dir: str = Field("demo_data", min_length=1, description="folder of the demo files")
    params: DemoParams = Field(
        default_factory=DemoParams, description="passed to `fewlabel make-demo`"
    )


class IngestConfig(ConfigModel):
    """Ingest: every input becomes a chunked OME-Zarr (NGFF 0.5, zarr v3, Blosc-zstd)."""

    chunks: ZYXInt = Field((16, 128, 128), description="chunk shape z, y, x (voxels)")
    compression_level: Annotated[int, Field(ge=1, le=9)] = Field(3, description="zstd level 1..9")
    pyramid_min_voxels: NonNegInt = Field(
        2**24,
        description="volumes of at least this many voxels get a multiscale pyramid (levels 2x "
        "smaller in y, x, and z once near-isotropic) in every OME-Zarr output, for fast viewing "
        "in napari / Fiji; 0: every volume larger than pyramid_max_side",
    )
    pyramid_max_side: PosInt = Field(
        256, description="pyramid levels are added until the largest side is at most this"
    )


class RoiConfig(ConfigModel):
    """ROI segmentation (few-shot particle picking §2.2; :mod:`fewlabel.roi`): smoothing,
    clipping + CLAHE, 2-Gaussian mixture, erosion / dilation, and the PU class prior.

    Notes on the defaults
    ---------------------
    clip_percentiles : 0.5 / 99.8 drops dead pixels and the few saturated voxels without
        touching particles.
    smooth_sigma_um : 0.15 µm is about the σ of a diffraction-limited spot: per-voxel Poisson
        noise drops ~3x while a spot keeps most of its peak. Raise it for larger particles.
        Below half a voxel on every axis (coarse voxels) it is raised to 0.5 voxel (warning).
    clahe_kernel_um : 2 µm spans a few particle diameters: local background is equalised while
        particles stay brighter than it (at 0.3 x 0.1 x 0.1 µm voxels a region holds ~2700
        voxels). ``clahe_kernel_voxels`` overrides it (volumes whose voxel size is unknown).
        A region below 2 voxels along an axis or 64 voxels in all (2 µm at 5 x 2 x 2 µm
        voxels is 1 voxel) is raised to 8 voxels on every shorter axis (warning, roi.json).
    clahe_clip_limit : skimage's definition (a fraction of the region's voxels per histogram
        bin). 0.005 is a mild correction that keeps the shape of the histogram, which the
        mixture needs: large limits (≥ 0.03) equalise each region to a flat histogram in which
        a sparse particle tail is no longer a separate component. A limit of at most one count
        per bin (≤ 1 / region voxels) makes CLAHE a global linear map (no local correction);
        raise the limit only for strongly uneven background.
    posterior_threshold : 0.5 is the Bayes decision.
    max_fit_voxels : 1e6 (whole random chunks) fixes the mixture to ~1e-3 and costs 4 MB.
    erosion_radius_um : 0.1 µm (about one lateral voxel) removes isolated foreground voxels; a
        radius below one voxel on every axis is a no-op.
    extend_radius_um : the margin around particles that must stay in the ROI (particle
        extent, blur, localisation slack).
    gate_prediction : on by default (issues 11, 13: the ROI says where particles can be, so
        detection prediction — density, slab jobs and PU — skips every tile without an ROI
        voxel; the fraction of tiles holding ROI voxels sets the speed-up; ROI voxels are
        unchanged). Off: a detection run that does not depend on the ROI being right.
        Segmentation stages are never gated by the workflow: their label-free images have no
        bright-particle ROI.
    """

    enabled: bool = Field(True, description="segment the ROI of every sample")
    gate_prediction: bool = Field(
        True,
        description="detection prediction computes only tiles holding ROI voxels (0 elsewhere; "
        "ROI voxels unchanged); needs enabled; segmentation is never gated",
    )
    clip_percentiles: Percentiles = Field(
        (0.5, 99.8), description="intensity clipping (low, high percentiles) before CLAHE"
    )
    smooth_sigma_um: NonNegFloat = Field(
        0.15, description="Gaussian pre-smoothing sigma (µm; 0: off); single voxels are too noisy"
    )
    clahe_kernel_um: ZYXFloat = Field(
        (2.0, 2.0, 2.0), description="CLAHE context size z, y, x (µm)"
    )
    clahe_kernel_voxels: ZYXInt | None = Field(
        None, description="CLAHE context z, y, x in voxels (overrides clahe_kernel_um)"
    )
    clahe_clip_limit: Annotated[float, Field(gt=0, le=1)] = Field(
        0.005, description="CLAHE clip limit in (0, 1]; >= 0.03 flattens the spot tail"
    )
    posterior_threshold: OpenFraction = Field(
        0.5, description="foreground where P(bright component | intensity) exceeds this"
    )
    max_fit_voxels: Annotated[int, Field(ge=1000)] = Field(
        1_000_000, description="voxels sampled for the percentiles and the 2-Gaussian mixture"
    )
    erosion_radius_um: NonNegFloat = Field(
        0.1, description="erosion ball radius (µm): removes artefacts smaller than this"
    )
    extend_radius_um: NonNegFloat = Field(
        1.0, description="dilation ball radius (µm): margin kept around particles"
    )
    expected_particles: PosInt | None = Field(
        None, description="k, expected particles per volume (for the class prior pi), or null"
    )
    particle_radius_um: PosFloat | None = Field(
        None, description="r, particle radius in µm (for pi), or null; give both or neither"
    )

    @model_validator(mode="after")
    def _prior_pair(self) -> RoiConfig:
        if (self.expected_particles is None) != (self.particle_radius_um is None):
            raise ValueError(
                "expected_particles and particle_radius_um must be given together (or both null)"
            )
        return self


class DetectionEvalConfig(ConfigModel):
    """``evaluate_sample``: one-to-one Hungarian matching of predicted to ground-truth points."""

    gate: PosFloat = Field(
        0.5,
        description="matching gate (pairs farther apart never match); also the gate that "
        "tunes detection thresholds unless detection.train.gate / detection.log.gate is set",
    )
    gate_unit: Unit = Field("um", description="um | voxel (um: coordinates x voxel size first)")


class SegmentationEvalConfig(ConfigModel):
    """``evaluate_segmentation``: instance metrics and the ISL PCC."""

    centre_gate_um: PosFloat | None = Field(
        None,
        description="centroid gate (µm) for "
        "detection F1 (null: half the median GT "
        "equivalent diameter)",
    )
    fluo_channel: NonNegInt = Field(
        0, description="channel of a CZYX fluorescence image used for the PCC"
    )


class EvaluationConfig(ConfigModel):
    """Evaluation against ground truth (test split)."""

    detection: DetectionEvalConfig = Field(
        default_factory=DetectionEvalConfig, description="detection metrics"
    )
    segmentation: SegmentationEvalConfig = Field(
        default_factory=SegmentationEvalConfig, description="segmentation metrics"
    )


class ReportConfig(ConfigModel):
    """The run report (results/report/report.html)."""

    title: str = Field("fewlabel run report", description="report title")
