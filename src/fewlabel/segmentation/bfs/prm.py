"""Pseudo instance labels from peak response maps (BFS-Net §3.2; PRM, Zhou et al. 2018).

For every local maximum ``m`` of S1's output, the gradient of S1's logit at ``m`` with respect to
the input image is computed with the network in eval mode (normalisation layers use their
running statistics, so peaks in one batch do not interact); its positive part, smoothed by a
small Gaussian and divided by its maximum, is the peak's response map ``R_m ∈ [0, 1]``. Each
back-propagation sees only a crop of the input around its peak (``prm.crop``), which bounds the
memory on large volumes; peaks are back-propagated ``prm.batch_size`` at a time (one summed
backward over independent samples = one gradient per sample).

Pseudo-labels: voxel ``v`` belongs to ``argmax_m R_m(v)`` where that maximum exceeds ``t``, else
to the background. ``t`` is chosen on the training volume's own clicks only: for each ``t`` in
``prm.threshold_grid`` a click is a hit when its voxel lies in an instance that holds no other
click; instances without a click are false positives. Clicks fix the range of thresholds that
keep one instance per click (the plateau of the best click F1) but not the object size within
it, so the median threshold of that plateau is used (on synthetic nuclei the largest one gave
masks at half the true volume, the smallest ones three times it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

from fewlabel.logs import progress

log = logging.getLogger(__name__)


@dataclass
class Response:
    """One peak's normalised response map on its crop ``window`` of the volume."""

    peak: int
    window: tuple[slice, slice, slice]
    values: np.ndarray  # float32, max 1 (or all 0)


def peak_windows(
    peaks: np.ndarray, shape: Sequence[int], crop: Sequence[int]
) -> list[tuple[slice, slice, slice]]:
    """Crops of size ``min(crop, shape)`` centred on each peak, shifted inside the volume."""
    shape_a = np.asarray(shape, dtype=np.int64)
    size = np.minimum(np.asarray(crop, dtype=np.int64), shape_a)
    out = []
    for p in np.rint(np.asarray(peaks, dtype=np.float64)).astype(np.int64).reshape(-1, 3):
        start = np.clip(p - size // 2, 0, shape_a - size)
        out.append(tuple(slice(int(a), int(a + n)) for a, n in zip(start, size, strict=True)))
    return out  # type: ignore[return-value]


def peak_response_maps(
    module: nn.Module,
    image: Any,
    peaks: np.ndarray,
    *,
    crop: Sequence[int],
    batch_size: int = 4,
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    smooth_um: float = 0.0,
    device: str | torch.device = "cpu",
    normalise: Any = None,
    desc: str = "peak response maps",
) -> Iterator[Response]:
    """One :class:`Response` per peak (``peaks``: (N, 3) voxels z, y, x) of ``module``'s
    single-channel logit, back-propagated to the input crops of ``image`` (ZYX, numpy or Zarr;
    ``normalise`` maps a raw crop to the network's input)."""
    module.eval()
    shape = tuple(int(s) for s in image.shape[-3:])
    pts = np.rint(np.asarray(peaks, dtype=np.float64)).astype(np.int64).reshape(-1, 3)
    pts = np.clip(pts, 0, np.asarray(shape) - 1)
    windows = peak_windows(pts, shape, crop)
    sigma = [float(smooth_um) / float(v) for v in voxel_size]
    starts = list(range(0, len(pts), int(batch_size)))
    for first in progress(starts, desc=desc, logger=log):
        idx = list(range(first, min(first + int(batch_size), len(pts))))
        crops = []
        for i in idx:
            raw = np.asarray(image[windows[i]], dtype=np.float32)
            crops.append(normalise(raw) if normalise is not None else raw)
        x = torch.from_numpy(np.stack(crops)[:, None].astype(np.float32)).to(device)
        x.requires_grad_(True)
        out = module(x)
        local = [pts[i] - np.array([s.start for s in windows[i]]) for i in idx]
        picked = torch.stack(
            [out[b, 0, int(p[0]), int(p[1]), int(p[2])] for b, p in enumerate(local)]
        )
        (grad,) = torch.autograd.grad(picked.sum(), x)
        maps = grad[:, 0].clamp(min=0).detach().cpu().numpy()
        for b, i in enumerate(idx):
            values = maps[b]
            if smooth_um > 0:
                values = ndi.gaussian_filter(values, sigma, mode="nearest")
            top = float(values.max())
            if top > 0:
                values = values / top
            else:
                log.warning("peak %d at %s has an all-zero response map", i, pts[i].tolist())
            yield Response(peak=i, window=windows[i], values=values.astype(np.float32))


def assign_pseudo_labels(
    responses: Sequence[Response], shape: Sequence[int], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(uint32 labels, float32 strongest response): voxel → the peak (id = index + 1) with the
    strongest response where it exceeds ``threshold``; ties keep the earlier peak."""
    best = np.zeros(tuple(int(s) for s in shape), dtype=np.float32)
    labels = np.zeros(best.shape, dtype=np.uint32)
    for r in responses:
        region = best[r.window]
        better = r.values > region
        region[better] = r.values[better]
        labels[r.window][better] = r.peak + 1
    labels[best <= threshold] = 0
    return labels, best


def click_f1(labels: np.ndarray, clicks: np.ndarray) -> dict[str, float]:
    """Click-based instance F1 of a pseudo-label image (see the module docstring)."""
    idx = np.clip(np.rint(clicks).astype(np.int64), 0, np.asarray(labels.shape) - 1)
    hit = labels[tuple(idx.T)] if len(idx) else np.zeros(0, dtype=labels.dtype)
    ids, counts = np.unique(hit[hit > 0], return_counts=True)
    tp = int((counts == 1).sum())
    fn = len(clicks) - tp
    present = np.unique(labels[labels > 0])
    fp = int(len(np.setdiff1d(present, ids)))
    denom = 2 * tp + fp + fn
    return {"f1": 2 * tp / denom if denom else 1.0, "tp": tp, "fp": fp, "fn": fn}


def tune_threshold(
    responses: Sequence[Response],
    shape: Sequence[int],
    clicks: np.ndarray,
    grid: Sequence[float],
) -> tuple[float, list[dict[str, float]]]:
    """The median threshold of ``grid`` among those with the best click F1 (the middle of the
    plateau; the larger one of the two middle values for an even count), and the table."""
    rows = []
    for t in sorted(float(g) for g in grid):
        labels, _ = assign_pseudo_labels(responses, shape, t)
        rows.append({"threshold": t, **click_f1(labels, clicks)})
    best = max(r["f1"] for r in rows)
    plateau = [r["threshold"] for r in rows if r["f1"] >= best - 1e-12]
    return plateau[len(plateau) // 2], rows
