"""Pseudo instance labels from peak response maps (BFS-Net §3.2; PRM, Zhou et al. 2018).

For every local maximum ``m`` of S1's output, the response of S1's logit at ``m`` is propagated
back to the input image with the network in eval mode (normalisation layers use their running
statistics, so peaks in one batch do not interact). Two rules (``prm.backprop``):

* ``excitation`` (default; the peak back-propagation of PRM, which is excitation backprop, Zhang
  et al. 2016): every convolution passes its output signal ``g`` to its inputs in proportion to
  their positive contribution, ``g_in(i) = a_i · Σ_o W⁺_{o,i} · g(o) / Σ_j a_j W⁺_{o,j}`` with
  ``a = x − min(x)`` (per sample) and ``W⁺ = max(W, 0)``; ReLU, pooling and normalisation layers
  pass the signal as their ordinary gradient. The result is a non-negative "winning
  probability" that spreads over the whole object instead of the few voxels with the largest
  input gradient.
* ``gradient``: the plain input gradient of the peak logit (saliency).

The positive part, smoothed by a small Gaussian (µm) and divided by its maximum, is the peak's
response map ``R_m ∈ [0, 1]``. Each back-propagation sees only a crop of the input around its
peak (``prm.crop``); peaks are back-propagated ``prm.batch_size`` at a time (one summed backward
over independent samples = one map per sample).

Pseudo-labels: voxel ``v`` belongs to ``argmax_m R_m(v)`` where that maximum exceeds ``t``, else
to the background. The maps are streamed into a running maximum and arg-maximum (one float32
and one uint32 array of the labels' size; :func:`strongest_response`), which also serves every
threshold, since ``argmax`` does not depend on ``t``. ``t`` is chosen on the training volume's
own clicks and image only: for each ``t`` in ``prm.threshold_grid`` a click is a hit when its
voxel lies in an instance that holds no other click; instances without a click are false
positives. Clicks fix the range of thresholds that keep one instance per click (the plateau of
the best click F1) but not the object size within it. ``prm.threshold_rule: contrast``
(default) takes, among the thresholds whose click F1 is within ``prm.f1_tolerance`` of the
best, the one whose foreground best separates the image intensity (Otsu's between-class
variance, :func:`image_contrast`); ``median`` takes the median threshold of the plateau.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from torch import nn

from fewlabel.logs import progress

log = logging.getLogger(__name__)

EPS = 1e-10
Backprop = Literal["excitation", "gradient"]


@dataclass
class Response:
    """One peak's normalised response map on its crop ``window`` of the volume."""

    peak: int
    window: tuple[slice, slice, slice]
    values: np.ndarray  # float32, max 1 (or all 0)


class _ExcitationConv(torch.autograd.Function):
    """A convolution (``op``) whose backward pass is the excitation-backprop rule."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: Any, op: Any) -> Any:
        ctx.op = op
        ctx.save_for_backward(x, weight)
        return op(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, signal: torch.Tensor) -> Any:
        x, weight = ctx.saved_tensors
        a = x - x.amin(dim=tuple(range(1, x.dim())), keepdim=True)
        with torch.enable_grad():
            leaf = a.detach().requires_grad_(True)
            total = ctx.op(leaf, weight.clamp(min=0), None)  # Σ_j a_j W⁺_{o,j}
            share = torch.where(total > EPS, signal / (total + EPS), torch.zeros_like(total))
            (back,) = torch.autograd.grad(total, leaf, share)  # Σ_o W⁺_{o,i} · share(o)
        return a * back, None, None, None


def _conv_op(module: nn.Module) -> Any:
    if isinstance(module, nn.ConvTranspose3d | nn.ConvTranspose2d):
        transpose = (
            F.conv_transpose3d if isinstance(module, nn.ConvTranspose3d) else F.conv_transpose2d
        )

        def op(x: torch.Tensor, w: torch.Tensor, b: Any) -> torch.Tensor:
            return transpose(
                x,
                w,
                b,
                stride=module.stride,
                padding=module.padding,
                output_padding=module.output_padding,
                groups=module.groups,
                dilation=module.dilation,
            )

        return op
    return module._conv_forward  # type: ignore[operator]


@contextmanager
def excitation_backprop(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every Conv/ConvTranspose (2D/3D) of ``module`` back-propagates by the
    excitation-backprop rule (forward values unchanged); restored on exit."""
    patched = []
    for layer in module.modules():
        if isinstance(layer, nn.Conv3d | nn.Conv2d | nn.ConvTranspose3d | nn.ConvTranspose2d):
            op = _conv_op(layer)

            def forward(x: torch.Tensor, layer: nn.Module = layer, op: Any = op) -> Any:
                return _ExcitationConv.apply(x, layer.weight, layer.bias, op)

            layer.forward = forward  # type: ignore[method-assign]
            patched.append(layer)
    try:
        yield module
    finally:
        for layer in patched:
            del layer.forward


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
    backprop: Backprop = "excitation",
    desc: str = "peak response maps",
) -> Iterator[Response]:
    """One :class:`Response` per peak (``peaks``: (N, 3) voxels z, y, x) of ``module``'s
    single-channel logit, back-propagated to the input crops of ``image`` (ZYX, numpy or Zarr;
    ``normalise`` maps a raw crop to the network's input) by the ``backprop`` rule."""
    if backprop not in ("excitation", "gradient"):
        raise ValueError(f"unknown backprop rule {backprop!r} (excitation | gradient)")
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
        local = [pts[i] - np.array([s.start for s in windows[i]]) for i in idx]
        if backprop == "excitation":
            with excitation_backprop(module):
                out = module(x)
        else:
            out = module(x)
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


