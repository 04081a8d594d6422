"""Inference-only rewrites (fewlabel.inference.fast): same function, stated tolerances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fewlabel.detection.density.detnet import DMDetNet3D
from fewlabel.errors import ConfigError
from fewlabel.inference.fast import (
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
    fast = prepare_module(net, bf16=True)  # the bf16 rewrites, run here in float32
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
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


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
    fast = prepare_module(net, bf16=True)
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
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
