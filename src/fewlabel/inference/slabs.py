"""Slab fan-out of whole-volume prediction (volumes too large for one job).

:func:`create_prediction_array` creates ``<output>.partial`` once (and fixes the normalisation
range and a ``run_id``); each job ``predict_volume(..., slab=i, n_slabs=n)``
(:mod:`fewlabel.inference.engine`) writes the whole chunks of its run of blocks and then its
marker ``<output>.slabs/slab-i-of-n.json``; :func:`finalize_prediction` checks that all ``n``
markers carry the partial array's ``run_id``, adds the multiscale pyramid (from the complete
array; :func:`fewlabel.io.build_pyramid`) and renames ``<output>.partial`` to ``output``. An
interrupted slab leaves no marker, so the output never looks complete; stale markers of an older
partial array do not count. Slab results equal a one-job run bit for bit.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewlabel.blocks import Block, block_grid
from fewlabel.config import PredictConfig
from fewlabel.errors import ConfigError, InputDataError
from fewlabel.inference.engine import (
    _attrs,
    _create_output,
    _default_device,
    _output_geometry,
    _run_engine,
    _set_attrs,
)
from fewlabel.inference.model_info import input_view, model_grid_of, open_input
from fewlabel.io import atomic_path, build_pyramid, open_ome_zarr

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
SLABS_SUFFIX = ".slabs"
DEFAULT_SLAB_VOXELS = 2_000_000_000


def plan_slabs(
    shape: Sequence[int],
    block_shape: Sequence[int],
    n_slabs: int | str,
    slab_voxels: int = DEFAULT_SLAB_VOXELS,
) -> int:
    """Number of slab jobs for one volume.

    An integer is used as given; ``'auto'`` gives ``ceil(prod(shape) / slab_voxels)`` clamped
    to ``[1, number of output chunks]`` (each slab job then predicts about ``slab_voxels``
    voxels, and no job is empty).
    """
    check_n_slabs(n_slabs, slab_voxels)
    if n_slabs != "auto":
        return int(n_slabs)
    n_chunks = len(block_grid(shape, block_shape))
    wanted = -(-int(np.prod([int(n) for n in shape], dtype=np.int64)) // slab_voxels)
    return int(min(max(wanted, 1), n_chunks))


def check_n_slabs(n_slabs: int | str, slab_voxels: int) -> None:
    """ConfigError unless ``n_slabs`` is an integer >= 1 or ``'auto'`` with ``slab_voxels >= 1``."""
    if n_slabs == "auto":
        if isinstance(slab_voxels, bool) or not isinstance(slab_voxels, int) or slab_voxels < 1:
            raise ConfigError(f"slab_voxels must be an integer >= 1; got {slab_voxels!r}.")
    elif isinstance(n_slabs, bool) or not isinstance(n_slabs, int) or n_slabs < 1:
        raise ConfigError(f"n_slabs must be an integer >= 1 or 'auto'; got {n_slabs!r}.")


def slab_blocks(
    shape: Sequence[int], block_shape: Sequence[int], slab: int, n_slabs: int
) -> list[Block]:
    """Blocks of slab ``slab`` of ``n_slabs``: a contiguous run of the C-ordered block grid.

    The grid (z-rows first, then y, then x) is split into ``n_slabs`` runs as evenly as
    possible, so thin volumes (one z-row of blocks, e.g. 10 × 512 × 512) still split; with more
    slabs than blocks some slabs are empty.
    """
    if n_slabs < 1 or not 0 <= slab < n_slabs:
        raise ConfigError(f"slab {slab} is not in 0..{n_slabs - 1} (n_slabs={n_slabs}).")
    grid = list(block_grid(shape, block_shape))
    run = np.array_split(np.arange(len(grid)), n_slabs)[slab]
    return [grid[int(i)] for i in run]


def partial_path(output_path: str | Path) -> Path:
    """Where slab jobs write before :func:`finalize_prediction` renames it to ``output_path``."""
    output_path = Path(output_path)
    return output_path.with_name(output_path.name + PARTIAL_SUFFIX)


def slab_marker_path(output_path: str | Path, slab: int, n_slabs: int) -> Path:
    """The completion marker written by slab job ``slab`` (a Snakemake output)."""
    output_path = Path(output_path)
    return output_path.with_name(output_path.name + SLABS_SUFFIX) / f"slab-{slab}-of-{n_slabs}.json"


def create_prediction_array(
    model_dir: str | Path,
    image_path: str | Path,
    output_path: str | Path,
    *,
    params: PredictConfig,
    sample: str,
    n_slabs: int | str,
    slab_voxels: int = DEFAULT_SLAB_VOXELS,
    device: str | None = None,
) -> Path:
    """Create ``<output>.partial`` once for ``n_slabs`` slab jobs (upstream step); return it.

    Fixes everything the slab jobs must share: the output geometry, the intensity range (from
    the whole volume), the blending margin, the slab count (``'auto'``: :func:`plan_slabs`
    with ``slab_voxels``; stored as ``attrs['fewlabel']['n_slabs']``) and a fresh ``run_id``;
    ``params.model_grid`` as for :func:`fewlabel.inference.engine.predict_volume`.
    """
    from fewlabel.models.store import load_model

    device = device or _default_device()
    loaded = load_model(model_dir, device)
    return create_prediction_array_for_module(
        loaded.module,
        image_path,
        output_path,
        params=params,
        sample=sample,
        n_slabs=n_slabs,
        slab_voxels=slab_voxels,
        normalization=loaded.normalization,
        arch=loaded.arch,
        device=device,
        model_info={"model_dir": str(model_dir), "arch": loaded.arch},
        grid=model_grid_of(loaded.training, params),
        trained_grid=loaded.training.get("voxel_size_um"),
    )


def create_prediction_array_for_module(
    module: Any,
    image_path: str | Path,
    output_path: str | Path,
    *,
    params: PredictConfig,
    sample: str,
    n_slabs: int | str,
    normalization: Mapping[str, Any] | None,
    slab_voxels: int = DEFAULT_SLAB_VOXELS,
    arch: Mapping[str, Any] | None = None,
    device: str | None = None,
    model_info: Mapping[str, Any] | None = None,
    grid: Sequence[float] | None = None,
    trained_grid: Sequence[float] | None = None,
) -> Path:
    """:func:`create_prediction_array` for an already built module (``grid``: the voxel size
    to predict on; ``trained_grid`` as for
    :func:`fewlabel.inference.engine.predict_with_module`)."""
    from fewlabel.detection.density.log_prior import priors_on_grid

    check_n_slabs(n_slabs, slab_voxels)
    device = device or _default_device()
    image, in_channels, resampled = open_input(image_path, params, sample, arch, grid)
    with priors_on_grid(module, trained_grid, image.voxel_size):
        source = input_view(image.array, normalization, image.voxel_size, sample=sample)
        rf, margin, value_range, out_channels, chunks = _output_geometry(
            module, source, in_channels, params, sample, normalization, arch, device
        )
        n_slabs = plan_slabs(tuple(source.shape[-3:]), chunks, n_slabs, slab_voxels)
        n_blocks = len(block_grid(tuple(source.shape[-3:]), chunks))
        if n_slabs > n_blocks:
            log.warning(
                "sample %s: %d slabs for %d output chunks; %d slab jobs will have nothing to do.",
                sample,
                n_slabs,
                n_blocks,
                n_slabs - n_blocks,
            )
        attrs = _attrs(
            sample,
            image_path,
            params,
            value_range,
            margin,
            rf,
            out_channels,
            model_info,
            n_slabs=n_slabs,
        )
        attrs["run_id"] = uuid.uuid4().hex
        attrs["resampled"] = resampled
        partial = partial_path(output_path)
        with atomic_path(partial) as tmp:
            _create_output(
                tmp,
                spatial=tuple(source.shape[-3:]),
                out_channels=out_channels,
                chunks=chunks,
                voxel_size=image.voxel_size,
                sample=sample,
                attrs=attrs,
                defer_pyramid=True,
            )
        log.info(
            "sample %s: created %s for %d slab jobs (run %s)",
            sample,
            partial,
            n_slabs,
            attrs["run_id"],
        )
        return partial


def _predict_slab(
    module: Any,
    source: Any,
    output_path: str | Path,
    *,
    params: PredictConfig,
    sample: str,
    device: str,
    slab: int,
    n_slabs: int,
    t0: float,
    roi: Any = None,
) -> dict[str, Any]:
    from fewlabel.runtime import write_json

    partial = partial_path(output_path)
    if not partial.exists():
        raise InputDataError(
            "the prediction array for slab jobs does not exist.",
            sample=sample,
            path=partial,
            fix="run 'fewlabel init_prediction_slabs' (create_prediction_array) first.",
        )
    out = open_ome_zarr(partial, sample=sample, mode="r+")
    attrs = dict(out.attrs.get("fewlabel", {}))
    if attrs.get("n_slabs") != n_slabs:
        raise ConfigError(
            f"the prediction array was created for {attrs.get('n_slabs')} slabs, "
            f"this job says n_slabs={n_slabs}.",
            sample=sample,
            path=partial,
            fix="use the same n_slabs for init_prediction_slabs and every slab job.",
        )
    current = params.model_dump(mode="json")
    if attrs.get("params") != current:
        raise ConfigError(
            f"predict parameters {current} differ from those the "
            f"prediction array was created with {attrs.get('params')}.",
            sample=sample,
            path=partial,
            fix="rerun init_prediction_slabs with the current parameters.",
        )
    target = out.array
    if tuple(target.shape[-3:]) != tuple(source.shape[-3:]):
        raise InputDataError(
            f"the prediction array shape {target.shape} does not match the image {source.shape}.",
            sample=sample,
            path=partial,
            fix="rerun init_prediction_slabs for this image.",
        )
    block_shape = tuple(int(c) for c in target.chunks[-3:])
    blocks = slab_blocks(tuple(source.shape[-3:]), block_shape, slab, n_slabs)
    value_range = attrs.get("intensity_range")
    stats = None
    if blocks:
        stats = _run_engine(
            module,
            source,
            target,
            params=params,
            value_range=None if value_range is None else tuple(value_range),
            margin=attrs["margin"],
            blocks=blocks,
            device=device,
            out_channels=int(attrs["out_channels"]),
            desc=f"predict {sample} slab {slab}/{n_slabs}",
            roi=roi,
        )
    marker = {
        "sample": sample,
        "slab": slab,
        "n_slabs": n_slabs,
        "run_id": attrs["run_id"],
        "blocks": len(blocks),
        "stats": None if stats is None else stats.as_dict(),
        "device": device,
        "seconds": time.perf_counter() - t0,
    }
    write_json(marker, slab_marker_path(output_path, slab, n_slabs))
    log.info("sample %s: slab %d/%d done (%d blocks)", sample, slab, n_slabs, len(blocks))
    return marker


def finalize_prediction(output_path: str | Path, *, sample: str | None = None) -> Path:
    """Check that every slab job finished for the current partial array, then publish it.

    Builds the pyramid of ``<output>.partial`` (whose metadata recorded its settings when
    it was created), marks it complete and renames it to ``output`` (replacing an older
    output); raises InputDataError naming the missing slabs otherwise.
    """
    import json

    output_path = Path(output_path)
    partial = partial_path(output_path)
    if not partial.exists():
        raise InputDataError(
            "no prediction array to finalize: the slab jobs have not run, or Snakemake deleted "
            f"the published '{output_path.name}' before rerunning this job (--forcerun "
            "finalize_prediction).",
            sample=sample,
            path=partial,
            fix="recompute the slabs: snakemake --forcerun init_prediction_slabs (or run "
            "init_prediction_slabs and every predict_volume_slab job first).",
        )
    attrs = dict(open_ome_zarr(partial, sample=sample).attrs.get("fewlabel", {}))
    n_slabs = int(attrs["n_slabs"])
    missing = []
    for slab in range(n_slabs):
        marker = slab_marker_path(output_path, slab, n_slabs)
        try:
            done = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            missing.append(slab)
            continue
        if done.get("run_id") != attrs.get("run_id"):
            missing.append(slab)
    if missing:
        raise InputDataError(
            f"slab job(s) {missing} of {n_slabs} have not finished for this prediction array.",
            sample=sample,
            path=partial,
            fix="rerun the missing slab jobs (predict_volume_slab --slab i).",
        )
    build_pyramid(partial)  # from the complete array; idempotent if an earlier try failed
    _set_attrs(partial, complete=True)
    with atomic_path(output_path) as tmp:
        os.replace(partial, tmp)
    log.info("sample %s: prediction %s complete (%d slabs)", sample, output_path, n_slabs)
    return output_path
