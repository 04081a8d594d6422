"""BFS-Net networks: S1 (centre likelihood) and S2 (foreground), both the project's U-Net
(:class:`fewlabel.models.unet.UNet`) with one linear output (a logit), registered under their
own names so that a model folder says which stage it belongs to."""

from __future__ import annotations

from typing import Any

from fewlabel.models.store import register_architecture
from fewlabel.models.unet import UNet

S1_ARCH = "bfs_centres"
S2_ARCH = "bfs_segmenter"


def build_bfs_net(**kwargs: Any) -> UNet:
    """A 3D U-Net with one output logit (``final_activation`` None)."""
    return UNet(**{**kwargs, "out_channels": 1, "final_activation": None})


def unet_kwargs(model: Any, crop_z: int) -> dict[str, Any]:
    """Constructor arguments from a :class:`~fewlabel.config.UNetConfig` (3D, one channel)."""
    return {
        "dims": 3,
        "in_channels": 1,
        "base_channels": int(model.base_channels),
        "depth": int(model.depth),
        "norm": model.norm,
        "pool_z": model.resolve_pool_z(3, crop_z),
        "pool_kernels": model.pool_kernels,
    }


register_architecture(S1_ARCH, build_bfs_net)
register_architecture(S2_ARCH, build_bfs_net)
