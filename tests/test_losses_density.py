"""Adaptive wing loss (seed eq. 1), weighted mean (eq. 3) and weighted MSE."""

from __future__ import annotations

import math

import pytest
import torch

from fewlabel.config import AWingConfig, parse
from fewlabel.detection.density.awing import (
    DensityLoss,
    adaptive_wing,
    weighted_adaptive_wing_loss,
    weighted_mse_loss,
)
from fewlabel.errors import ConfigError

torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("y", "p", "expected"),
    [
        # small branch: 14 ln(1 + 0.2^2.1)
        (0.0, 0.2, 0.4688125297770724),
        (0.5, 0.9, 2.907664917448902),
        # large branch: A·0.8 − C with A = 14·1.1·0.5^0.1/(1 + 0.5^1.1)
        (1.0, 0.2, 8.299812890391426),
        (0.0, 1.0, 8.495945910487595),
        (1.0, 1.0, 0.0),
    ],
)
def test_awing_known_values(y: float, p: float, expected: float) -> None:
    value = adaptive_wing(torch.tensor([p], dtype=torch.float64), torch.tensor([y]))
    assert float(value) == pytest.approx(expected, rel=1e-5)
    # by hand for the (1.0, 0.2) case
    a = 1.1
    big_a = 14 * (1 / (1 + 0.5**a)) * a * 0.5 ** (a - 1)
    c = 0.5 * big_a - 14 * math.log(1 + 0.5**a)
    assert big_a * 0.8 - c == pytest.approx(8.299812890391426, rel=1e-12)


def test_awing_symmetric_in_the_sign_of_the_difference() -> None:
    y = torch.tensor([0.4, 0.4])
    p = torch.tensor([0.1, 0.7])
    value = adaptive_wing(p, y)
    assert float(value[0]) == pytest.approx(float(value[1]), rel=1e-6)


@pytest.mark.parametrize("y", [0.0, 0.3, 0.7, 1.0])
def test_awing_value_and_slope_continuous_at_theta(y: float) -> None:
    theta, h = 0.5, 1e-7
    preds = torch.tensor([y + theta - h, y + theta + h], dtype=torch.float64, requires_grad=True)
    target = torch.full((2,), y, dtype=torch.float64)
    value = adaptive_wing(preds.double(), target)
    # adaptive_wing computes in float32; allow float32 tolerances
    assert float(value[0].detach()) == pytest.approx(float(value[1].detach()), abs=1e-4)
    grads = torch.autograd.grad(value.sum(), preds)[0]
    assert float(grads[0]) == pytest.approx(float(grads[1]), rel=1e-4)
    assert float(grads[0]) > 0


def test_awing_branches_meet_exactly_in_float64() -> None:
    # the formulas themselves (not float32 rounding): f(θ) and f'(θ) of both branches agree
    omega, eps, theta = 14.0, 1.0, 0.5
    for y in (0.0, 0.5, 1.0):
        a = 2.1 - y
        big_a = omega * (1 / (1 + (theta / eps) ** a)) * a * (theta / eps) ** (a - 1) / eps
        c = theta * big_a - omega * math.log(1 + (theta / eps) ** a)
        small = omega * math.log(1 + (theta / eps) ** a)
        slope_small = omega * a * (theta / eps) ** (a - 1) / eps / (1 + (theta / eps) ** a)
        assert big_a * theta - c == pytest.approx(small, rel=1e-12)
        assert big_a == pytest.approx(slope_small, rel=1e-12)


@pytest.mark.parametrize("delta", [0.0, 1e-30, 1e-12, 1e-8, -1e-8])
@pytest.mark.parametrize(("alpha", "y"), [(2.1, 0.0), (2.1, 1.0), (1.5, 1.0)])
def test_awing_gradient_finite_at_tiny_differences(delta: float, alpha: float, y: float) -> None:
    # alpha=1.5, y=1 gives α − y − 1 = −0.5 < 0: the raw power's derivative would blow up
    pred = torch.tensor([y + delta], dtype=torch.float32, requires_grad=True)
    value = adaptive_wing(pred, torch.tensor([y]), alpha=alpha)
    (grad,) = torch.autograd.grad(value.sum(), pred)
    assert torch.isfinite(value).all()
    assert torch.isfinite(grad).all()
    assert abs(float(grad)) < 1e7


def test_weighted_mean_is_eq3_and_target_has_no_gradient() -> None:
    pred = torch.tensor([0.1, 0.9, 0.5, 0.0], requires_grad=True)
    target = torch.tensor([0.0, 1.0, 0.0, 1.0], requires_grad=True)
    weight = torch.tensor([1.0, 11.0, 1.0, 11.0])
    loss = weighted_adaptive_wing_loss(pred, target, weight)
    expected = (weight * adaptive_wing(pred, target)).mean()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    loss.backward()
    assert target.grad is None
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_weighted_mse_and_density_loss_module() -> None:
    pred = torch.tensor([0.0, 0.5])
    target = torch.tensor([1.0, 0.0])
    weight = torch.tensor([2.0, 1.0])
    assert float(weighted_mse_loss(pred, target, weight)) == pytest.approx((2 * 1 + 0.25) / 2)
    assert float(DensityLoss("mse")(pred, target, weight)) == pytest.approx(1.125)
    aw = DensityLoss("awing", AWingConfig(alpha=2.1, omega=14, epsilon=1, theta=0.5))
    assert float(aw(pred, target)) == pytest.approx(float(adaptive_wing(pred, target).mean()))
    with pytest.raises(ConfigError):
        DensityLoss("l1")
    with pytest.raises(ConfigError, match=r"config key 'detection.train.awing.theta'"):
        parse(AWingConfig, theta=0.0)
    with pytest.raises(ConfigError, match=r"config key 'detection.train.awing.alpha'"):
        parse(AWingConfig, alpha=1.0)
