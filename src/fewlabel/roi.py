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
5. **Class prior.** With ``k`` expected particles of radius ``r`` µm:
   ``π = k · (4/3)πr³ / |ROI|`` (|ROI| in µm³); the smallest mini-batch that holds one positive
   in expectation is ``⌈1/π⌉``.

Block processing and exactness
------------------------------
Nothing holds the volume: percentiles and the mixture use random whole chunks (bounded count),
and every pass runs block by block over the input chunks with
:func:`fewlabel.blocks.map_blocks`, reading from lazy views (:class:`SmoothedView`,
:class:`CorrectedView`) that compute a requested block from the raw block grown by the
operators' reach. The corrected volume is computed once and staged as CLAHE grey levels
(uint16) in a temporary Zarr next to the output (deleted at the end); the mixture is fitted on
a subsample of it and the mask pass reads it with the morphology halo.

* smoothing and erosion + dilation are local (reach ``int(4σ + 0.5)`` and
  ``r_erode + r_extend`` voxels), so block-wise equals whole-volume exactly;
* CLAHE is not local: ``equalize_adapthist`` stretches each input to its own min/max, anchors
  its grid of contextual regions at the array origin and interpolates between neighbouring
  regions. Applied naively per block plus a halo it only approximates whole-volume CLAHE, and
  poorly (a background-only block is stretched like a whole volume; a shifted grid changes
  every mapping). :func:`correct_block` therefore quantises with the *global* clip range and
  calls the CLAHE core without per-input stretching, and :func:`clahe_context` grows each block
  to the region grid of the whole volume (0.5-1.5 regions per side), so every voxel sees the
  same regions and mappings as in the whole volume. The block-wise ROI then equals the
  whole-volume ROI voxel for voxel (tested; the tests require >= 98% so that the fallback to
  the public ``equalize_adapthist``, used if the core's API changes, stays acceptable).

Memory: per worker one CLAHE tile (≤ ``CorrectedView.max_tile_voxels`` context voxels at ~50
bytes each inside scikit-image's CLAHE) or one morphology block (~18 bytes per voxel), plus
``max_fit_voxels`` floats: independent of the volume size.
"""

from __future__ import annotations

import logging
import math
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from fewlabel.blocks import map_blocks, reduce_blocks
from fewlabel.config import RoiConfig
from fewlabel.errors import InputDataError
from fewlabel.io import atomic_path, create_ome_zarr, open_ome_zarr
from fewlabel.normalize import sample_voxels

log = logging.getLogger(__name__)

PI_HIGH = 0.5
PI_LOW = 1e-4
LEVELS = 2**14 - 1
"""Corrected intensities are CLAHE grey levels 0..LEVELS (skimage's 2¹⁴ levels); x = level/LEVELS."""


# --------------------------------------------------------------------------- mixture model
@dataclass(frozen=True)
class GaussianMixture2:
    """A 1D two-component Gaussian mixture, components sorted by mean (index 1 = bright)."""

    means: tuple[float, float]
    variances: tuple[float, float]
    weights: tuple[float, float]
    log_likelihood: float
    n_iter: int
    converged: bool

    def log_odds_bright(self, x: np.ndarray) -> np.ndarray:
        """``log P(bright | x) − log P(dark | x)`` as float32 (no overflow for any ``x``)."""
        x = np.asarray(x, dtype=np.float32)
        (m0, m1), (v0, v1), (w0, w1) = self.means, self.variances, self.weights
        const = np.float32(math.log(w1 / w0) - 0.5 * math.log(v1 / v0))
        return const - np.float32(0.5) * ((x - np.float32(m1)) ** 2 / np.float32(v1)
                                          - (x - np.float32(m0)) ** 2 / np.float32(v0))

    def posterior_bright(self, x: np.ndarray) -> np.ndarray:
        """``P(bright | x) = w_1 N(x|μ_1,σ_1²) / Σ_k w_k N(x|μ_k,σ_k²)``."""
        return (1.0 / (1.0 + np.exp(-np.clip(self.log_odds_bright(x), -80, 80)))).astype(
            np.float32)


def fit_gmm_1d(
    values: np.ndarray,
    *,
    init_bright_fraction: float = 0.02,
    bins: int = 4096,
    max_iter: int = 2000,
    tol: float = 1e-10,
    min_sd_fraction: float = 0.005,
    sample: str | None = None,
) -> GaussianMixture2:
    """Fit a two-component 1D Gaussian mixture by EM (Dempster et al. 1977; PRML §9.2.2).

    E-step ``γ_i1 = w_1 N(x_i|μ_1,σ_1²) / Σ_k w_k N(x_i|μ_k,σ_k²)``; M-step ``N_k = Σ_i γ_ik``,
    ``w_k = N_k/N``, ``μ_k = Σ_i γ_ik x_i / N_k``, ``σ_k² = Σ_i γ_ik (x_i − μ_k)² / N_k``.
    The sums run over a ``bins``-bin histogram (count-weighted bin centres; the binning error
    is negligible next to σ and makes EM cost independent of the sample size). σ_k is floored
    at ``min_sd_fraction`` of the value range: clipped or quantised values (CLAHE's top level)
    otherwise attract a zero-variance component of unbounded likelihood.

    Initialisation: the bright component starts on the brightest ``init_bright_fraction`` of
    the values. Particles are usually a sparse bright tail of the histogram; an Otsu-style
    split initialisation converges instead to a split of the (non-Gaussian) background into
    two overlapping halves, an equally likely local optimum that is useless for a ROI. When
    the foreground is a large mode, EM moves from the tail to that mode.

    Raises InputDataError (naming ``sample``) for constant values or a degenerate fit (a
    component with < 1e-4 of the weight, or equal means).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if x.size < 10 or not hi > lo:
        raise InputDataError(
            "intensities are constant after histogram correction; no foreground/background "
            "mixture can be fitted.", sample=sample,
            fix="check the channel and the input image; an empty or saturated volume has no ROI.")
    counts, edges = np.histogram(x, bins=bins, range=(lo, hi))
    keep = counts > 0
    c = counts[keep].astype(np.float64)
    xs = (0.5 * (edges[:-1] + edges[1:]))[keep]
    n = c.sum()
    if xs.size < 2:
        raise InputDataError("intensity histogram has a single populated level after "
                             "correction; no mixture can be fitted.", sample=sample,
                             fix="check the channel and the input image.")
    # bright start: the top populated bins holding init_bright_fraction of the values
    from_top = np.cumsum(c[::-1])[::-1]  # values in this bin and all brighter ones
    n_bright = int(np.clip(np.count_nonzero(from_top <= init_bright_fraction * n), 1,
                           xs.size - 1))
    g1 = np.zeros_like(xs)
    g1[xs.size - n_bright:] = 1.0
    floor = (min_sd_fraction * (hi - lo)) ** 2
    prev = -np.inf
    ll = -np.inf
    converged = False
    n_iter = 0
    m0 = m1 = v0 = v1 = w1 = 0.0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - reported after the loop
        # M-step from the responsibilities of the bright component (γ_i0 = 1 − γ_i1)
        n1 = float((c * g1).sum())
        n0 = n - n1
        if min(n0, n1) < 1e-9 * n:
            break
        m0 = float((c * (1 - g1) * xs).sum() / n0)
        m1 = float((c * g1 * xs).sum() / n1)
        v0 = max(float((c * (1 - g1) * (xs - m0) ** 2).sum() / n0), floor)
        v1 = max(float((c * g1 * (xs - m1) ** 2).sum() / n1), floor)
        w1 = n1 / n
        # E-step in the log domain
        l0 = math.log(1 - w1) - 0.5 * math.log(2 * math.pi * v0) - 0.5 * (xs - m0) ** 2 / v0
        l1 = math.log(w1) - 0.5 * math.log(2 * math.pi * v1) - 0.5 * (xs - m1) ** 2 / v1
        log_norm = np.logaddexp(l0, l1)
        g1 = np.exp(l1 - log_norm)
        ll = float((c * log_norm).sum() / n)
        if abs(ll - prev) < tol * max(1.0, abs(ll)):
            converged = True
            break
        prev = ll
    if not 1e-4 <= w1 <= 1 - 1e-4:
        raise InputDataError(
            f"degenerate intensity mixture: one component holds {min(w1, 1 - w1):.2e} of the "
            "voxels, so foreground and background cannot be separated.", sample=sample,
            fix="check that the volume contains particles; try other roi.clip_percentiles, "
                "roi.smooth_sigma_um or roi.clahe_kernel_um.")
    if abs(m1 - m0) < 1e-3 * (hi - lo):
        raise InputDataError("degenerate intensity mixture: both components have the same mean.",
                             sample=sample, fix="check that the volume contains particles.")
    if not converged:
        log.warning("sample %s: mixture EM stopped after %d iterations before converging",
                    sample, max_iter)
    comps = sorted([(float(m0), float(v0), float(1 - w1)), (float(m1), float(v1), float(w1))])
    return GaussianMixture2(means=(comps[0][0], comps[1][0]),
                            variances=(comps[0][1], comps[1][1]),
                            weights=(comps[0][2], comps[1][2]), log_likelihood=ll,
                            n_iter=n_iter, converged=converged)


def foreground_threshold(gmm: GaussianMixture2, posterior_threshold: float) -> tuple[float, bool]:
    """Corrected intensity above which voxels are foreground, and whether the posterior gave it.

    ``x_t = min{x ≥ μ_dark : P(bright | x) > t}`` on a fine grid up to ``μ_bright``; voxels with
    ``x ≥ x_t`` are foreground. Thresholding along increasing intensity keeps the decision
    monotone: with unequal variances ``P(bright | x)`` falls again in the far tail of the wider
    component, which would call the brightest voxels background. If the bright component never
    dominates (it sits on the shoulder of a wide background), ``x_t = μ_bright`` and the second
    value is False.
    """
    t = float(posterior_threshold)
    grid = np.linspace(gmm.means[0], gmm.means[1], 4097, dtype=np.float32)
    above = np.flatnonzero(gmm.log_odds_bright(grid) > math.log(t / (1.0 - t)))
    if above.size:
        return float(grid[above[0]]), True
    return float(np.float32(gmm.means[1])), False


# --------------------------------------------------------------------------- intensity correction
def _clahe_core() -> tuple[Any, int]:
    """skimage's CLAHE core (no per-image stretching) and its grey-level count, if usable."""
    try:
        from skimage.exposure import _adapthist

        core, levels = _adapthist._clahe, int(_adapthist.NR_OF_GRAY)
        probe = core(np.zeros((4, 4), np.uint16), [2, 2], 0.01, 256)
        if np.shape(probe) != (4, 4):
            raise TypeError("unexpected CLAHE core output")
        return core, levels
    except Exception:  # noqa: BLE001 - any API change: fall back to the public function
        log.warning("scikit-image CLAHE core unavailable; using equalize_adapthist per block "
                    "(block-wise ROI then only approximates whole-volume ROI)")
        return None, 0


_CLAHE_CORE, _CLAHE_LEVELS = _clahe_core()


def correct_block(block: np.ndarray, low: float, high: float, kernel: Sequence[int],
                  clip_limit: float, nbins: int = 256) -> np.ndarray:
    """Percentile clipping to [0, 1] then CLAHE; returns float32 in [0, 1] (ZYX).

    ``x' = clip((x − low)/(high − low), 0, 1)`` is quantised to CLAHE's 2¹⁴ grey levels over
    the *global* range [0, 1] and equalised by the core of
    :func:`skimage.exposure.equalize_adapthist` (identical algorithm, without the public
    function's stretching of each input and output to its own min/max, which would make
    blocks disagree). Size-1 axes are dropped (2D images get 2D CLAHE).
    """
    x = np.asarray(block, dtype=np.float32)
    x = x - np.float32(low)  # new array: never modify the caller's block
    x *= np.float32(1.0 / (high - low))
    np.clip(x, 0.0, 1.0, out=x)
    squeeze = tuple(a for a in range(x.ndim) if x.shape[a] == 1)
    kern = [int(k) for a, k in enumerate(kernel) if a not in squeeze]
    image = np.squeeze(x, axis=squeeze)
    if image.ndim == 0:
        return x
    if _CLAHE_CORE is not None:
        levels = _CLAHE_LEVELS - 1  # == LEVELS
        image *= np.float32(levels)
        quantised = np.rint(image).astype(np.uint16)
        del x, image
        out = _CLAHE_CORE(quantised, kern, clip_limit, nbins)
        del quantised
        out = out.astype(np.float32)
        out *= np.float32(1.0 / levels)
    else:  # pragma: no cover - only with an incompatible scikit-image
        from skimage.exposure import equalize_adapthist

        if image.max() <= image.min():
            return x
        out = equalize_adapthist(image, kernel_size=kern, clip_limit=clip_limit, nbins=nbins)
    return np.asarray(out, dtype=np.float32).reshape(block.shape)


def clahe_kernel_voxels(params: RoiConfig, voxel_size: Sequence[float],
                        shape: Sequence[int]) -> tuple[int, int, int]:
    """CLAHE region size in voxels (z, y, x): µm / voxel size, rounded, within [1, shape]."""
    if params.clahe_kernel_voxels is not None:
        raw = [float(v) for v in params.clahe_kernel_voxels]
    else:
        raw = [k / v for k, v in zip(params.clahe_kernel_um or (), voxel_size, strict=True)]
    return tuple(int(min(max(round(k), 1), max(s, 1)))  # type: ignore[return-value]
                 for k, s in zip(raw, shape, strict=True))


class _LazyView:
    """Read-only ZYX array computed block by block from ``source`` (numpy-style slicing)."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.shape = tuple(int(s) for s in source.shape)
        self.chunks = tuple(getattr(source, "chunks", None) or self.shape)
        self.ndim = 3
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: Any) -> np.ndarray:
        if key is Ellipsis:
            key = (slice(None),) * 3
        if not isinstance(key, tuple) or len(key) != 3 or not all(
                isinstance(k, slice) and k.step in (None, 1) for k in key):
            raise IndexError(f"{type(self).__name__} supports only [z0:z1, y0:y1, x0:x1]")
        block = tuple(slice(*sl.indices(n)[:2]) for sl, n in zip(key, self.shape, strict=True))
        return self._compute(block)

    def _compute(self, block: tuple[slice, ...]) -> np.ndarray:
        raise NotImplementedError


class SmoothedView(_LazyView):
    """``gaussian_filter(source, σ)`` (reflect at the volume border), float32, block-wise exact.

    A block is computed from the source grown by the filter radius ``int(4σ + 0.5)`` per axis,
    so it equals the same block of the whole-volume filter.
    """

    def __init__(self, source: Any, sigma_voxels: Sequence[float]) -> None:
        super().__init__(source)
        self.sigma = tuple(float(s) for s in sigma_voxels)
        self.radius = tuple(int(4.0 * s + 0.5) for s in self.sigma)

    def _compute(self, block: tuple[slice, ...]) -> np.ndarray:
        outer = tuple(slice(max(b.start - r, 0), min(b.stop + r, n))
                      for b, r, n in zip(block, self.radius, self.shape, strict=True))
        data = np.asarray(self.source[outer], dtype=np.float32)
        if any(s > 0 for s in self.sigma):
            data = ndimage.gaussian_filter(data, self.sigma, mode="reflect", truncate=4.0)
        return data[tuple(slice(b.start - o.start, b.stop - o.start)
                          for b, o in zip(block, outer, strict=True))]


class CorrectedView(_LazyView):
    """Histogram-corrected intensities (:func:`correct_block`), float32 in [0, 1].

    ``view[block]`` reads ``source`` over :func:`clahe_context` (0.5 to 1.5 CLAHE regions per
    side, start snapped to the region grid), so the result equals the same block of
    whole-volume correction.
    """

    def __init__(self, source: Any, low: float, high: float, kernel: Sequence[int],
                 clip_limit: float) -> None:
        super().__init__(source)
        self.low, self.high, self.clip_limit = float(low), float(high), float(clip_limit)
        self.kernel = tuple(int(k) for k in kernel)

    max_tile_voxels: int = 2_000_000
    """Blocks whose CLAHE context exceeds this are computed in halves (CLAHE needs ~50 bytes
    per context voxel, so ~100 MB per tile); exact either way, the split only trades memory
    for some recomputed context."""

    def _compute(self, block: tuple[slice, ...]) -> np.ndarray:
        outer = tuple(clahe_context(b, k, n)
                      for b, k, n in zip(block, self.kernel, self.shape, strict=True))
        sizes = [b.stop - b.start for b in block]
        if math.prod(o.stop - o.start for o in outer) > self.max_tile_voxels and max(sizes) > 1:
            axis = int(np.argmax(sizes))
            mid = block[axis].start + sizes[axis] // 2
            halves = [tuple(slice(b.start, mid) if a == axis else b for a, b in enumerate(block)),
                      tuple(slice(mid, b.stop) if a == axis else b for a, b in enumerate(block))]
            return np.concatenate([self._compute(h) for h in halves], axis=axis)
        out = correct_block(np.asarray(self.source[outer]), self.low, self.high, self.kernel,
                            self.clip_limit)
        return out[tuple(slice(b.start - o.start, b.stop - o.start)
                         for b, o in zip(block, outer, strict=True))]


def clahe_context(block: slice, k: int, size: int) -> slice:
    """The input range CLAHE needs to compute ``block`` exactly along one axis (region ``k``).

    skimage's CLAHE anchors regions ``[jk, (j+1)k)`` at the array origin and maps a voxel
    ``p`` by interpolating the mappings of regions ``J-1`` and ``J``, ``J = ⌊(p + ⌊k/2⌋)/k⌋``.
    The context therefore starts at the region boundary ``(J(start) - 1)k`` (a multiple of
    ``k``, so the grid is the whole volume's) and ends after region ``J(stop - 1)``: 0.5 to 1.5
    regions per side, clipped to the volume (whose border CLAHE treats the same way then).
    """
    start = max(((block.start + k // 2) // k - 1) * k, 0)
    stop = min((((block.stop - 1) + k // 2) // k + 2) * k, size)
    return slice(start, stop)


# --------------------------------------------------------------------------- morphology
def ball_radii_voxels(radius_um: float, voxel_size: Sequence[float]) -> tuple[int, int, int]:
    """Half-extent in voxels (z, y, x) of the Euclidean ball of ``radius_um`` µm."""
    return tuple(int(math.floor(radius_um / v * (1 + 1e-6))) for v in voxel_size)  # type: ignore[return-value]


def erode_dilate(mask: np.ndarray, voxel_size: Sequence[float], erosion_um: float,
                 extend_um: float) -> np.ndarray:
    """Erode with the ball of ``erosion_um`` then dilate with the ball of ``extend_um`` (µm).

    Ball = ``{d : Σ_a (d_a v_a)² ≤ r²}``. Both use Euclidean distance transforms with the
    voxel size as sampling (exact, cost independent of the radius). Outside the array counts
    as foreground for the erosion (objects cut by the border are not eroded away) and as
    background for the dilation. Local: a voxel depends on inputs within
    ``ball_radii_voxels(erosion) + ball_radii_voxels(extend)`` voxels.
    """
    mask = np.asarray(mask, dtype=bool)
    if erosion_um > 0 and mask.any() and not mask.all() and max(
            ball_radii_voxels(erosion_um, voxel_size)) >= 1:
        mask = ~within_distance(~mask, erosion_um, voxel_size)
    if extend_um > 0 and mask.any() and not mask.all() and max(
            ball_radii_voxels(extend_um, voxel_size)) >= 1:
        mask = within_distance(mask, extend_um, voxel_size)
    return mask


def within_distance(targets: np.ndarray, radius_um: float, voxel_size: Sequence[float],
                    *, slab: int = 8) -> np.ndarray:
    """Voxels whose Euclidean distance (µm) to the nearest ``True`` voxel of ``targets`` is ≤ r.

    Uses the feature transform of :func:`scipy.ndimage.distance_transform_edt` (nearest target
    index per voxel, int32) and forms squared distances slab by slab in float32, so memory is
    ~13 bytes per voxel instead of ~50 for the float64 distance map.
    """
    targets = np.asarray(targets, dtype=bool)
    if not targets.any():
        return np.zeros(targets.shape, bool)
    sampling = [float(v) for v in voxel_size][-targets.ndim:]
    nearest = ndimage.distance_transform_edt(~targets, sampling=sampling, return_distances=False,
                                             return_indices=True)
    limit = np.float32(radius_um * radius_um * (1 + 1e-6) ** 2)
    out = np.empty(targets.shape, bool)
    shape = targets.shape
    for z0 in range(0, shape[0], slab):
        z1 = min(z0 + slab, shape[0])
        d2 = np.zeros((z1 - z0, *shape[1:]), np.float32)
        for axis in range(targets.ndim):
            index_shape = [1] * targets.ndim
            index_shape[axis] = -1
            own = np.arange(z0, z1) if axis == 0 else np.arange(shape[axis])
            diff = (nearest[axis, z0:z1] - own.reshape(index_shape)).astype(np.float32)
            diff *= np.float32(sampling[axis])
            diff *= diff
            d2 += diff
        out[z0:z1] = d2 <= limit
    return out


# --------------------------------------------------------------------------- class prior
def class_prior(expected_particles: float, particle_radius_um: float,
                roi_volume_um3: float) -> tuple[float, int]:
    """``π = k · (4/3)πr³ / |ROI|`` and the minimal mini-batch ``⌈1/π⌉`` (Vedrenne et al. §2.2)."""
    if not roi_volume_um3 > 0:
        raise ValueError("ROI volume must be positive")
    pi = expected_particles * (4.0 / 3.0) * math.pi * particle_radius_um ** 3 / roi_volume_um3
    return pi, int(math.ceil(1.0 / pi))


def prior_warnings(pi: float, *, sample: str | None = None) -> list[str]:
    """Warnings for an implausible class prior (π > 0.5 or π < 1e-4); each is also logged."""
    out: list[str] = []
    if pi > PI_HIGH:
        out.append(f"class prior pi={pi:.4g} > {PI_HIGH}: particles would fill more than half "
                   "of the ROI; roi.expected_particles or roi.particle_radius_um is too large, or "
                   "the ROI too small (lower posterior_threshold / raise extend_radius_um).")
    elif pi < PI_LOW:
        out.append(f"class prior pi={pi:.3g} < {PI_LOW:g}: a mini-batch needs >= "
                   f"{math.ceil(1 / pi)} windows to hold one particle; roi.expected_particles "
                   "or roi.particle_radius_um is too small, or the ROI too large.")
    for message in out:
        log.warning("sample %s: %s", sample, message)
    return out


# --------------------------------------------------------------------------- the stage
def _to_levels(block: np.ndarray) -> np.ndarray:
    """Corrected intensities in [0, 1] → CLAHE grey levels (uint16, exact for the core)."""
    out = block * np.float32(LEVELS)
    return np.rint(out, out=out).astype(np.uint16)


def segment_roi(
    image_zarr_path: str | Path,
    mask_out_path: str | Path,
    json_out_path: str | Path,
    *,
    params: RoiConfig,
    sample: str,
    workers: int = 1,
    seed: int = 0,
    block_shape: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Segment the ROI of one ingested volume; write a uint8 OME-Zarr mask and a JSON summary.

    Parameters
    ----------
    image_zarr_path : single-channel ZYX OME-Zarr (from :func:`fewlabel.io.ingest_volume`).
    mask_out_path : ROI mask, uint8 0/1 OME-Zarr with the input's chunks and voxel size,
        written atomically.
    json_out_path : summary: roi_fraction, roi_voxels, total_voxels, roi_volume_um3, gmm
        (means, variances, weights on the corrected [0, 1] scale), threshold, clip range, CLAHE
        kernel, pi and min_batch_size (= ⌈1/π⌉, when k and r are configured), warnings.
    params : :class:`~fewlabel.config.RoiConfig` (the ``roi`` config section). sample : sample id (for messages).
    workers : threads over blocks. seed : seed of the chunk subsampling.
    block_shape : processing block (default: the input chunks). It must be whole chunks when
        ``workers > 1``; a single block covering the volume is whole-volume processing.

    Returns the summary dictionary. Memory: one grown block per worker plus
    ``max_fit_voxels`` floats, independent of the volume size; a temporary uint16 copy of the
    corrected volume is staged next to ``mask_out_path`` and removed at the end.
    """
    from fewlabel.runtime import write_json

    volume = open_ome_zarr(image_zarr_path, sample=sample)
    source = volume.array
    if source.ndim != 3:
        raise InputDataError(f"expected a single-channel ZYX volume, got shape {source.shape}.",
                             sample=sample, path=image_zarr_path,
                             fix="ingest one channel (sample sheet 'channel' column).")
    shape = tuple(int(s) for s in source.shape)
    voxel = tuple(float(v) for v in volume.voxel_size)
    chunks = tuple(int(c) for c in source.chunks)
    blocks_shape = tuple(int(b) for b in (block_shape or chunks))
    if workers > 1 and any(b % c and b < s for b, c, s in zip(blocks_shape, chunks, shape,
                                                              strict=True)):
        raise ValueError(f"block_shape {blocks_shape} is not whole chunks {chunks}")

    # 1-2. denoising and global clip percentiles from a bounded subsample of random chunks
    sigma_vox = tuple(params.smooth_sigma_um / v for v in voxel)
    smoothed: Any = SmoothedView(source, sigma_vox) if params.smooth_sigma_um > 0 else source
    values = sample_voxels(smoothed, max_voxels=params.max_fit_voxels, seed=seed)
    low, high = (float(v) for v in np.percentile(values, list(params.clip_percentiles)))
    del values
    if not high > low:
        raise InputDataError(
            f"volume is (nearly) constant: its {params.clip_percentiles[0]} and "
            f"{params.clip_percentiles[1]} percentiles are both {low:g}; no ROI can be found.",
            sample=sample, path=image_zarr_path,
            fix="check the channel and the input image (or widen roi.clip_percentiles).")
    kernel = clahe_kernel_voxels(params, voxel, shape)
    log.info("sample %s: shape=%s voxel=%s µm chunks=%s smoothing σ=%s voxels clip=[%g, %g] "
             "CLAHE region=%s voxels", sample, shape, voxel, chunks,
             tuple(round(s, 3) for s in sigma_vox), low, high, kernel)
    corrected = CorrectedView(smoothed, low, high, kernel, params.clahe_clip_limit)

    mask_out_path = Path(mask_out_path)
    mask_out_path.parent.mkdir(parents=True, exist_ok=True)
    scratch = mask_out_path.parent / f".{mask_out_path.name}.corrected-{uuid.uuid4().hex[:8]}"
    try:
        # 2b. corrected intensities, computed once per block, staged as CLAHE grey levels
        levels = create_ome_zarr(scratch, shape, np.uint16, chunks, voxel,
                                 name=f"{sample}:corrected", compression_level=1)
        map_blocks(_to_levels, corrected, levels, halo=0, block_shape=blocks_shape,
                   workers=workers, desc=f"{sample} CLAHE")

        # 3. mixture on a bounded subsample of corrected intensities (random whole chunks)
        fit_values = sample_voxels(levels, max_voxels=params.max_fit_voxels, seed=seed + 1)
        gmm = fit_gmm_1d(fit_values * np.float32(1.0 / LEVELS), sample=sample)
        del fit_values
        t = params.posterior_threshold
        cut, from_posterior = foreground_threshold(gmm, t)
        warnings: list[str] = []
        if not from_posterior:
            warnings.append(f"P(bright | x) never exceeds posterior_threshold={t:g} (the bright "
                            "component sits on the shoulder of the background); foreground = "
                            f"corrected intensities >= the bright mean {cut:.4g}.")
            log.warning("sample %s: %s", sample, warnings[-1])
        log.info("sample %s: GMM means=%s variances=%s weights=%s (%d EM iterations)", sample,
                 _fmt(gmm.means), _fmt(gmm.variances), _fmt(gmm.weights), gmm.n_iter)

        # 4. posterior threshold, erosion, dilation; exact block-wise with halo = sum of radii
        reach = [e + d for e, d in zip(ball_radii_voxels(params.erosion_radius_um, voxel),
                                       ball_radii_voxels(params.extend_radius_um, voxel),
                                       strict=True)]
        halo = tuple(min(r, s) for r, s in zip(reach, shape, strict=True))

        def segment(block: np.ndarray) -> np.ndarray:
            x = block.astype(np.float32)
            x *= np.float32(1.0 / LEVELS)
            foreground = x >= np.float32(cut)
            del x
            return erode_dilate(foreground, voxel, params.erosion_radius_um,
                                params.extend_radius_um).astype(np.uint8)

        with atomic_path(mask_out_path) as tmp:
            mask = create_ome_zarr(tmp, shape, np.uint8, chunks, voxel, name=f"{sample}:roi",
                                   extra_attrs={"sample": sample, "kind": "roi",
                                                "source": str(image_zarr_path)})
            map_blocks(segment, levels, mask, halo=halo, block_shape=blocks_shape,
                       workers=workers, desc=f"{sample} ROI")
            counts = reduce_blocks(lambda b: int(np.count_nonzero(b)), mask,
                                   block_shape=chunks, workers=workers)
            roi_voxels = int(sum(counts))
            if roi_voxels == 0:
                raise InputDataError(
                    "the ROI is empty (no voxel survives the posterior threshold and the "
                    "erosion).", sample=sample, path=image_zarr_path,
                    fix="lower roi.posterior_threshold or roi.erosion_radius_um.")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    total = int(np.prod(shape))
    summary: dict[str, Any] = {
        "sample": sample,
        "shape": list(shape),
        "voxel_size": list(voxel),
        "total_voxels": total,
        "roi_voxels": roi_voxels,
        "roi_fraction": roi_voxels / total,
        "roi_volume_um3": roi_voxels * float(np.prod(voxel)),
        "clip_range": [low, high],
        "smooth_sigma_voxels": list(sigma_vox),
        "clahe_kernel_voxels": list(kernel),
        "gmm": {"means": list(gmm.means), "variances": list(gmm.variances),
                "weights": list(gmm.weights), "log_likelihood": gmm.log_likelihood,
                "n_iter": gmm.n_iter, "converged": gmm.converged,
                "scale": "corrected intensity in [0, 1] (after clipping + CLAHE)"},
        "threshold": t,
        "intensity_threshold": cut,
        "threshold_from_posterior": from_posterior,
        "pi": None,
        "min_batch_size": None,
        "warnings": warnings,
        "params": params.model_dump(mode="json"),
    }
    if params.expected_particles is not None and params.particle_radius_um is not None:
        pi, batch = class_prior(params.expected_particles, params.particle_radius_um,
                                summary["roi_volume_um3"])
        summary["pi"] = pi
        summary["min_batch_size"] = batch
        summary["warnings"] = warnings + prior_warnings(pi, sample=sample)
    log.info("sample %s: ROI %d / %d voxels (%.2f%%), pi=%s, min batch=%s", sample, roi_voxels,
             total, 100.0 * summary["roi_fraction"], summary["pi"], summary["min_batch_size"])
    write_json(summary, json_out_path)
    return summary


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


__all__ = [
    "CorrectedView", "GaussianMixture2", "SmoothedView", "ball_radii_voxels",
    "clahe_context", "clahe_kernel_voxels", "class_prior", "correct_block", "erode_dilate",
    "fit_gmm_1d", "foreground_threshold", "prior_warnings", "segment_roi", "within_distance",
]
