"""Ceiling check: a matched filter with an oracle threshold on flat-background spot volumes.

Why this exists: with the PTC SNR defined on the peak intensity, how detectable a spot is
depends on how many voxels it covers. This script scores the classical optimum for a known PSF
— Gaussian smoothing at the PSF s.d. minus a wide background estimate, local maxima, and the
threshold that maximises F1 *on the scored volumes themselves* (an oracle, i.e. an upper bound
for that filter) — per PSF at SNR 2, medium density, ``ptc`` data (no clutter). It showed that
with the PSF s.d. (0.7, 1, 1) voxels first used by the benchmark, F1 0.9 at SNR 2 is out of
reach for this filter, which motivated the PSF calibration in ``run.py --calibrate``.

Usage::

    .venv/bin/python benchmarks/detection_ptc/oracle_check.py      # ~1 min, prints a table
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max

from fewlabel.metrics.detection import match_points
from fewlabel.synth import derive_seed, spot_volume

SHAPE = (10, 128, 128)
PSFS = [(0.7, 1.0), (0.85, 1.25), (1.0, 1.5)]  # (sigma_z, sigma_xy) voxels
N_VOLUMES = 6
GATE = 3.0


def oracle_f1(snr: float, sigma_z: float, sigma_xy: float) -> tuple[float, int, int, int]:
    """Best pooled F1 of the matched filter over thresholds (TP, FP, FN at that threshold)."""
    sigma = (sigma_z, sigma_xy, sigma_xy)
    scored = []
    for k in range(N_VOLUMES):
        vol = spot_volume(
            SHAPE,
            snr=snr,
            density="medium",
            sigma_xy=sigma_xy,
            sigma_z=sigma_z,
            clutter=False,
            seed=derive_seed(2024, "oracle", f"{snr:g}", str(k)),
        )
        img = vol.image.astype(np.float32)
        response = ndi.gaussian_filter(img, sigma) - ndi.gaussian_filter(img, (3, 8, 8))
        peaks = peak_local_max(
            response, min_distance=1, exclude_border=False, threshold_abs=-np.inf
        )
        scored.append(
            (peaks, response[tuple(peaks.T)], vol.points[["z", "y", "x"]].to_numpy(float))
        )
    best = (0.0, 0, 0, 0)
    for thr in np.linspace(0.2, 10.0, 99):
        tp = fp = fn = 0
        for peaks, score, gt in scored:
            res = match_points(gt, peaks[score > thr].astype(float), max_distance=GATE)
            tp, fp, fn = tp + res.tp, fp + res.fp, fn + res.fn
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        best = max(best, (f1, tp, fp, fn))
    return best


def main() -> None:
    print("| PSF s.d. (z, y, x) | SNR | oracle matched-filter F1 | TP/FP/FN |")
    print("|---|---|---|---|")
    for sz, sxy in PSFS:
        f1, tp, fp, fn = oracle_f1(2.0, sz, sxy)
        print(f"| ({sz:g}, {sxy:g}, {sxy:g}) | 2 | {f1:.3f} | {tp}/{fp}/{fn} |")


if __name__ == "__main__":
    main()
