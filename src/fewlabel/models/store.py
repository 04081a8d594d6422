"""The model folder: one trained model = one folder that alone rebuilds it.

Layout (written atomically, i.e. to a temporary folder renamed when complete)::

    weights.pt        state_dict (tensors only; loaded with torch.load(weights_only=True))
    model.json        {"format": 1, "name": <architecture>, "kwargs": {...}[, "inference":
                      {"members": N, "mirror_axes": [...]}]}
    training.json     training configuration and summary (free-form dict)
    thresholds.json   tuned post-processing thresholds (free-form dict, {} if none)
    normalization.json  input normalisation recipe (e.g. {"percentiles": [1, 99.8]})
    curve.tsv, curve.png  per-epoch training curve (when given)
    <name>.pt         optional extra state dicts (e.g. weights_last.pt; an ensemble's members
                      after the first: weights_member1.pt, ...)
    curve_<name>.tsv/png  optional extra curves (an ensemble's members after the first)

With ``inference`` (:mod:`fewlabel.models.compose`), :func:`load_model` returns the mean of the
members' outputs, mirrored along ``mirror_axes``: what training tuned its thresholds on.

Architectures are looked up in a registry: a module under ``fewlabel.models`` calls
:func:`register_architecture` at import; unknown names trigger a one-time import of all
modules of the package before failing with a :class:`~fewlabel.errors.ModelError`.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from fewlabel.errors import ModelError
from fewlabel.io import atomic_path

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS = "weights.pt"
MODEL_JSON = "model.json"
TRAINING_JSON = "training.json"
THRESHOLDS_JSON = "thresholds.json"
NORMALIZATION_JSON = "normalization.json"
CURVE_TSV = "curve.tsv"
CURVE_PNG = "curve.png"
MEMBER = "weights_member"  # + i + ".pt": ensemble member i (i >= 1; member 0 is weights.pt)

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}
_DISCOVERED = False


def register_architecture(name: str, builder: Builder, *, replace: bool = False) -> None:
    """Register ``builder(**kwargs) -> nn.Module`` under ``name`` (lower case)."""
    key = name.lower()
    if key in _REGISTRY and _REGISTRY[key] is not builder and not replace:
        raise ValueError(f"architecture {name!r} is already registered")
    _REGISTRY[key] = builder


ARCHITECTURE_MODULES = (
    "fewlabel.models.unet",
    "fewlabel.detection.density.detnet",
    "fewlabel.detection.pu.classifier",
    "fewlabel.segmentation.bfs.models",
)
"""Modules that register architectures on import; a new method folder adds its model here."""


def _discover() -> None:
    """Import every architecture module once so that they register themselves."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for name in ARCHITECTURE_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:
            log.warning("could not import %s: %s", name, exc)


def registered_architectures() -> list[str]:
    """Names of all known architectures."""
    _discover()
    return sorted(_REGISTRY)


def get_builder(name: str) -> Builder:
    """The builder registered under ``name``; ModelError if unknown."""
    key = str(name).lower()
    if key not in _REGISTRY:
        _discover()
    if key not in _REGISTRY:
        raise ModelError(
            f"unknown architecture {name!r}; known: {sorted(_REGISTRY)}.",
            fix="the model folder comes from a newer/other fewlabel version or is "
            "corrupt; retrain or use a matching fewlabel version.",
        )
    return _REGISTRY[key]


def build_model(arch: Mapping[str, Any]) -> nn.Module:
    """Build an (untrained) module from an architecture dict ``{"name", "kwargs"}``."""
    name, kwargs = _split_arch(arch)
    try:
        return get_builder(name)(**kwargs)
    except TypeError as exc:
        raise ModelError(f"architecture {name!r} rejects its settings {kwargs}: {exc}.") from exc


