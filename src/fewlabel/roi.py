"""Region of interest (ROI) for few-shot particle picking (seed: Vedrenne et al., §2.2).

The ROI restricts where unlabelled (PU) training windows are drawn and gives the class prior
π used by the PU loss. Steps, all in ZYX voxels with the voxel size from the OME-Zarr:

1. **Histogram correction.** Percentile clipping with global percentiles ``(low, high)`` from a
   bounded random subsample (:func:`fewlabel.normalize.sample_voxels`, as in
   :func:`fewlabel.normalize.percentile_range`): ``x' = clip((x - low) / (high - low), 0, 1)``;
   then CLAHE (:func:`skimage.exposure.equalize_adapthist`) with a contextual-region size given
   in µm (converted to voxels) and a clip limit.
2. **Two-component Gaussian mixture** fitted by EM (Dempster et al. 1977; Bishop, PRML §9.2.2)
   on a bounded subsample of corrected intensities. Foreground where the posterior of the
   bright component ``P(b | x) = w_b N(x|μ_b,σ_b²) / Σ_k w_k N(x|μ_k,σ_k²)`` exceeds a threshold.
3. **Morphology.** Binary erosion with a ball of ``erosion_radius_um`` (removes isolated bright
   voxels), then dilation with a ball of ``extend_radius_um`` (keeps an extended area around the
   particles). Balls are Euclidean in µm (anisotropic voxels), computed exactly with distance
   transforms.
4. **Class prior.** With ``k`` expected particles of radius ``r`` µm:
   ``π = k · (4/3)πr³ / |ROI|`` (|ROI| in µm³); the smallest mini-batch that holds one positive
   in expectation is ``⌈1/π⌉``.

Block processing and its exactness
----------------------------------
Everything runs block-wise over the input chunks with :func:`fewlabel.blocks.map_blocks`, so
memory is bounded by a few blocks, never the volume. Erosion then dilation is local: with a
halo of ``erosion + extend`` radius (voxels per axis) the block-wise mask equals the
whole-volume mask exactly. CLAHE is *not* strictly local: ``equalize_adapthist`` rescales each
input to its own min/max, anchors its grid of contextual regions at the array origin and
interpolates between neighbouring regions. Applied to a block plus a halo of two region sizes
it is therefore an approximation of whole-volume CLAHE (same regions' statistics within ~1.5
region sizes, possibly shifted grid and slightly different intensity binning). The tests check
that the block-wise ROI agrees with the whole-volume ROI on ≥ 98% of voxels (it is > 99% on the
synthetic volumes). The corrected volume is staged in a temporary uint16 Zarr next to the output
and deleted at the end.
"""

from __future__ import annotations

import logging
import math
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from fewlabel.blocks import map_blocks, reduce_blocks
from fewlabel.errors import ConfigError, InputDataError
from fewlabel.io import atomic_path, create_ome_zarr, open_ome_zarr
from fewlabel.normalize import sample_voxels

log = logging.getLogger(__name__)

PI_HIGH = 0.5
PI_LOW = 1e-4
_CORRECTED_SCALE = 65535.0


