"""Region of interest (ROI) for few-shot particle picking (seed: Vedrenne et al., §2.2).

The ROI restricts where unlabelled (PU) training windows are drawn and gives the class prior
π used by the PU loss. All arrays are ZYX voxels; physical sizes use the OME-Zarr voxel size.

1. **Denoising** (addition to the seed, ``smooth_sigma_um``, 0 disables it): a Gaussian filter
   of σ µm. At the photon counts of fluorescence spots single voxels are too noisy for a
   per-voxel mixture; smoothing at sub-particle scale keeps particles and removes speckle.
2. **Histogram correction.** Percentile clipping with global percentiles ``(low, high)`` from a
   bounded random subsample (:func:`fewlabel.normalize.sample_voxels`, the estimator of
   :func:`fewlabel.normalize.percentile_range`): ``x' = clip((x - low)/(high - low), 0, 1)``;
   then CLAHE (Zuiderveld 1994, :func:`skimage.exposure.equalize_adapthist`) with a
   contextual-region size in µm (converted to voxels) and a clip limit. CLAHE flattens uneven
   background so one intensity threshold fits the whole volume.
3. **Two-component Gaussian mixture** fitted by EM (Dempster et al. 1977; Bishop, PRML
   §9.2.2) on a bounded subsample of corrected intensities. Foreground where the posterior of
   the bright component ``P(b | x) = w_b N(x|μ_b,σ_b²) / Σ_k w_k N(x|μ_k,σ_k²)`` exceeds a
   threshold, applied as an intensity threshold (:func:`foreground_threshold`).
4. **Morphology.** Binary erosion with a ball of ``erosion_radius_um`` (removes small
   artefacts), then dilation with a ball of ``extend_radius_um`` (keeps an extended area around
   the particles). Balls are Euclidean in µm (anisotropic voxels), computed exactly with
   distance transforms.
Coarse voxels and degenerate fits (:func:`checked_smooth_sigma`, :func:`checked_clahe_kernel`,
:func:`mixture_degeneracy`): a smoothing σ below half a voxel on every axis is raised to 0.5
voxel; a CLAHE region below 2 voxels along an axis or 64 voxels in all (2 µm at 5 x 2 x 2 µm
voxels is 1 voxel) is raised to 8 voxels per shorter axis; both warn and are recorded in
roi.json ``adjusted``. A mixture with a component below 0.1 % of the weight or with
overlapping components (Ashman's D < 1) is degenerate: the foreground is then Otsu's
threshold on the same sample (or the whole volume when that split is as unbalanced), with a
warning and roi.json ``fallback``.

5. **Class prior.** With ``k`` expected particles of radius ``r`` µm:
   ``π = k · (4/3)πr³ / |ROI|`` (|ROI| in µm³); the smallest mini-batch that holds one positive
   in expectation is ``⌈1/π⌉``.

Block processing and exactness
------------------------------
Nothing holds the volume: percentiles and the mixture use random whole chunks (bounded count),
and every pass runs block by block over the input chunks with
:func:`fewlabel.blocks.map_blocks`, reading from lazy views (:mod:`~fewlabel.roi.views`) that
compute a requested block from their source grown by the operator's reach. Three passes:
(a) smoothed intensities quantised to CLAHE grey levels (uint16, :class:`QuantisedView` of
:class:`SmoothedView`), (b) CLAHE of those levels (:class:`ClaheView`), both staged in
temporary Zarrs next to the output (deleted at the end), (c) the mask from (b) with the
morphology halo; the mixture is fitted on a subsample of (b). Halo reads go through
:class:`~fewlabel.io.chunk_cache.CachedChunks`, so a chunk is decoded about once per pass
instead of once per neighbouring block (up to 27 times).

* smoothing and erosion + dilation are local (reach ``int(4σ + 0.5)`` and
  ``r_erode + r_extend`` voxels), so block-wise equals whole-volume exactly;
* CLAHE is not local: ``equalize_adapthist`` stretches each input to its own min/max, anchors
  its grid of contextual regions at the array origin and interpolates between neighbouring
  regions. Applied naively per block plus a halo it only approximates whole-volume CLAHE, and
  poorly (a background-only block is stretched like a whole volume; a shifted grid changes
  every mapping). :func:`quantise` therefore uses the *global* clip range, the CLAHE core
  (:func:`~fewlabel.roi.clahe.clahe_levels`, scikit-image's algorithm voxel for voxel, tested
  against it) does not stretch per input, and :func:`clahe_context` grows each block to the
  region grid of the whole volume (0.5-1.5 regions per side), so every voxel sees the same
  regions and mappings as in the whole volume. The block-wise ROI equals the whole-volume ROI
  voxel for voxel (tested). Only the region histograms read the context; the interpolation
  (the costly part) runs on the block's own voxels.

Modules: :mod:`~fewlabel.roi.mixture` (step 3), :mod:`~fewlabel.roi.correction` (steps 1-2),
:mod:`~fewlabel.roi.clahe` (the CLAHE core), :mod:`~fewlabel.roi.views` (the lazy views),
:mod:`~fewlabel.roi.morphology` (step 4), :mod:`~fewlabel.roi.prior` (step 5),
:mod:`~fewlabel.roi.kernels` (bounded µm → voxel conversion: a kernel larger than both 256
voxels and the volume's largest side is a ConfigError, e.g. a voxel size in metres) and
:mod:`~fewlabel.roi.segment` (the stage).

Speed (issue 13, ``benchmarks/performance/roi_scaling.md``): the CLAHE core evaluates the
interpolation only on the block (scikit-image's on the whole context tile, 1.5-2.4x the
block), with flat gathers instead of region-block rearrangement; balls of a few voxels are
dilated by an exact decomposition into bit-packed row shifts instead of a distance transform
(:func:`~fewlabel.roi.morphology.dilate_by_ball`); the chunk cache removes repeated decoding.

Memory: per worker one CLAHE tile (≤ ``ClaheView.max_tile_bytes`` by
:func:`clahe_tile_bytes`: ~12 bytes per context voxel plus a 256-bin int64 histogram per
contextual region) or one morphology block (a few bytes per voxel), the chunk cache (at most
three z-rows of chunks, ≤ 256 MiB) plus ``max_fit_voxels`` floats: independent of the number
of planes. CLAHE's cost grows with the number of regions: 1-voxel regions are slow and
memory-hungry, hence the 8-voxel minimum.
"""

