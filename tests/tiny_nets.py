"""A tiny 3D network shared by the engine tests: two 3×3×3 convolutions (receptive field 5)."""

from __future__ import annotations

import torch


class TinyConv(torch.nn.Module):
    def __init__(self, mid: int = 2) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv3d(1, mid, 3, padding=1)
        self.c2 = torch.nn.Conv3d(mid, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x)))

    def receptive_field(self) -> tuple[int, int, int]:
        return (5, 5, 5)
