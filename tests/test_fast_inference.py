"""Inference-only rewrites (fewlabel.inference.fast): same function, stated tolerances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fewlabel.detection.density.detnet import DMDetNet3D
from fewlabel.errors import ConfigError
from fewlabel.inference.fast import (
    FLOAT32_TOLERANCE,
    DirectConv3d,
    SeparableUpsample,
    cpu_has_bf16,
    interpolate_reference,
    model_runner,
    prepare_module,
    resolve_precision,
)
from fewlabel.models.unet import UNet


@pytest.mark.parametrize("factors", [(1, 2, 2), (2, 2, 2), (2, 1, 2)])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 7), (1, 1, 1, 1, 2)])
def test_separable_upsample_equals_trilinear_interpolation(factors, shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    expected = interpolate_reference(x, factors)
    got = SeparableUpsample(factors)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    cl = x.contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(SeparableUpsample(factors)(cl), expected, rtol=0, atol=1e-6)


def test_prepared_detnet_equals_original_in_float32():
    torch.manual_seed(0)
    net = DMDetNet3D(base_channels=4, depth=2).eval()
    fast = prepare_module(net, channels_last=True)  # the bf16 rewrites, run here in float32
    assert not any(isinstance(m, torch.nn.Upsample) for m in fast.modules())
    assert any(isinstance(m, torch.nn.Upsample) for m in net.modules())  # original untouched
    x = torch.randn(2, 1, 8, 20, 24)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), net(x), rtol=0, atol=1e-5)


def test_batchnorm_is_folded_into_the_convolutions():
    torch.manual_seed(0)
    net = UNet(base_channels=4, depth=1, norm="batch")
    for m in net.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    net.eval()
    fast = prepare_module(net)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in fast.modules())
    x = torch.randn(1, 1, 4, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), net(x), rtol=1e-5, atol=1e-5)


def test_precision_resolution():
    assert resolve_precision("float32", "cpu") == "float32"
    assert resolve_precision("auto", "cpu") == ("bfloat16" if cpu_has_bf16() else "float32")
    assert resolve_precision("auto", "cuda") == "float16"
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_precision("float16", "cpu")
    with pytest.raises(ConfigError, match="precision"):
        resolve_precision("double", "cpu")


def test_float32_runner_equals_module(rng):
    torch.manual_seed(1)
    net = DMDetNet3D(base_channels=4, depth=2).eval()
    batch = rng.normal(size=(2, 1, 8, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        ref = net(torch.from_numpy(batch)).numpy()
        got = model_runner(net, "cpu", "float32")(batch)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=FLOAT32_TOLERANCE)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 1, "out_channels": 8, "kernel_size": 3, "padding": 1, "bias": False},
        {"in_channels": 8, "out_channels": 8, "kernel_size": 3, "padding": 1},
        {"in_channels": 8, "out_channels": 8, "kernel_size": 3, "padding": 2, "dilation": 2},
        {"in_channels": 8, "out_channels": 16, "kernel_size": (1, 2, 2), "stride": (1, 2, 2)},
        {"in_channels": 8, "out_channels": 8, "kernel_size": 3, "padding": 1, "groups": 8},
    ],
)
def test_direct_conv3d_is_the_same_convolution(kwargs):
    torch.manual_seed(5)
    conv = torch.nn.Conv3d(**kwargs)
    assert DirectConv3d.applies_to(conv)
    x = torch.randn(1, kwargs["in_channels"], 6, 20, 18)
    with torch.inference_mode():
        expected = conv(x)
        torch.testing.assert_close(DirectConv3d(conv)(x), expected, rtol=1e-5, atol=1e-5)
        cl = x.contiguous(memory_format=torch.channels_last_3d)
        torch.testing.assert_close(DirectConv3d(conv)(cl), expected, rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast still casts it
            assert DirectConv3d(conv)(x).dtype == conv(x).dtype == torch.bfloat16
    assert not DirectConv3d.applies_to(torch.nn.Conv3d(1, 1, 3, padding="same"))
    assert not DirectConv3d.applies_to(torch.nn.Conv3d(1, 1, 3, padding_mode="reflect"))


def test_one_sample_float32_runner_never_takes_the_im2col_kernel(rng):
    """PyTorch sends a one-sample convolution with N·C·D·H ≤ 20480 to slow_conv3d (im2col);
    the runner's per-sample channels-last pass must reach oneDNN for every layer."""
    torch.manual_seed(6)
    net = DMDetNet3D(base_channels=8, depth=2).eval()
    batch = rng.normal(size=(2, 1, 16, 64, 64)).astype(np.float32)
    runner = model_runner(net, "cpu", "float32")
    with torch.inference_mode(), torch.profiler.profile() as prof:
        runner(batch)
    ops = {event.key for event in prof.key_averages()}
    assert "aten::mkldnn_convolution" in ops
    assert not any("slow_conv3d" in op for op in ops), sorted(ops)
    with torch.inference_mode(), torch.profiler.profile() as prof:
        net(torch.from_numpy(batch[:1]))  # the plain module does take it: the test can fail
    assert any("slow_conv3d" in event.key for event in prof.key_averages())


@pytest.mark.skipif(not cpu_has_bf16(), reason="CPU without native bfloat16 (AVX512-BF16/AMX)")
def test_bfloat16_runner_is_close_to_float32(rng):
    """bf16 weights and activations: density within 0.1 of float32 (random weights; the
    trained-model F1 comparison is in benchmarks/performance)."""
    torch.manual_seed(2)
    net = DMDetNet3D(base_channels=8, depth=2).eval()
    batch = rng.normal(size=(2, 1, 8, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        ref = net(torch.from_numpy(batch)).numpy()
        got = model_runner(net, "cpu", "bfloat16")(batch)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.abs(got - ref).max() < 0.1
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.99


def test_instance_norm_as_per_sample_batch_norm_is_the_same_function():
    torch.manual_seed(3)
    net = DMDetNet3D(base_channels=4, depth=1).eval()
    for m in net.modules():  # non-trivial affine parameters
        if isinstance(m, torch.nn.InstanceNorm3d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    fast = prepare_module(net, channels_last=True)
    assert not any(isinstance(m, torch.nn.InstanceNorm3d) for m in fast.modules())
    x = torch.randn(3, 1, 8, 20, 24)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), net(x), rtol=1e-5, atol=1e-5)
        cl = x.contiguous(memory_format=torch.channels_last_3d)
        fast_cl = fast.to(memory_format=torch.channels_last_3d)
        torch.testing.assert_close(fast_cl(cl), net(x), rtol=1e-5, atol=1e-5)


def test_float32_runner_of_a_batchnorm_unet_is_channels_last_and_equal(rng):
    torch.manual_seed(4)
    net = UNet(base_channels=4, depth=1, norm="batch").eval()
    batch = rng.normal(size=(2, 1, 4, 16, 16)).astype(np.float32)
    with torch.inference_mode():
        ref = net(torch.from_numpy(batch)).numpy()
        got = model_runner(net, "cpu", "float32")(batch)
    assert got.flags.c_contiguous
    np.testing.assert_allclose(got, ref, rtol=0, atol=FLOAT32_TOLERANCE)
