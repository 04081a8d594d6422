"""Inference-only rewrites of a trained network that compute the same function faster.

:func:`prepare_module` returns a copy of a model (eval mode, weights untouched in the original)
in which

* ``InstanceNorm3d`` (affine, batch statistics) becomes :class:`SampleInstanceNorm`: for one
  sample, instance normalisation *is* batch normalisation with batch statistics
  (``y = γ (x − μ_c)/√(σ²_c + ε) + β``, moments over the sample's voxels; Ulyanov et al. 2016,
  eq. 4 vs Ioffe & Szegedy 2015, Alg. 1), and PyTorch's batch-norm kernel runs on channels-last
  tensors in place of layout, where its instance-norm path copies the tensor twice;
* eval-mode ``BatchNorm`` following a convolution is folded into that convolution's weights
  (``W' = W·γ/√(σ²_run + ε)``, ``b' = (b − μ_run)·γ/√(σ²_run + ε) + β``);
* ``nn.Upsample(mode='trilinear', align_corners=False)`` with integer factors 1 or 2 becomes
  :class:`SeparableUpsample`, the same linear interpolation written as two shifted
  multiply-adds per axis (``out[2i] = ¾x[i] + ¼x[i−1]``, ``out[2i+1] = ¾x[i] + ¼x[i+1]``,
  indices clamped at the borders, exactly PyTorch's ``align_corners=False`` weights; PyTorch's
  own kernel is slow for bfloat16 on CPU);
* ``nn.Conv3d`` becomes :class:`DirectConv3d`, the same convolution sent to oneDNN for every
  input: PyTorch's float32 dispatcher gives a one-sample 3D convolution with few channels
  (N·C·D·H ≤ 20480, e.g. 1 × 8 × 16 × 128) to its im2col kernel, 4-8× slower here.

:func:`model_runner` then runs the prepared copy on CPU one sample at a time in
channels-last ``torch.channels_last_3d`` tensors (oneDNN's direct kernels need no layout
reorders there, and one sample's activations stay in cache), in the chosen
:func:`resolve_precision`: ``bfloat16`` on CPUs with native bf16 matrix units
(AVX512-BF16 / AMX: weights and activations in bf16; normalisation statistics are accumulated
in float32 by PyTorch's kernels), float16 autocast on CUDA, float32 otherwise (outputs equal
the original module within :data:`FLOAT32_TOLERANCE`: the same sums in another order).

Training is unaffected: the trainers build and train the original modules.
Measured speed-ups and output differences: ``benchmarks/performance/results.md``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fewlabel.errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
FLOAT32_TOLERANCE = 1e-4
"""Largest difference of the float32 fast path to the original module (outputs of order 1):
channels-last convolutions and per-sample batch-norm statistics sum in another order."""


class SampleInstanceNorm(nn.Module):
    """Instance normalisation computed per sample with the batch-norm kernel (no copies of
    channels-last tensors); same function as the ``InstanceNorm3d`` it replaces."""

    def __init__(self, norm: nn.modules.instancenorm._InstanceNorm) -> None:
        super().__init__()
        self.weight = norm.weight
        self.bias = norm.bias
        self.eps = float(norm.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return torch.cat([self(x[i : i + 1]) for i in range(x.shape[0])])


class DirectConv3d(nn.Module):
    """A zero-padded ``nn.Conv3d`` computed by oneDNN (``torch.mkldnn_convolution``) on CPU
    whatever the batch and channel counts; PyTorch's own dispatch elsewhere and under autocast
    (which casts ``conv3d``, not the oneDNN op). Same function."""

    def __init__(self, conv: nn.Conv3d) -> None:
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.stride = tuple(conv.stride)
        self.padding = tuple(conv.padding)
        self.dilation = tuple(conv.dilation)
        self.groups = int(conv.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and not torch.is_autocast_enabled("cpu"):
            return torch.mkldnn_convolution(
                x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
            )
        return F.conv3d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )

    @staticmethod
    def applies_to(module: nn.Module) -> bool:
        """A plain zero-padded Conv3d (numeric padding) on a build with oneDNN."""
        return (
            type(module) is nn.Conv3d
            and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)
            and torch.backends.mkldnn.is_available()
        )


class SeparableUpsample(nn.Module):
    """Linear up-sampling by integer factors 1 or 2 per axis (``align_corners=False``)."""

    def __init__(self, factors: tuple[int, ...]) -> None:
        super().__init__()
        self.factors = tuple(int(f) for f in factors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis, factor in enumerate(self.factors, start=2):
            if factor == 2:
                x = _double(x, axis)
        return x


def _double(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Linear ×2 along ``axis`` written straight into the interleaved output (no shifted
    copies): even ``out[2i] = lerp(x[i], x[i−1], ¼)``, odd ``out[2i+1] = lerp(x[i], x[i+1], ¼)``,
    ``out[0] = x[0]``, ``out[2n−1] = x[n−1]`` (the clamped border weights)."""
    n = x.shape[axis]
    shape = list(x.shape)
    shape[axis] = 2 * n
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(x))
    index = [slice(None)] * x.dim()
    index[axis] = slice(0, None, 2)
    even = out[tuple(index)]
    index[axis] = slice(1, None, 2)
    odd = out[tuple(index)]
    even.narrow(axis, 0, 1).copy_(x.narrow(axis, 0, 1))
    odd.narrow(axis, n - 1, 1).copy_(x.narrow(axis, n - 1, 1))
    if n > 1:
        head, tail = x.narrow(axis, 0, n - 1), x.narrow(axis, 1, n - 1)
        torch.lerp(tail, head, 0.25, out=even.narrow(axis, 1, n - 1))
        torch.lerp(head, tail, 0.25, out=odd.narrow(axis, 0, n - 1))
    return out


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _upsample_factors(module: nn.Upsample) -> tuple[int, ...] | None:
    """Integer factors 1/2 of a linear ``align_corners=False`` nn.Upsample, else None."""
    if module.mode not in ("trilinear", "bilinear", "linear") or module.align_corners:
        return None
    if module.size is not None or module.scale_factor is None:
        return None
    nd = {"linear": 1, "bilinear": 2, "trilinear": 3}[module.mode]
    scale = module.scale_factor
    factors = tuple(scale) if isinstance(scale, (tuple, list)) else (scale,) * nd
    if any(float(f) not in (1.0, 2.0) for f in factors):
        return None
    return tuple(int(f) for f in factors)


