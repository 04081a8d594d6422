"""Segmentation loss library: hand-computed values, gradients, presets, mask+distance balancing."""

from __future__ import annotations

import math

import pytest
import torch

from fewlabel.errors import ConfigError
from fewlabel.segmentation import losses as S
from fewlabel.segmentation import mask_distance as M

LN2 = math.log(2.0)


@pytest.fixture
def tiny() -> tuple[torch.Tensor, torch.Tensor]:
    # p = σ(z) = [0.5, 0.75]; g = [1, 0]
    z = torch.tensor([0.0, math.log(3.0)])
    g = torch.tensor([1.0, 0.0])
    return z, g


def test_weighted_bce_known_value(tiny):
    z, g = tiny
    # terms: w·(−ln 0.5) = 2 ln2 and −ln(1 − 0.75) = 2 ln2 → mean 2 ln2
    assert S.weighted_bce(z, g, w_cell=2.0).item() == pytest.approx(2 * LN2, rel=1e-6)
    # unweighted: (ln2 + 2 ln2)/2
    assert S.weighted_bce(z, g).item() == pytest.approx(1.5 * LN2, rel=1e-6)


def test_soft_dice_known_value(tiny):
    z, g = tiny
    assert S.soft_dice(z, g, smooth=0.0).item() == pytest.approx(1 - 1.0 / 2.25, rel=1e-6)
    assert S.soft_dice(z, g, smooth=1.0).item() == pytest.approx(1 - 2.0 / 3.25, rel=1e-6)


def test_focal_known_value(tiny):
    z, g = tiny
    # p_t = [0.5, 0.25]: (0.5²·ln2 + 0.75²·2ln2)/2
    assert S.focal(z, g, gamma=2.0).item() == pytest.approx((0.25 + 1.125) * LN2 / 2, rel=1e-6)
    # α = 0.25: α_t = [0.25, 0.75]
    expected = (0.25 * 0.25 + 0.75 * 1.125) * LN2 / 2
    assert S.focal(z, g, gamma=2.0, alpha=0.25).item() == pytest.approx(expected, rel=1e-6)
    # γ = 0 is plain BCE
    assert S.focal(z, g, gamma=0.0).item() == pytest.approx(S.weighted_bce(z, g).item(), rel=1e-6)


def test_tversky_and_focal_tversky_known_value(tiny):
    z, g = tiny
    # TP = 0.5, FP = 0.75, FN = 0.5; α = 1 − β = 0.3 on FP, β = 0.7 on FN
    ti = 0.5 / (0.5 + 0.3 * 0.75 + 0.7 * 0.5)
    assert S.tversky_index(z, g, beta=0.7, smooth=0.0).item() == pytest.approx(ti, rel=1e-6)
    ft = S.focal_tversky(z, g, beta=0.7, gamma=0.75, smooth=0.0).item()
    assert ft == pytest.approx((1 - ti) ** 0.75, rel=1e-6)
    # α = β = 0.5 reduces to Dice
    dice = S.soft_dice(z, g, smooth=0.0).item()
    assert 1 - S.tversky_index(z, g, alpha=0.5, beta=0.5, smooth=0.0).item() == pytest.approx(dice)


def test_perfect_prediction_gives_zero_overlap_losses():
    g = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    z = (g * 2 - 1) * 30.0
    assert S.soft_dice(z, g).item() == pytest.approx(0.0, abs=1e-6)
    assert S.focal_tversky(z, g).item() == pytest.approx(0.0, abs=1e-4)
    assert S.weighted_bce(z, g, w_cell=3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert S.focal(z, g).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "name", ["bce", "dice", "focal", "focal_tversky", "combined", "combined_ft"]
)
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_gradients_finite_including_extreme_and_perfect_logits(name, scale):
    torch.manual_seed(0)
    g = (torch.rand(2, 1, 4, 6, 6) > 0.5).float()
    loss = S.build_loss(name)
    for logits in (torch.randn(2, 1, 4, 6, 6) * scale, (g * 2 - 1) * 50.0):
        logits = logits.clone().requires_grad_(True)
        value = loss(logits, g)
        value.backward()
        assert torch.isfinite(value)
        assert torch.isfinite(logits.grad).all()


def test_two_channel_logits_equal_softmax_foreground(tiny):
    torch.manual_seed(1)
    pred = torch.randn(2, 2, 3, 5)
    g = (torch.rand(2, 3, 5) > 0.5).float()
    z = pred[:, 1] - pred[:, 0]
    for name, func in [("bce", S.weighted_bce), ("dice", S.soft_dice), ("focal", S.focal)]:
        assert S.build_loss(name)(pred, g).item() == pytest.approx(func(z, g).item(), rel=1e-5)
    # one-hot targets and (B, 1, ...) targets are accepted
    onehot = torch.stack([1 - g, g], dim=1)
    assert S.build_loss("dice")(pred, onehot).item() == pytest.approx(S.soft_dice(z, g).item())
    assert S.build_loss("dice")(pred[:, 1:], g[:, None]).item() == pytest.approx(
        S.soft_dice(pred[:, 1], g).item()
    )


