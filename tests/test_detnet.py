"""DM-DetNet3D architecture and the model-folder store (save/load round trip, errors)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from torch import nn

from fewlabel.detection.density.detnet import DMDetNet3D
from fewlabel.errors import ConfigError, ModelError
from fewlabel.models.store import (
    load_model,
    register_architecture,
    registered_architectures,
    save_model,
)

torch.set_num_threads(1)


class _Other(nn.Module):
    """A stand-in for another architecture (e.g. the ISL U-Net)."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, channels, 3, padding=1)
        self.out = nn.Conv3d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(x))


register_architecture("test_other_net", _Other, replace=True)

TINY = {"base_channels": 4, "depth": 2, "blocks_per_level": 1}


@pytest.mark.parametrize("shape", [(5, 17, 23), (1, 12, 9), (8, 32, 32)])
@pytest.mark.parametrize("pool_z", [False, True])
def test_output_shape_and_range(shape: tuple[int, int, int], pool_z: bool) -> None:
    torch.manual_seed(0)
    model = DMDetNet3D(**TINY, pool_z=pool_z).eval()
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 1, *shape)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_architecture_options() -> None:
    model = DMDetNet3D(
        base_channels=4,
        depth=2,
        pool_kernels=[[1, 2, 2], [2, 2, 2]],
        upsample="transposed",
        blocks_per_level=2,
    )
    assert model.total_factor == (2, 4, 4)
    assert model(torch.rand(1, 1, 3, 10, 10)).shape == (1, 1, 3, 10, 10)
    # no long skip connections: nothing but the hourglass path
    names = {n.split(".")[0] for n, _ in model.named_children()}
    assert names == {"stem", "encoder", "bottleneck", "decoder", "head"}
    assert any(isinstance(m, nn.InstanceNorm3d) and m.affine for m in model.modules())
    with pytest.raises(ConfigError):
        DMDetNet3D(depth=2, pool_kernels=[[1, 2, 2]])
    with pytest.raises(ConfigError):
        DMDetNet3D(upsample="nearest")


def test_receptive_field_grows_with_depth_and_respects_anisotropy() -> None:
    flat = DMDetNet3D(base_channels=2, depth=2, pool_z=False).receptive_field()
    iso = DMDetNet3D(base_channels=2, depth=2, pool_z=True).receptive_field()
    deeper = DMDetNet3D(base_channels=2, depth=3, pool_z=True).receptive_field()
    assert flat[0] < flat[1] == flat[2]
    assert iso[0] == iso[1] == iso[2]
    assert all(d > i for d, i in zip(deeper, iso, strict=True))
    assert DMDetNet3D(base_channels=2, depth=0).receptive_field() == (7, 7, 7)


def _strip_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.InstanceNorm3d):
            setattr(module, name, nn.Identity())
        else:
            _strip_norms(child)


def test_receptive_field_bounds_the_real_influence() -> None:
    torch.manual_seed(0)
    model = DMDetNet3D(base_channels=2, depth=1, pool_z=True).eval()
    rf = model.receptive_field()
    # instance norm mixes the whole input through its statistics; the receptive field is about
    # the convolution path, so measure it without normalisation
    _strip_norms(model)
    x = torch.rand(1, 1, 40, 40, 40, requires_grad=True)
    y = model(x)
    (grad,) = torch.autograd.grad(y[0, 0, 20, 20, 20], x)
    nz = grad[0, 0].abs() > 0
    for axis in range(3):
        idx = nz.nonzero()[:, axis]
        extent = int(idx.max() - idx.min()) + 1
        assert rf[axis] - 4 <= extent <= rf[axis]