def _fold_batchnorm(seq: nn.Sequential) -> None:
    """Fold eval-mode BatchNorm layers that directly follow a convolution into it (in place)."""
    names = list(seq._modules)
    for a, b in zip(names, names[1:], strict=False):
        conv, bn = seq._modules[a], seq._modules[b]
        if (
            isinstance(conv, nn.modules.conv._ConvNd)
            and not isinstance(conv, nn.modules.conv._ConvTransposeNd)
            and isinstance(bn, nn.modules.batchnorm._BatchNorm)
            and bn.track_running_stats
            and bn.running_mean is not None
        ):
            seq._modules[a] = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
            seq._modules[b] = nn.Identity()


def prepare_module(module: nn.Module, *, channels_last: bool = False) -> nn.Module:
    """An eval-mode copy of ``module`` with BatchNorm folded; with ``channels_last`` also
    :class:`SampleInstanceNorm`, :class:`SeparableUpsample` and :class:`DirectConv3d` (for
    one-sample channels-last runs on CPU)."""
    fast = copy.deepcopy(module).eval()
    for parent in list(fast.modules()):
        if isinstance(parent, nn.Sequential):
            _fold_batchnorm(parent)
        for name, child in list(parent.named_children()):
            if not channels_last:
                continue
            if (
                isinstance(child, nn.InstanceNorm3d)
                and not child.track_running_stats
                and child.affine
            ):
                setattr(parent, name, SampleInstanceNorm(child))
            elif isinstance(child, nn.Upsample):
                factors = _upsample_factors(child)
                if factors is not None:
                    setattr(parent, name, SeparableUpsample(factors))
            elif DirectConv3d.applies_to(child):
                setattr(parent, name, DirectConv3d(child))
    return fast


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions natively here (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` → ``float16`` on CUDA, ``bfloat16`` on CPUs with native bf16, else ``float32``."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"predict precision must be one of {list(PRECISIONS)}; got {precision!r}."
        )
    kind = torch.device(device).type
    if precision == "auto":
        if kind == "cuda":
            return "float16"
        return "bfloat16" if cpu_has_bf16() else "float32"
    if precision == "float16" and kind != "cuda":
        raise ConfigError(
            "predict precision float16 needs a CUDA device.",
            fix="use auto, float32 or bfloat16 on CPU.",
        )
    return precision


def model_runner(
    module: nn.Module, device: str, precision: str = "auto", *, optimize: bool = True
) -> Callable[[np.ndarray], np.ndarray]:
    """``numpy (B, C, *S) float32 -> numpy float32`` running ``module`` on ``device``.

    ``optimize``: run :func:`prepare_module`'s copy (same function, faster); on CPU one
    channels-last sample at a time (module docstring); ``precision``: see
    :func:`resolve_precision`. Call it inside ``torch.inference_mode()``.
    """
    dev = torch.device(device)
    dtype = resolve_precision(precision, device)
    cast = torch.bfloat16 if dtype == "bfloat16" else None
    # 3D networks only (a 2D convolution's weight has no 3D layout)
    conv3d = not any(
        isinstance(m, nn.modules.conv._ConvNd) and m.weight.dim() != 5 for m in module.modules()
    )
    # CPU: one sample at a time, channels-last, every layer in a copy-free form (measured
    # 2-3x in float32, 6x in bf16: benchmarks/performance); CUDA: channels-last only without
    # instance norm (PyTorch's instance norm copies channels-last tensors)
    per_sample = optimize and conv3d and dev.type == "cpu"
    net = prepare_module(module, channels_last=per_sample) if optimize else module
    instance_norm = any(isinstance(m, nn.modules.instancenorm._InstanceNorm) for m in net.modules())
    channels_last = per_sample or (optimize and conv3d and (cast is not None or not instance_norm))
    if cast is not None or channels_last:
        if net is module:
            net = copy.deepcopy(module)
        if cast is not None:
            net = net.to(dtype=cast)
        if channels_last:
            net = net.to(memory_format=torch.channels_last_3d)
    amp_dtype = torch.float16 if dtype == "float16" else None
    log.info(
        "inference: %s, %s%s",
        dtype,
        "optimised copy" if optimize else "module as is",
        ", channels-last" if channels_last else "",
    )

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(dev)
        if cast is not None:
            x = x.to(cast)
        if channels_last and x.dim() == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        parts = [x[i : i + 1] for i in range(x.shape[0])] if per_sample else [x]
        outs = []
        for part in parts:
            if amp_dtype is None:
                y = net(part)
            else:
                with torch.autocast(dev.type, dtype=amp_dtype):
                    y = net(part)
            if isinstance(y, (tuple, list)):
                y = y[0]
            outs.append(y.float().contiguous().cpu().numpy())
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    if precision != "auto" or cast is None:
        return run
    fallback: list[Callable[[np.ndarray], np.ndarray]] = []

    def run_auto(batch: np.ndarray) -> np.ndarray:
        """``auto``: bf16, unless the model holds a layer without a CPU bf16 kernel (e.g.
        AvgPool3d): then float32 from the first call on, said once in the log."""
        if fallback:
            return fallback[0](batch)
        try:
            return run(batch)
        except (NotImplementedError, RuntimeError) as error:
            if "BFloat16" not in str(error):
                raise
            log.warning("inference: %s; precision auto falls back to float32", error)
            fallback.append(model_runner(module, device, "float32", optimize=optimize))
            return fallback[0](batch)

    return run_auto


def describe(device: str, precision: str) -> dict[str, Any]:
    """What :func:`model_runner` will do (for the prediction's attributes)."""
    return {"precision": resolve_precision(precision, device), "cpu_bf16": cpu_has_bf16()}


def interpolate_reference(x: torch.Tensor, factors: tuple[int, ...]) -> torch.Tensor:
    """PyTorch's own linear interpolation (the reference :class:`SeparableUpsample` equals)."""
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(factors)]
    return F.interpolate(x, scale_factor=factors, mode=mode, align_corners=False)