def test_valid_mask_ignores_voxels():
    z = torch.tensor([[2.0, -1.0, 5.0]])
    g = torch.tensor([[1.0, 0.0, 0.0]])
    valid = torch.tensor([[1.0, 1.0, 0.0]])
    expected = S.weighted_bce(z[:, :2], g[:, :2])
    assert S.weighted_bce(z, g, valid=valid).item() == pytest.approx(expected.item(), rel=1e-6)
    assert S.soft_dice(z, g, valid=valid).item() == pytest.approx(
        S.soft_dice(z[:, :2], g[:, :2]).item(), rel=1e-6
    )


@pytest.mark.parametrize("preset", sorted(S.PRESETS))
def test_presets_are_weighted_sums_as_given(preset):
    torch.manual_seed(2)
    pred = torch.randn(2, 1, 4, 4)
    g = (torch.rand(2, 1, 4, 4) > 0.6).float()
    z, t = pred[:, 0], g[:, 0]
    l1, l2, l3 = S.PRESETS[preset]
    bce, dice, foc = S.weighted_bce(z, t, w_cell=2.0), S.soft_dice(z, t), S.focal(z, t)
    ft = S.focal_tversky(z, t)
    got = S.build_loss("combined", preset=preset, w_cell=2.0)(pred, g).item()
    assert got == pytest.approx((l1 * bce + l2 * dice + l3 * foc).item(), rel=1e-6)
    got_ft = S.build_loss("combined_ft", preset=preset, w_cell=2.0)(pred, g).item()
    assert got_ft == pytest.approx((l1 * bce + l2 * ft + l3 * foc).item(), rel=1e-6)


def test_preset_table():
    assert S.PRESETS == {
        "balanced": (0.3, 0.3, 0.4),
        "overcrowd": (0.2, 0.5, 0.3),
        "cellvit": (0.5, 0.3, 0.5),
    }
    pred = torch.zeros(1, 1, 2, 2)
    g = torch.ones(1, 1, 2, 2)
    explicit = S.build_loss("combined", weights=[0.3, 0.3, 0.4])(pred, g)
    assert explicit.item() == pytest.approx(S.build_loss("combined")(pred, g).item())


def test_balance_alpha():
    assert M.balance_alpha(4.0, 0.5) == pytest.approx(8.0)
    assert M.balance_alpha(torch.tensor(1.5), torch.tensor(3.0)) == pytest.approx(0.5)
    assert M.balance_alpha(1.0, 0.0) == 1.0
    assert M.balance_alpha(float("nan"), 1.0) == 1.0


def test_mask_distance_fixes_alpha_on_first_call_and_saves_it():
    torch.manual_seed(3)
    mask = (torch.rand(2, 1, 4, 8, 8) > 0.5).float()
    dist = torch.rand(2, 1, 4, 8, 8) * 5
    target = torch.cat([mask, dist], dim=1)
    pred = torch.randn(2, 2, 4, 8, 8)
    loss = S.build_loss("mask_distance", w_cell=2.0)
    assert not loss.alpha_is_set
    mse0 = ((pred[:, 1] - dist[:, 0]) ** 2).mean()
    bce0 = S.weighted_bce(pred[:, 0], mask[:, 0], w_cell=2.0)
    first = loss(pred, target)
    assert loss.alpha.item() == pytest.approx((mse0 / bce0).item(), rel=1e-5)
    assert first.item() == pytest.approx(2 * mse0.item(), rel=1e-5)  # balanced: equal halves
    # α stays fixed on later batches
    pred2 = pred * 0.5
    expected = ((pred2[:, 1] - dist[:, 0]) ** 2).mean() + loss.alpha * S.weighted_bce(
        pred2[:, 0], mask[:, 0], w_cell=2.0
    )
    assert loss(pred2, target).item() == pytest.approx(expected.item(), rel=1e-5)
    # α is part of the state dict → a resumed loss keeps it
    again = S.build_loss("mask_distance", w_cell=2.0)
    again.load_state_dict(loss.state_dict())
    assert again.alpha.item() == pytest.approx(loss.alpha.item())
    # gradients finite
    p = pred.clone().requires_grad_(True)
    again(p, target).backward()
    assert torch.isfinite(p.grad).all()


def test_mask_distance_fixed_alpha_and_other_mask_loss():
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.stack([torch.ones(1, 2, 2), torch.full((1, 2, 2), 2.0)], dim=1)
    loss = S.build_loss("mask_distance", alpha=0.5, mask_loss="dice", mask_params={"smooth": 0.0})
    # MSE = 4; Dice(p=0.5 everywhere, g=1) = 1 − 2·2/(2+4) = 1/3
    assert loss(pred, target).item() == pytest.approx(4 + 0.5 / 3, rel=1e-6)


def test_build_loss_rejects_bad_config():
    with pytest.raises(ConfigError):
        S.build_loss("nope")
    with pytest.raises(ConfigError):
        S.build_loss("dice", gamma=2)
    with pytest.raises(ConfigError):
        S.build_loss("combined", preset="unknown")
    with pytest.raises(ConfigError):
        S.build_loss("combined", weights=[1, 2])
    with pytest.raises(ConfigError):
        S.build_loss("mask_distance", mask_loss="mask_distance")