def strongest_response(
    responses: Iterable[Response], shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Stream the maps into (uint32 arg-max peak id = index + 1, float32 maximum response);
    ties keep the earlier peak. Memory: the two arrays, plus one map at a time."""
    best = np.zeros(tuple(int(s) for s in shape), dtype=np.float32)
    labels = np.zeros(best.shape, dtype=np.uint32)
    for r in responses:
        region = best[r.window]
        better = r.values > region
        region[better] = r.values[better]
        labels[r.window][better] = r.peak + 1
    return labels, best


def threshold_labels(labels: np.ndarray, best: np.ndarray, threshold: float) -> np.ndarray:
    """The pseudo-labels at ``threshold``: the arg-max peak where its response exceeds it."""
    return np.where(best > float(threshold), labels, 0).astype(np.uint32)


def assign_pseudo_labels(
    responses: Iterable[Response], shape: Sequence[int], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(uint32 labels, float32 strongest response): voxel → the peak (id = index + 1) with the
    strongest response where it exceeds ``threshold``; ties keep the earlier peak."""
    labels, best = strongest_response(responses, shape)
    return threshold_labels(labels, best, threshold), best


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


def image_contrast(
    best: np.ndarray, image: np.ndarray, grid: Sequence[float], *, slab: int = 16
) -> np.ndarray:
    """Otsu's between-class variance ``w₀·w₁·(μ_fg − μ_bg)²`` of ``image`` between
    ``{best > t}`` and the rest, for every ``t`` of ``grid`` (one pass over z-slabs of
    ``slab`` planes: a histogram of ``best`` weighted by ``image``)."""
    ts = np.asarray(grid, dtype=np.float64)
    order = np.argsort(ts)
    counts = np.zeros(len(ts) + 1)
    sums = np.zeros(len(ts) + 1)
    for z in range(0, best.shape[0], int(slab)):
        b = np.asarray(best[z : z + int(slab)]).ravel()
        bins = np.searchsorted(ts[order], b, side="left")  # best > ts[k] <=> bin > k
        counts += np.bincount(bins, minlength=len(ts) + 1)
        weights = np.asarray(image[z : z + int(slab)], dtype=np.float64).ravel()
        sums += np.bincount(bins, weights=weights, minlength=len(ts) + 1)
    n_fg = np.cumsum(counts[::-1])[::-1][1:]  # voxels with bin > k
    s_fg = np.cumsum(sums[::-1])[::-1][1:]
    n, total = counts.sum(), sums.sum()
    n_bg = n - n_fg
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = s_fg / n_fg - (total - s_fg) / n_bg
        var = (n_fg / n) * (n_bg / n) * diff**2
    out = np.zeros(len(ts))
    out[order] = np.nan_to_num(var, nan=0.0)
    return out


def tune_threshold(
    labels: np.ndarray,
    best: np.ndarray,
    clicks: np.ndarray,
    grid: Sequence[float],
    *,
    image: np.ndarray | None = None,
    f1_tolerance: float = 0.05,
) -> tuple[float, list[dict[str, float]]]:
    """The pseudo-label threshold and the table (``labels, best``: :func:`strongest_response`).

    Without ``image``: the median threshold of ``grid`` among those with the best click F1 (the
    middle of the plateau; the larger one of the two middle values for an even count). With
    ``image`` (normalised, same shape): among the thresholds whose click F1 is within
    ``f1_tolerance`` of the best, the one whose foreground best separates the image intensity
    (Otsu's between-class variance, :func:`image_contrast`): the clicks fix the instances, the
    image fixes their extent.
    """
    ts = sorted(float(g) for g in grid)
    contrast = image_contrast(best, image, ts) if image is not None else np.zeros(len(ts))
    rows = []
    for t, c in zip(ts, contrast, strict=True):
        f1 = click_f1(threshold_labels(labels, best, t), clicks)
        rows.append({"threshold": t, **f1, "contrast": float(c)})
    best_f1 = max(r["f1"] for r in rows)
    if image is None:
        plateau = [r["threshold"] for r in rows if r["f1"] >= best_f1 - 1e-12]
        return plateau[len(plateau) // 2], rows
    near = [r for r in rows if r["f1"] >= best_f1 - float(f1_tolerance) - 1e-12]
    return max(near, key=lambda r: r["contrast"])["threshold"], rows