# --------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class RoiParams:
    """ROI configuration (``roi`` section of the config; passed as ``--params`` JSON).

    Attributes
    ----------
    clip_percentiles : (low, high) percentiles for intensity clipping before CLAHE. 0.5/99.8
        removes dark dead pixels and the few saturated voxels without touching particles.
    clahe_kernel_um : CLAHE contextual-region size (z, y, x) in µm. 2 µm spans a few particle
        diameters, so local background is equalised but particles stay brighter than it.
    clahe_kernel_voxels : optional (z, y, x) region size in voxels; overrides ``clahe_kernel_um``
        (use it when the voxel size is unknown or meaningless). Default None.
    clahe_clip_limit : CLAHE clip limit in (0, 1]; 0.01 (skimage's default) limits noise
        amplification in flat background.
    posterior_threshold : foreground when P(bright | x) > this; 0.5 is the Bayes decision.
    max_fit_voxels : bound on voxels sampled for the percentiles and the mixture fit (1e6
        gives mixture parameters to ~1e-3 relative precision at 8 MB of memory).
    erosion_radius_um : erosion ball radius in µm; 0.1 µm is about one lateral voxel of a
        typical confocal/light-sheet acquisition and removes isolated noise voxels. A radius
        below half a voxel along every axis makes the erosion a no-op.
    extend_radius_um : dilation ball radius in µm around the eroded foreground (the extended
        area around particles that must stay in the ROI); 1 µm covers a particle plus its
        blur and some localisation slack.
    expected_particles : expected number of particles in the volume (k), optional.
    particle_radius_um : particle radius r in µm, optional; with ``expected_particles`` gives π.
    """

    clip_percentiles: tuple[float, float] = (0.5, 99.8)
    clahe_kernel_um: tuple[float, float, float] | None = (2.0, 2.0, 2.0)
    clahe_kernel_voxels: tuple[int, int, int] | None = None
    clahe_clip_limit: float = 0.01
    posterior_threshold: float = 0.5
    max_fit_voxels: int = 1_000_000
    erosion_radius_um: float = 0.1
    extend_radius_um: float = 1.0
    expected_particles: float | None = None
    particle_radius_um: float | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> RoiParams:
        """Build from a config mapping; unknown keys and bad values raise ConfigError."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown roi parameter(s) {unknown}; allowed: {sorted(known)}.",
                              fix="check the 'roi' section of config/config.yaml.")
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key in ("clip_percentiles", "clahe_kernel_um", "clahe_kernel_voxels"):
                kwargs[key] = None if value is None else tuple(_number(key, v) for v in value)
            elif key in ("expected_particles", "particle_radius_um"):
                kwargs[key] = None if value is None else _number(key, value)
            elif key == "max_fit_voxels":
                kwargs[key] = int(_number(key, value))
            else:
                kwargs[key] = _number(key, value)
        params = cls(**kwargs)
        params.validate()
        return params

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable mapping (lists for tuples)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def validate(self) -> None:
        """Raise ConfigError for values outside their documented ranges."""
        lo, hi = (self.clip_percentiles + (None, None))[:2] if self.clip_percentiles else (0, -1)
        if len(self.clip_percentiles) != 2 or not 0 <= lo < hi <= 100:  # type: ignore[operator]
            _bad("clip_percentiles", self.clip_percentiles, "two numbers 0 <= low < high <= 100")
        if self.clahe_kernel_voxels is not None:
            if len(self.clahe_kernel_voxels) != 3 or min(self.clahe_kernel_voxels) < 1:
                _bad("clahe_kernel_voxels", self.clahe_kernel_voxels, "three integers >= 1 (z,y,x)")
        elif self.clahe_kernel_um is None or len(self.clahe_kernel_um) != 3 or min(
                self.clahe_kernel_um) <= 0:
            _bad("clahe_kernel_um", self.clahe_kernel_um, "three positive µm values (z,y,x)")
        if not 0 < self.clahe_clip_limit <= 1:
            _bad("clahe_clip_limit", self.clahe_clip_limit, "a number in (0, 1]")
        if not 0 < self.posterior_threshold < 1:
            _bad("posterior_threshold", self.posterior_threshold, "a number in (0, 1)")
        if self.max_fit_voxels < 1000:
            _bad("max_fit_voxels", self.max_fit_voxels, "an integer >= 1000")
        if self.erosion_radius_um < 0:
            _bad("erosion_radius_um", self.erosion_radius_um, "a number >= 0")
        if self.extend_radius_um < 0:
            _bad("extend_radius_um", self.extend_radius_um, "a number >= 0")
        k, r = self.expected_particles, self.particle_radius_um
        if (k is None) != (r is None):
            raise ConfigError("roi: 'expected_particles' and 'particle_radius_um' must be given "
                              "together (or both null).",
                              fix="set both to estimate π, or neither.")
        if k is not None and (k <= 0 or r is None or r <= 0):
            raise ConfigError(f"roi: expected_particles={k} and particle_radius_um={r} must be "
                              "positive.", fix="use a positive count and radius in µm.")


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _bad(key, value, "a finite number")
    return float(value)


def _bad(key: str, value: Any, expected: str) -> None:
    raise ConfigError(f"roi parameter '{key}' = {value!r} is invalid; expected {expected}.",
                      fix="check the 'roi' section of config/config.yaml.")


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
        """``log P(bright|x) - log P(dark|x)`` (float32), stable for any ``x``."""
        x = np.asarray(x, dtype=np.float32)
        (m0, m1), (v0, v1), (w0, w1) = self.means, self.variances, self.weights
        const = math.log(w1 / w0) - 0.5 * math.log(v1 / v0)
        return (const - 0.5 * ((x - m1) ** 2 / v1 - (x - m0) ** 2 / v0)).astype(np.float32)

    def posterior_bright(self, x: np.ndarray) -> np.ndarray:
        """``P(bright | x) = w_1 N(x|μ_1,σ_1²) / Σ_k w_k N(x|μ_k,σ_k²)``."""
        return (1.0 / (1.0 + np.exp(-np.clip(self.log_odds_bright(x), -80, 80)))).astype(
            np.float32)


def fit_gmm_1d(values: np.ndarray, *, max_iter: int = 300, tol: float = 1e-7,
               sample: str | None = None) -> GaussianMixture2:
    """Fit a 2-component 1D Gaussian mixture by EM (Dempster et al. 1977; PRML §9.2.2).

    E-step: ``γ_ik = w_k N(x_i|μ_k,σ_k²) / Σ_j w_j N(x_i|μ_j,σ_j²)``.
    M-step: ``N_k = Σ_i γ_ik``, ``w_k = N_k / N``, ``μ_k = Σ_i γ_ik x_i / N_k``,
    ``σ_k² = Σ_i γ_ik (x_i − μ_k)² / N_k`` (floored at 1e-6 of the data variance).
    Initialised by splitting at the Otsu threshold; stops when the mean log-likelihood changes
    by less than ``tol``. Raises InputDataError (naming ``sample``) for constant data or a
    degenerate fit (a component with < 1e-4 of the weight or both means equal).
    """
    from skimage.filters import threshold_otsu

    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    total_var = float(x.var()) if x.size else 0.0
    if x.size < 10 or total_var <= 1e-12 * max(1.0, float(np.abs(x).max(initial=0.0))) ** 2:
        raise InputDataError(
            "intensities are constant after histogram correction; no foreground/background "
            "mixture can be fitted.", sample=sample,
            fix="check the channel and the input image; an empty or saturated volume has no ROI.")
    split = threshold_otsu(x)
    bright = x > split
    if bright.all() or not bright.any():
        bright = x > np.median(x)
    if bright.all() or not bright.any():
        raise InputDataError("intensity histogram has a single value after correction.",
                             sample=sample, fix="check the channel and the input image.")
    floor = 1e-6 * total_var
    gamma1 = bright.astype(np.float64)
    prev = -np.inf
    ll = -np.inf
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter reported after the loop
        # M-step (from responsibilities γ_i1; γ_i0 = 1 − γ_i1)
        n1 = gamma1.sum()
        n0 = x.size - n1
        if n0 < 1e-9 * x.size or n1 < 1e-9 * x.size:
            break
        m0 = float(((1 - gamma1) * x).sum() / n0)
        m1 = float((gamma1 * x).sum() / n1)
        v0 = max(float(((1 - gamma1) * (x - m0) ** 2).sum() / n0), floor)
        v1 = max(float((gamma1 * (x - m1) ** 2).sum() / n1), floor)
        w1 = n1 / x.size
        w0 = 1.0 - w1
        # E-step in the log domain
        l0 = math.log(w0) - 0.5 * math.log(2 * math.pi * v0) - 0.5 * (x - m0) ** 2 / v0
        l1 = math.log(w1) - 0.5 * math.log(2 * math.pi * v1) - 0.5 * (x - m1) ** 2 / v1
        top = np.maximum(l0, l1)
        log_norm = top + np.log(np.exp(l0 - top) + np.exp(l1 - top))
        gamma1 = np.exp(l1 - log_norm)
        ll = float(log_norm.mean())
        if abs(ll - prev) < tol:
            converged = True
            break
        prev = ll
    n1 = gamma1.sum()
    n0 = x.size - n1
    if min(n0, n1) < 1e-4 * x.size:
        raise InputDataError(
            f"degenerate intensity mixture: one component holds {min(n0, n1) / x.size:.2e} of "
            "the voxels, so foreground and background cannot be separated.", sample=sample,
            fix="check that the volume contains particles; try other clip_percentiles or "
                "clahe_kernel_um.")
    m0 = float(((1 - gamma1) * x).sum() / n0)
    m1 = float((gamma1 * x).sum() / n1)
    v0 = max(float(((1 - gamma1) * (x - m0) ** 2).sum() / n0), floor)
    v1 = max(float((gamma1 * (x - m1) ** 2).sum() / n1), floor)
    if abs(m1 - m0) < 1e-3 * math.sqrt(total_var):
        raise InputDataError("degenerate intensity mixture: both components have the same mean.",
                             sample=sample, fix="check that the volume contains particles.")
    comps = sorted([(m0, v0, n0 / x.size), (m1, v1, n1 / x.size)])
    if not converged:
        log.warning("sample %s: mixture EM did not converge in %d iterations (Δll=%.2e)",
                    sample, max_iter, abs(ll - prev))
    return GaussianMixture2(means=(comps[0][0], comps[1][0]), variances=(comps[0][1], comps[1][1]),
                            weights=(comps[0][2], comps[1][2]), log_likelihood=ll, n_iter=n_iter,
                            converged=converged)


# --------------------------------------------------------------------------- block operations
def clahe_kernel_voxels(params: RoiParams, voxel_size: Sequence[float],
                        shape: Sequence[int]) -> tuple[int, int, int]:
    """CLAHE region size in voxels (z, y, x): µm / voxel size, rounded, within [1, shape]."""
    if params.clahe_kernel_voxels is not None:
        raw = [float(v) for v in params.clahe_kernel_voxels]
    else:
        raw = [k / v for k, v in zip(params.clahe_kernel_um or (), voxel_size, strict=True)]
    return tuple(int(min(max(round(k), 1), max(s, 1))) for k, s in zip(raw, shape, strict=True))  # type: ignore[return-value]


def correct_block(block: np.ndarray, low: float, high: float, kernel: Sequence[int],
                  clip_limit: float) -> np.ndarray:
    """Percentile clipping to [0, 1] then CLAHE; returns float32 in [0, 1] (ZYX)."""
    from skimage.exposure import equalize_adapthist

    x = np.clip((np.asarray(block, dtype=np.float32) - low) / (high - low), 0.0, 1.0)
    if x.max() <= x.min():  # flat block: CLAHE is undefined, keep the clipped value
        return x
    squeeze = [a for a in range(3) if x.shape[a] == 1]
    kern = [k for a, k in enumerate(kernel) if a not in squeeze]
    out = equalize_adapthist(np.squeeze(x, axis=tuple(squeeze)), kernel_size=kern,
                             clip_limit=clip_limit)
    return np.asarray(out, dtype=np.float32).reshape(x.shape)


def ball_radii_voxels(radius_um: float, voxel_size: Sequence[float]) -> tuple[int, int, int]:
    """Half-extent in voxels (z, y, x) of a Euclidean ball of ``radius_um`` µm."""
    return tuple(int(math.floor(radius_um / v + 1e-6)) for v in voxel_size)  # type: ignore[return-value]


def erode_dilate(mask: np.ndarray, voxel_size: Sequence[float], erosion_um: float,
                 extend_um: float) -> np.ndarray:
    """Erode with a ball of ``erosion_um`` then dilate with a ball of ``extend_um`` (µm).

    Balls are ``{d : Σ_a (d_a v_a)² <= r²}``; both operations use Euclidean distance transforms
    (exact, cost independent of the radius). Outside the array counts as foreground for the
    erosion (objects touching the border are not eroded away) and as background for dilation.
    """
    mask = np.asarray(mask, dtype=bool)
    sampling = [float(v) for v in voxel_size]
    eps = 1e-6
    if erosion_um > 0 and mask.any() and not mask.all() and any(
            r >= 1 for r in ball_radii_voxels(erosion_um, voxel_size)):
        mask = ndimage.distance_transform_edt(mask, sampling=sampling) > erosion_um * (1 + eps)
    if extend_um > 0 and mask.any() and not mask.all() and any(
            r >= 1 for r in ball_radii_voxels(extend_um, voxel_size)):
        mask = ndimage.distance_transform_edt(~mask, sampling=sampling) <= extend_um * (1 + eps)
    return mask


# --------------------------------------------------------------------------- class prior
def class_prior(expected_particles: float, particle_radius_um: float,
                roi_volume_um3: float) -> tuple[float, int]:
    """``π = k · (4/3)πr³ / |ROI|`` and the minimal mini-batch ``⌈1/π⌉`` (Vedrenne et al. §2.2)."""
    if roi_volume_um3 <= 0:
        raise ValueError("ROI volume must be positive")
    pi = expected_particles * (4.0 / 3.0) * math.pi * particle_radius_um**3 / roi_volume_um3
    return pi, int(math.ceil(1.0 / pi)) if pi > 0 else 0


def prior_warnings(pi: float, *, sample: str | None = None) -> list[str]:
    """Warnings for an implausible class prior (π > 0.5 or π < 1e-4), also logged."""
    out: list[str] = []
    if pi > PI_HIGH:
        out.append(f"class prior pi={pi:.4g} > {PI_HIGH}: particles would fill more than half "
                   "of the ROI; expected_particles or particle_radius_um is too large, or the "
                   "ROI too small (lower posterior_threshold / raise extend_radius_um).")
    elif pi < PI_LOW:
        out.append(f"class prior pi={pi:.3g} < {PI_LOW:g}: a mini-batch needs >= "
                   f"{math.ceil(1 / pi) if pi > 0 else 'inf'} windows to hold one particle; "
                   "expected_particles or particle_radius_um is too small, or the ROI too large.")
    for message in out:
        log.warning("sample %s: %s", sample, message)
    return out


# --------------------------------------------------------------------------- the stage
def segment_roi(
    image_zarr_path: str | Path,
    mask_out_path: str | Path,
    json_out_path: str | Path,
    *,
    params: RoiParams,
    sample: str,
    workers: int = 1,
    seed: int = 0,
    block_shape: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Segment the ROI of one ingested volume; write a uint8 OME-Zarr mask and a JSON summary.

    Parameters
    ----------
    image_zarr_path : ZYX OME-Zarr written by :func:`fewlabel.io.ingest_volume`.
    mask_out_path : output ROI mask (uint8 0/1 OME-Zarr, same chunks and voxel size), atomic.
    json_out_path : summary JSON: roi_fraction, roi_voxels, total_voxels, gmm (means, variances,
        weights), threshold, clip range, CLAHE kernel, π and ⌈1/π⌉ (when k and r are configured),
        warnings.
    params : :class:`RoiParams`.
    workers : threads for block processing. seed : subsampling seed.
    block_shape : processing block (default: the input chunks; must be whole chunks when
        ``workers > 1``). A single block covering the volume gives whole-volume CLAHE.

    Returns the summary dictionary.
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
        raise ValueError(f"block_shape {blocks_shape} is not a multiple of the chunks {chunks}")

    # 1. global clip percentiles from a bounded subsample (as normalize.percentile_range)
    values = sample_voxels(source, max_voxels=params.max_fit_voxels, seed=seed)
    low, high = (float(v) for v in np.percentile(values, list(params.clip_percentiles)))
    if not high > low:
        raise InputDataError(
            f"volume is (nearly) constant: the {params.clip_percentiles[0]} and "
            f"{params.clip_percentiles[1]} percentiles are both {low:g}; no ROI can be found.",
            sample=sample, path=image_zarr_path,
            fix="check the channel and the input image (or widen clip_percentiles).")
    del values
    kernel = clahe_kernel_voxels(params, voxel, shape)
    clahe_halo = tuple(min(2 * k, s) for k, s in zip(kernel, shape, strict=True))
    log.info("sample %s: shape=%s voxel=%s chunks=%s clip=[%g, %g] clahe kernel=%s voxels "
             "halo=%s", sample, shape, voxel, chunks, low, high, kernel, clahe_halo)

    mask_out_path = Path(mask_out_path)
    mask_out_path.parent.mkdir(parents=True, exist_ok=True)
    scratch = mask_out_path.parent / f".{mask_out_path.name}.corrected-{uuid.uuid4().hex[:8]}"
    try:
        # 2. histogram correction, block-wise with a CLAHE halo, staged as uint16
        corrected = create_ome_zarr(scratch, shape, np.uint16, chunks, voxel,
                                    name=f"{sample}:corrected", compression_level=1)

        def correct(block: np.ndarray) -> np.ndarray:
            out = correct_block(block, low, high, kernel, params.clahe_clip_limit)
            return np.round(out * _CORRECTED_SCALE).astype(np.uint16)

        map_blocks(correct, source, corrected, halo=clahe_halo, block_shape=blocks_shape,
                   workers=workers, desc=f"{sample} CLAHE")

        # 3. mixture fit on a bounded subsample of corrected intensities
        fit_values = sample_voxels(corrected, max_voxels=params.max_fit_voxels, seed=seed + 1)
        gmm = fit_gmm_1d(fit_values / _CORRECTED_SCALE, sample=sample)
        del fit_values
        t = params.posterior_threshold
        log_odds_cut = math.log(t / (1.0 - t))
        log.info("sample %s: GMM means=%s variances=%s weights=%s (%d EM iterations)", sample,
                 _fmt(gmm.means), _fmt(gmm.variances), _fmt(gmm.weights), gmm.n_iter)

        # 4. posterior threshold + erosion + dilation (exact with halo = sum of radii)
        radii = [e + d for e, d in zip(ball_radii_voxels(params.erosion_radius_um, voxel),
                                        ball_radii_voxels(params.extend_radius_um, voxel),
                                        strict=True)]
        morph_halo = tuple(min(r, s) for r, s in zip(radii, shape, strict=True))

        def segment(block: np.ndarray) -> np.ndarray:
            x = block.astype(np.float32) / np.float32(_CORRECTED_SCALE)
            fg = gmm.log_odds_bright(x) > log_odds_cut
            return erode_dilate(fg, voxel, params.erosion_radius_um,
                                params.extend_radius_um).astype(np.uint8)

        with atomic_path(mask_out_path) as tmp:
            mask = create_ome_zarr(tmp, shape, np.uint8, chunks, voxel, name=f"{sample}:roi",
                                   extra_attrs={"sample": sample, "kind": "roi",
                                                "source": str(image_zarr_path)})
            map_blocks(segment, corrected, mask, halo=morph_halo, block_shape=blocks_shape,
                       workers=workers, desc=f"{sample} ROI")
            counts = reduce_blocks(lambda b: int(np.count_nonzero(b)), mask, block_shape=chunks,
                                   workers=workers)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    roi_voxels = int(sum(counts))
    total = int(np.prod(shape))
    if roi_voxels == 0:
        raise InputDataError(
            "the ROI is empty (no voxel survives the posterior threshold and the erosion).",
            sample=sample, path=image_zarr_path,
            fix="lower roi.posterior_threshold or roi.erosion_radius_um.")
    voxel_um3 = float(np.prod(voxel))
    summary: dict[str, Any] = {
        "sample": sample,
        "shape": list(shape),
        "voxel_size": list(voxel),
        "total_voxels": total,
        "roi_voxels": roi_voxels,
        "roi_fraction": roi_voxels / total,
        "roi_volume_um3": roi_voxels * voxel_um3,
        "clip_range": [low, high],
        "clahe_kernel_voxels": list(kernel),
        "clahe_halo_voxels": list(clahe_halo),
        "gmm": {"means": list(gmm.means), "variances": list(gmm.variances),
                "weights": list(gmm.weights), "log_likelihood": gmm.log_likelihood,
                "n_iter": gmm.n_iter, "converged": gmm.converged,
                "intensity_scale": "CLAHE output in [0, 1]"},
        "threshold": t,
        "intensity_threshold": _intensity_cut(gmm, log_odds_cut),
        "pi": None,
        "min_batch_size": None,
        "warnings": [],
        "params": params.to_dict(),
    }
    if params.expected_particles is not None and params.particle_radius_um is not None:
        pi, batch = class_prior(params.expected_particles, params.particle_radius_um,
                                summary["roi_volume_um3"])
        summary["pi"] = pi
        summary["min_batch_size"] = batch
        summary["warnings"] = prior_warnings(pi, sample=sample)
    log.info("sample %s: ROI %d / %d voxels (%.2f%%), pi=%s, min batch=%s", sample, roi_voxels,
             total, 100.0 * summary["roi_fraction"], summary["pi"], summary["min_batch_size"])
    write_json(summary, json_out_path)
    return summary


def _intensity_cut(gmm: GaussianMixture2, log_odds_cut: float) -> float | None:
    """Smallest corrected intensity in [μ_dark, μ_bright] whose posterior exceeds the cut."""
    grid = np.linspace(gmm.means[0], gmm.means[1], 2001, dtype=np.float32)
    above = np.flatnonzero(gmm.log_odds_bright(grid) > log_odds_cut)
    return float(grid[above[0]]) if above.size else None


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


__all__ = [
    "GaussianMixture2", "RoiParams", "ball_radii_voxels", "clahe_kernel_voxels", "class_prior",
    "correct_block", "erode_dilate", "fit_gmm_1d", "prior_warnings", "segment_roi",
]
