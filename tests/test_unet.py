"""U-Net / Segmenter architectures: shapes (2D, 3D, odd sizes), pooling, registry round trips."""

from __future__ import annotations

import pytest
import torch

from fewlabel.errors import ConfigError
from fewlabel.models.store import build_model, load_model, save_model
from fewlabel.models.unet import Segmenter, UNet


@pytest.mark.parametrize("shape", [(1, 1, 8, 32, 32), (2, 1, 7, 33, 21), (1, 1, 1, 5, 9)])
def test_unet3d_keeps_spatial_shape_for_any_size(shape):
    torch.manual_seed(0)
    net = UNet(dims=3, in_channels=1, out_channels=3, base_channels=4, depth=2).eval()
    with torch.no_grad():
        out = net(torch.randn(*shape))
    assert out.shape == (shape[0], 3, *shape[2:])


def test_unet2d_planes_as_channels():
    """A 13-plane stack is fed as 13 channels of a 2D U-Net: (B, 13, Y, X) -> (B, 1, Y, X)."""
    net = UNet(dims=2, in_channels=13, out_channels=1, base_channels=4, depth=3).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 13, 37, 50))
    assert out.shape == (2, 1, 37, 50)
    assert net.receptive_field()[0] == 1
    with pytest.raises(ValueError):
        net(torch.randn(1, 13, 1, 37, 50))  # a 5D tensor is not a 2D batch


def test_anisotropic_pooling_and_receptive_field():
    iso = UNet(dims=3, depth=2, base_channels=4, pool_z=True)
    aniso = UNet(dims=3, depth=2, base_channels=4, pool_z=False)
    assert iso.total_factor == (4, 4, 4)
    assert aniso.total_factor == (1, 4, 4)
    rf_iso, rf_aniso = iso.receptive_field(), aniso.receptive_field()
    assert rf_aniso[1:] == rf_iso[1:] and rf_aniso[0] < rf_iso[0]
    assert UNet(dims=3, depth=3, base_channels=4).receptive_field()[1] > rf_iso[1]
    explicit = UNet(dims=3, depth=2, base_channels=4, pool_kernels=[[1, 2, 2], [2, 2, 2]])
    assert explicit.total_factor == (2, 4, 4)


def test_final_activation_and_norm_options():
    net = UNet(dims=3, base_channels=4, depth=1, norm="instance", final_activation="sigmoid")
    with torch.no_grad():
        out = net(torch.randn(2, 1, 4, 16, 16))
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    with pytest.raises(ConfigError):
        UNet(dims=4)
    with pytest.raises(ConfigError):
        UNet(norm="group")


def test_segmenter_head_init_is_centred_fluorescence_activation():
    torch.manual_seed(0)
    seg = Segmenter(dims=3, base_channels=4, depth=1).eval()
    seg.init_head_from_fluorescence(gain=4.0)
    x = torch.randn(1, 1, 4, 16, 16)
    with torch.no_grad():
        f = seg.fluorescence(x)[:, 0]
        out = seg(x)
    assert out.shape == (1, 2, 4, 16, 16)
    torch.testing.assert_close(out[:, 0], 4.0 * (f - 0.5), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 1], torch.relu(f - 0.5), atol=1e-5, rtol=1e-5)


def test_registry_round_trip_rebuilds_segmenter_from_folder(tmp_path):
    torch.manual_seed(0)
    kwargs = {
        "dims": 2,
        "in_channels": 3,
        "base_channels": 4,
        "depth": 1,
        "head_channels": 6,
        "head_kernel": 1,
    }
    seg = build_model({"name": "segmenter", "kwargs": kwargs}).eval()
    save_model(tmp_path / "m", seg, arch={"name": "segmenter", "kwargs": kwargs}, training={})
    loaded = load_model(tmp_path / "m", expect="segmenter")
    x = torch.randn(1, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), seg(x))
    assert isinstance(build_model({"name": "unet", "kwargs": {"dims": 3, "depth": 1}}), UNet)