def _split_arch(arch: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if "name" not in arch:
        raise ModelError(f"architecture dict has no 'name': {dict(arch)}.")
    if "kwargs" in arch:
        kwargs = dict(arch["kwargs"])
    else:
        kwargs = {k: v for k, v in arch.items() if k not in ("name", "format")}
    return str(arch["name"]).lower(), kwargs


def plot_curve(curve: pd.DataFrame, path: str | Path, *, title: str = "training curve") -> None:
    """Plot the numeric columns of ``curve`` against ``epoch`` to PNG.

    Columns with 'loss' in their name share the left panel (log axis when positive), other
    metrics the right one; a dotted line marks the last epoch flagged in a ``best`` column.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = curve["epoch"] if "epoch" in curve.columns else pd.Series(range(1, len(curve) + 1))
    skip = {"epoch", "best", "seconds", "lr"}
    columns = [
        c for c in curve.columns if c not in skip and pd.api.types.is_numeric_dtype(curve[c])
    ]
    losses = [c for c in columns if "loss" in c]
    others = [c for c in columns if c not in losses]
    fig, axes = plt.subplots(
        1, 2 if others else 1, figsize=(9 if others else 5, 3.5), squeeze=False
    )
    ax = axes[0, 0]
    for column in losses:
        ax.plot(x, curve[column], marker=".", label=column)
    if losses and (curve[losses].to_numpy() > 0).all():
        ax.set_yscale("log")
    if "best" in curve.columns and curve["best"].astype(bool).any():
        best_epoch = x[curve["best"].astype(bool).to_numpy()].iloc[-1]
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if losses:
        ax.legend()
    if others:
        ax2 = axes[0, 1]
        for column in others:
            ax2.plot(x, curve[column], marker=".", label=column)
        ax2.set_xlabel("epoch")
        ax2.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def _cpu_state(module_or_state: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = (
        module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
    )
    return {k: v.detach().to("cpu").clone() for k, v in state.items()}


def save_model(
    folder: str | Path,
    model: nn.Module | Mapping[str, torch.Tensor],
    *,
    arch: Mapping[str, Any],
    training: Mapping[str, Any],
    thresholds: Mapping[str, Any] | None = None,
    curve: pd.DataFrame | None = None,
    normalization: Mapping[str, Any] | None = None,
    extra_states: Mapping[str, nn.Module | Mapping[str, torch.Tensor]] | None = None,
    members: Sequence[nn.Module | Mapping[str, torch.Tensor]] = (),
    mirror_axes: Sequence[str] = (),
    extra_curves: Mapping[str, pd.DataFrame] | None = None,
) -> Path:
    """Write a model folder atomically (see module docstring); return its path.

    ``model`` is a module or a state_dict; ``arch`` is ``{"name": ..., "kwargs": {...}}`` (or
    ``{"name": ..., **kwargs}``); ``extra_states`` adds ``<key>.pt`` state dicts;
    ``members``: further ensemble members (``weights_member<i>.pt``), ``mirror_axes``: test-time
    mirroring, both recorded in model.json's ``inference``; ``extra_curves``: ``curve_<key>``.
    """
    from fewlabel.runtime import write_json

    name, kwargs = _split_arch(arch)
    get_builder(name)  # fail early on an unregistered architecture
    folder = Path(folder)
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        torch.save(_cpu_state(model), tmp / WEIGHTS)
        for key, state in (extra_states or {}).items():
            torch.save(_cpu_state(state), tmp / f"{key}.pt")
        for i, state in enumerate(members, start=1):
            torch.save(_cpu_state(state), tmp / f"{MEMBER}{i}.pt")
        described: dict[str, Any] = {"format": FORMAT_VERSION, "name": name, "kwargs": kwargs}
        if members or mirror_axes:
            described["inference"] = {"members": 1 + len(members), "mirror_axes": [*mirror_axes]}
        write_json(described, tmp / MODEL_JSON)
        write_json(dict(training), tmp / TRAINING_JSON)
        write_json(dict(thresholds or {}), tmp / THRESHOLDS_JSON)
        write_json(dict(normalization or {}), tmp / NORMALIZATION_JSON)
        if curve is not None:
            curve.to_csv(tmp / CURVE_TSV, sep="\t", index=False)
            plot_curve(curve, tmp / CURVE_PNG, title=f"{name} training")
        for key, extra in (extra_curves or {}).items():
            extra.to_csv(tmp / f"curve_{key}.tsv", sep="\t", index=False)
            plot_curve(extra, tmp / f"curve_{key}.png", title=f"{name} training, {key}")
    log.info("saved %s model to %s", name, folder)
    return folder


@dataclass
class LoadedModel:
    """A model rebuilt from its folder (module in eval mode) with its metadata.

    ``module`` is what inference runs (an ensemble / mirroring as model.json's ``inference``
    says); ``network`` is the first (or only) trained network itself, e.g. to fine-tune from.
    """

    module: nn.Module
    arch: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    normalization: dict[str, Any] = field(default_factory=dict)
    folder: Path = Path()
    network: nn.Module | None = None
    inference: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.arch["name"])


def _read_json(path: Path, *, required: bool) -> dict[str, Any]:
    if not path.exists():
        if required:
            raise ModelError(
                f"model folder lacks {path.name}.",
                path=path.parent,
                fix="point to a complete model folder written by a fewlabel "
                "training stage (or retrain).",
            )
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path.name} ({exc}).", path=path) from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path.name} does not hold a JSON object.", path=path)
    return data


def load_state(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a state_dict with ``torch.load(weights_only=True)`` (no arbitrary unpickling)."""
    path = Path(path)
    if not path.exists():
        raise ModelError(
            f"weights file {path.name} is missing.",
            path=path,
            fix="point to a complete model folder (or retrain).",
        )
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"cannot load weights ({type(exc).__name__}: {exc}).",
            path=path,
            fix="the file is corrupt or not a fewlabel state_dict; retrain.",
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError("weights file does not hold a state_dict of tensors.", path=path)
    return state


def _check_state_fits(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    name: str,
    kwargs: Mapping[str, Any],
    folder: Path,
) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if mismatched:
            details.append(f"{len(mismatched)} with other shapes (e.g. {mismatched[:2]})")
        raise ModelError(
            f"the weights do not fit architecture {name!r} {dict(kwargs)} described by "
            f"model.json: " + "; ".join(details) + ".",
            path=folder,
            fix="model.json and weights.pt come from different models; use the folder as "
            "written by training, or retrain.",
        )


def _inference(value: Any, folder: Path) -> dict[str, Any]:
    """model.json's ``inference`` checked: ``members`` >= 1, ``mirror_axes`` among z, y, x."""
    from fewlabel.models.compose import AXES

    if value is None:
        return {}
    record = value if isinstance(value, dict) else {}
    members, axes = record.get("members"), record.get("mirror_axes")
    if (
        not isinstance(members, int)
        or members < 1
        or not isinstance(axes, list)
        or not set(axes) <= set(AXES)
    ):
        raise ModelError(
            f"model.json 'inference' {value!r} is not {{members: N >= 1, mirror_axes: [z|y|x]}}.",
            path=folder,
            fix="use the folder as written by training, or retrain.",
        )
    return {"members": members, "mirror_axes": list(axes)}


def load_model(
    folder: str | Path, device: str | torch.device = "cpu", *, expect: str | None = None
) -> LoadedModel:
    """Rebuild a model from its folder alone (architecture from model.json, weights only).

    Parameters
    ----------
    folder : the model folder.
    device : where to put the module.
    expect : architecture name the caller needs (e.g. 'dmdetnet3d'); a folder holding another
        architecture raises ModelError naming both.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(
            "model folder not found.", path=folder, fix="train the model first or check the path."
        )
    arch = _read_json(folder / MODEL_JSON, required=True)
    name, kwargs = _split_arch(arch)
    if expect is not None and name != expect.lower():
        raise ModelError(
            f"the folder holds a {name!r} model but a {expect!r} model is expected.",
            path=folder,
            fix=f"point this stage to a folder trained as {expect!r}.",
        )
    from fewlabel.models.compose import compose

    inference = _inference(arch.get("inference"), folder)
    nets = []
    for i in range(int(inference.get("members", 1))):
        net = build_model({"name": name, "kwargs": kwargs})
        state = load_state(folder / (WEIGHTS if i == 0 else f"{MEMBER}{i}.pt"), device="cpu")
        _check_state_fits(net, state, name=name, kwargs=kwargs, folder=folder)
        net.load_state_dict(state, strict=True)
        nets.append(net.to(device).eval())
    module = compose(nets, inference.get("mirror_axes", ())).eval()
    return LoadedModel(
        network=nets[0],
        inference=inference,
        module=module,
        arch={"name": name, "kwargs": kwargs},
        training=_read_json(folder / TRAINING_JSON, required=False),
        thresholds=_read_json(folder / THRESHOLDS_JSON, required=False),
        normalization=_read_json(folder / NORMALIZATION_JSON, required=False),
        folder=folder,
    )
