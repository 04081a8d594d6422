"""Test-time mirroring and seed ensembles (fewlabel.models.compose) and their model folders."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_nets import TinyConv

from fewlabel.errors import ModelError
from fewlabel.models.compose import Averaged, Mirrored, compose, mirror_axes
from fewlabel.models.store import load_model, save_model

torch.set_num_threads(1)


def _nets(n: int) -> list[TinyConv]:
    torch.manual_seed(0)
    return [TinyConv().eval() for _ in range(n)]


def test_mirrored_is_the_mean_over_flips_and_equivariant() -> None:
    (net,) = _nets(1)
    x = torch.randn(1, 1, 5, 9, 11)
    mirrored = Mirrored(net, ("y", "x"))
    assert mirrored.flips == [(), (-2,), (-1,), (-2, -1)]
    with torch.no_grad():
        expected = sum(torch.flip(net(torch.flip(x, d)), d) for d in ([], [-2], [-1], [-2, -1]))
        out = mirrored(x)
        torch.testing.assert_close(out, expected / 4)
        assert not torch.allclose(out, net(x), atol=1e-4)  # a non-symmetric net: it changes
        # flipping the input flips the output (the plain network is not equivariant)
        torch.testing.assert_close(mirrored(torch.flip(x, [-1])), torch.flip(out, [-1]))
        assert not torch.allclose(net(torch.flip(x, [-1])), torch.flip(net(x), [-1]), atol=1e-4)
        assert len(Mirrored(net, ("z", "y", "x")).flips) == 8
    assert mirrored.receptive_field() == (5, 5, 5)  # forwarded for the engine's margins
    assert mirror_axes(False) == ["y", "x"] and mirror_axes(True) == ["z", "y", "x"]
    assert mirror_axes(True, mirror=False) == []
    with pytest.raises(ValueError, match="among z, y, x"):
        Mirrored(net, ("c",))


def test_averaged_is_the_members_mean() -> None:
    a, b = _nets(2)
    x = torch.randn(1, 1, 5, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(Averaged([a, b])(x), (a(x) + b(x)) / 2)
        assert compose([a]) is a
        composed = compose([a, b], ["x"])
        expected = a(x) + b(x) + torch.flip(a(torch.flip(x, [-1])) + b(torch.flip(x, [-1])), [-1])
        torch.testing.assert_close(composed(x), expected / 4)


def test_model_folder_records_and_rebuilds_the_composition(tmp_path, monkeypatch) -> None:
    from fewlabel.models import store

    monkeypatch.setitem(store._REGISTRY, "tinyconv", lambda **_: TinyConv())
    a, b = _nets(2)
    arch = {"name": "tinyconv", "kwargs": {}}
    save_model(tmp_path / "m", a, arch=arch, training={}, members=[b], mirror_axes=["y", "x"])
    described = json.loads((tmp_path / "m" / "model.json").read_text())
    assert described["inference"] == {"members": 2, "mirror_axes": ["y", "x"]}
    assert (tmp_path / "m" / "weights_member1.pt").is_file()
    loaded = load_model(tmp_path / "m")
    x = torch.randn(1, 1, 5, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), compose([a, b], ["y", "x"])(x))
        torch.testing.assert_close(loaded.network(x), a(x))  # what fine-tuning starts from
    # a folder without the record is the plain network, as before
    save_model(tmp_path / "plain", a, arch=arch, training={})
    plain = load_model(tmp_path / "plain")
    assert "inference" not in json.loads((tmp_path / "plain" / "model.json").read_text())
    assert isinstance(plain.module, TinyConv) and plain.inference == {}
    # a damaged record or a missing member is a clear error
    (tmp_path / "m" / "weights_member1.pt").unlink()
    with pytest.raises(ModelError, match="weights_member1.pt is missing"):
        load_model(tmp_path / "m")
    described["inference"] = {"members": 0, "mirror_axes": ["q"]}
    (tmp_path / "m" / "model.json").write_text(json.dumps(described))
    with pytest.raises(ModelError, match="'inference'"):
        load_model(tmp_path / "m")
