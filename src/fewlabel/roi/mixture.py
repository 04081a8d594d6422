"""Two-component 1D Gaussian mixture (EM on a histogram) and its foreground intensity threshold."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from fewlabel.errors import InputDataError

log = logging.getLogger(__name__)


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
        return const - np.float32(0.5) * (
            (x - np.float32(m1)) ** 2 / np.float32(v1) - (x - np.float32(m0)) ** 2 / np.float32(v0)
        )

    def posterior_bright(self, x: np.ndarray) -> np.ndarray:
        """``P(bright | x) = w_1 N(x|μ_1,σ_1²) / Σ_k w_k N(x|μ_k,σ_k²)``."""
        return (1.0 / (1.0 + np.exp(-np.clip(self.log_odds_bright(x), -80, 80)))).astype(np.float32)


def fit_gmm_1d(
    values: np.ndarray,
    *,
    init_bright_fraction: float = 0.02,
    bins: int = 4096,
    max_iter: int = 2000,
    tol: float = 1e-10,
    min_sd_fraction: float = 0.005,
    sample: str | None = None,
    strict: bool = True,
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

    Raises InputDataError (naming ``sample``) for constant values or, when ``strict``, a
    degenerate fit (a component with < 1e-4 of the weight, or equal means); with
    ``strict=False`` a degenerate fit is returned for the caller to judge
    (:func:`mixture_degeneracy`).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if x.size < 10 or not hi > lo:
        raise InputDataError(
            "intensities are constant after histogram correction; no foreground/background "
            "mixture can be fitted.",
            sample=sample,
            fix="check the channel and the input image; an empty or saturated volume has no ROI.",
        )
    counts, edges = np.histogram(x, bins=bins, range=(lo, hi))
    keep = counts > 0
    c = counts[keep].astype(np.float64)
    xs = (0.5 * (edges[:-1] + edges[1:]))[keep]
    n = c.sum()
    if xs.size < 2:
        raise InputDataError(
            "intensity histogram has a single populated level after "
            "correction; no mixture can be fitted.",
            sample=sample,
            fix="check the channel and the input image.",
        )
    # bright start: the top populated bins holding init_bright_fraction of the values
    from_top = np.cumsum(c[::-1])[::-1]  # values in this bin and all brighter ones
    n_bright = int(np.clip(np.count_nonzero(from_top <= init_bright_fraction * n), 1, xs.size - 1))
    g1 = np.zeros_like(xs)
    g1[xs.size - n_bright :] = 1.0
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
    if strict and not 1e-4 <= w1 <= 1 - 1e-4:
        raise InputDataError(
            f"degenerate intensity mixture: one component holds {min(w1, 1 - w1):.2e} of the "
            "voxels, so foreground and background cannot be separated.",
            sample=sample,
            fix="check that the volume contains particles; try other roi.clip_percentiles, "
            "roi.smooth_sigma_um or roi.clahe_kernel_um.",
        )
    if strict and abs(m1 - m0) < 1e-3 * (hi - lo):
        raise InputDataError(
            "degenerate intensity mixture: both components have the same mean.",
            sample=sample,
            fix="check that the volume contains particles.",
        )
    if not converged:
        log.warning(
            "sample %s: mixture EM stopped after %d iterations before converging", sample, max_iter
        )
    comps = sorted([(float(m0), float(v0), float(1 - w1)), (float(m1), float(v1), float(w1))])
    return GaussianMixture2(
        means=(comps[0][0], comps[1][0]),
        variances=(comps[0][1], comps[1][1]),
        weights=(comps[0][2], comps[1][2]),
        log_likelihood=ll,
        n_iter=n_iter,
        converged=converged,
    )


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


MIN_COMPONENT_WEIGHT = 0.001
"""A mixture whose smaller component holds less than this fraction of the voxels is degenerate
(EM parked a component on a few outliers: its 'foreground' is meaningless). Not higher: sparse
particles are a genuine bright tail of well under 1 % of the voxels (60 cells of 10 µm in a
40 x 250 x 250 volume of 5 x 2 x 2 µm voxels: 0.5 %)."""
MIN_SEPARATION = 1.0
"""Ashman's D = |μ₁ − μ₀| / √((σ₀² + σ₁²)/2) below this: the two components overlap for most
of their mass (EM split one mode in two), so no foreground is separated. Not 2 (the bimodality
bound): a sparse, wide bright tail on the background's shoulder is a useful fit at D ≈ 1.5-2
(the spot synthetics)."""


def mixture_degeneracy(gmm: GaussianMixture2) -> str | None:
    """Why ``gmm`` cannot separate foreground from background, or None if it can.

    Degenerate: a component weight below :data:`MIN_COMPONENT_WEIGHT`, or Ashman's D below
    :data:`MIN_SEPARATION` (components not separated).
    """
    weight = min(gmm.weights)
    if not weight >= MIN_COMPONENT_WEIGHT:
        return (
            f"one mixture component holds {weight:.2%} of the voxels (weights "
            f"{gmm.weights[0]:.4g} / {gmm.weights[1]:.4g}, fewer than "
            f"{MIN_COMPONENT_WEIGHT:.1%})"
        )
    spread = math.sqrt(0.5 * (gmm.variances[0] + gmm.variances[1]))
    separation = abs(gmm.means[1] - gmm.means[0]) / spread if spread > 0 else math.inf
    if not separation >= MIN_SEPARATION:
        return (
            f"the mixture components are not separated (means {gmm.means[0]:.4g} / "
            f"{gmm.means[1]:.4g}, Ashman's D = {separation:.2f} < {MIN_SEPARATION:g})"
        )
    return None


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (maximal between-class variance) of ``values`` on a ``bins`` histogram.

    Foreground is ``x >= threshold``. Returns the minimum value (everything foreground) for
    constant values.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if not x.size or not x.max() > x.min():
        return float(x.min()) if x.size else 0.0
    counts, edges = np.histogram(x, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(counts)[:-1].astype(np.float64)  # classes: bins [0, i] and (i, end)
    w1 = counts.sum() - w0
    s0 = np.cumsum(counts * centres)[:-1]
    m0 = s0 / np.maximum(w0, 1)
    m1 = ((counts * centres).sum() - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    best = np.flatnonzero(between >= between.max() * (1 - 1e-12))  # a gap: take its middle
    return float(0.5 * (edges[best[0] + 1] + edges[best[-1] + 1]))


__all__ = [
    "MIN_COMPONENT_WEIGHT",
    "MIN_SEPARATION",
    "GaussianMixture2",
    "fit_gmm_1d",
    "foreground_threshold",
    "mixture_degeneracy",
    "otsu_threshold",
]