def test_save_load_round_trip_identical_outputs(tmp_path) -> None:
    torch.manual_seed(1)
    model = DMDetNet3D(**TINY).eval()
    arch = {"name": "dmdetnet3d", "kwargs": {"in_channels": 1, **TINY}}
    curve = pd.DataFrame({"epoch": [1, 2], "train_loss": [2.0, 1.0], "val_loss": [2.5, 1.5]})
    folder = save_model(
        tmp_path / "model",
        model,
        arch=arch,
        training={"seed": 1},
        thresholds={"detection_threshold": 0.4},
        curve=curve,
        normalization={"percentiles": [1, 99.8]},
    )
    for name in (
        "weights.pt",
        "model.json",
        "training.json",
        "thresholds.json",
        "curve.tsv",
        "curve.png",
        "normalization.json",
    ):
        assert (folder / name).is_file(), name
    assert json.loads((folder / "model.json").read_text())["name"] == "dmdetnet3d"
    loaded = load_model(folder, expect="dmdetnet3d")
    assert not loaded.module.training
    assert loaded.thresholds["detection_threshold"] == 0.4
    assert loaded.normalization == {"percentiles": [1, 99.8]}
    assert loaded.training["seed"] == 1
    x = torch.rand(1, 1, 5, 19, 21)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.module(x))
    assert "dmdetnet3d" in registered_architectures()


def test_load_other_architecture_is_a_model_error(tmp_path) -> None:
    save_model(
        tmp_path / "other", _Other(), arch={"name": "test_other_net", "channels": 4}, training={}
    )
    with pytest.raises(ModelError, match="holds a 'test_other_net' model.*'dmdetnet3d'"):
        load_model(tmp_path / "other", expect="dmdetnet3d")
    # weights of another architecture behind a dmdetnet3d model.json
    save_model(tmp_path / "mixed", _Other(), arch={"name": "test_other_net"}, training={})
    (tmp_path / "mixed" / "model.json").write_text(
        json.dumps({"name": "dmdetnet3d", "kwargs": TINY})
    )
    with pytest.raises(ModelError, match="do not fit architecture 'dmdetnet3d'"):
        load_model(tmp_path / "mixed", expect="dmdetnet3d")
    # same architecture, other width: shapes differ
    save_model(
        tmp_path / "wide",
        DMDetNet3D(base_channels=6, depth=2),
        arch={"name": "dmdetnet3d", "kwargs": {"base_channels": 6}},
        training={},
    )
    (tmp_path / "wide" / "model.json").write_text(
        json.dumps({"name": "dmdetnet3d", "kwargs": TINY})
    )
    with pytest.raises(ModelError, match="other shapes"):
        load_model(tmp_path / "wide")


def test_missing_files_and_unknown_architecture(tmp_path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "nope")
    save_model(tmp_path / "m", DMDetNet3D(**TINY), arch={"name": "dmdetnet3d", **TINY}, training={})
    (tmp_path / "m" / "weights.pt").unlink()
    with pytest.raises(ModelError, match="weights.pt is missing"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "model.json").write_text(json.dumps({"name": "no_such_net", "kwargs": {}}))
    with pytest.raises(ModelError, match="unknown architecture 'no_such_net'"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "model.json").unlink()
    with pytest.raises(ModelError, match="lacks model.json"):
        load_model(tmp_path / "m")


class _Payload:
    """Arbitrary pickled object: must be refused by torch.load(weights_only=True)."""

    def __init__(self) -> None:
        self.value = 1


def test_weights_are_loaded_with_weights_only(tmp_path) -> None:
    save_model(tmp_path / "m", DMDetNet3D(**TINY), arch={"name": "dmdetnet3d", **TINY}, training={})
    state = DMDetNet3D(**TINY).state_dict()
    state["payload"] = _Payload()  # type: ignore[assignment]
    torch.save(state, tmp_path / "m" / "weights.pt")
    with pytest.raises(ModelError, match="cannot load weights"):
        load_model(tmp_path / "m")


def test_save_is_atomic_on_failure(tmp_path) -> None:
    with pytest.raises(ModelError):
        save_model(tmp_path / "bad", DMDetNet3D(**TINY), arch={"name": "no_such_net"}, training={})
    assert not (tmp_path / "bad").exists()
    assert list(tmp_path.iterdir()) == []