from fewlabel.roi.clahe import clahe_levels
from fewlabel.roi.correction import (
    _CLAHE_CORE,
    _CLAHE_LEVELS,
    LEVELS,
    checked_clahe_kernel,
    checked_smooth_sigma,
    clahe_kernel_voxels,
    correct_block,
    quantise,
)
from fewlabel.roi.kernels import MAX_KERNEL_VOXELS, kernel_voxels
from fewlabel.roi.mixture import (
    GaussianMixture2,
    fit_gmm_1d,
    foreground_threshold,
    mixture_degeneracy,
    otsu_threshold,
)
from fewlabel.roi.morphology import ball_radii_voxels, erode_dilate, within_distance
from fewlabel.roi.prior import PI_HIGH, PI_LOW, class_prior, prior_warnings
from fewlabel.roi.segment import segment_roi
from fewlabel.roi.views import (
    ClaheView,
    CorrectedView,
    QuantisedView,
    SmoothedView,
    clahe_context,
    clahe_tile_bytes,
)

__all__ = [
    "LEVELS",
    "MAX_KERNEL_VOXELS",
    "PI_HIGH",
    "PI_LOW",
    "ClaheView",
    "CorrectedView",
    "GaussianMixture2",
    "QuantisedView",
    "SmoothedView",
    "_CLAHE_CORE",
    "_CLAHE_LEVELS",
    "ball_radii_voxels",
    "checked_clahe_kernel",
    "checked_smooth_sigma",
    "clahe_context",
    "clahe_kernel_voxels",
    "clahe_levels",
    "clahe_tile_bytes",
    "class_prior",
    "correct_block",
    "erode_dilate",
    "fit_gmm_1d",
    "foreground_threshold",
    "kernel_voxels",
    "mixture_degeneracy",
    "otsu_threshold",
    "prior_warnings",
    "quantise",
    "segment_roi",
    "within_distance",
]
