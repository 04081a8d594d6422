"""SLURM site check: do the partitions, GPU model, CPUs, memory and time limits that the
planned cluster jobs ask for exist on this cluster? And the detection rules' time limits.

Called once before the first ``sbatch`` (``workflow/rules/cluster.smk``, Snakemake's
``onstart`` hook, only under ``--executor slurm``), so that a profile not yet adapted to the
site fails at once with the line to change, instead of every job being rejected by sbatch (an
unknown partition or GPU model, more memory or CPUs than any node has, a longer time limit
than the partition allows). Jobs planned after a checkpoint (the prediction slabs) are not in
the DAG yet at that point, so sbatch alone judges theirs. Reads the nodes with
``sinfo -N -h -o '%P|%c|%m|%G|%l'``; needs nothing but the standard library.

The detection rules' time limits scale with the work of one job (:func:`detection_minutes`):
an ensemble trains N networks one after another, and a prediction runs every network once per
mirror flip, so a fixed limit would kill exactly the runs a user made more careful.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SINFO = ["sinfo", "-N", "-h", "-o", "%P|%c|%m|%G|%l"]
SITE_BLOCK = "the site block of profiles/slurm/config.yaml"
PROFILE = "profiles/slurm/config.yaml"
TRAIN_MINUTES = 720  # train_detector: one network's training
PREDICT_MINUTES = 240  # predict_volume(_slab): one pass of one network over one volume/slab


def detection_passes(detection: Mapping[str, Any]) -> tuple[int, int]:
    """(networks trained, network passes per prediction) of a ``detection`` config section:
    ``train.ensemble`` networks, each run once per flip combination of the mirror axes
    (2 ** 2 for y/x, 2 ** 3 with ``flip_z``) when ``train.mirror``; a reused model folder
    (``detection.model``) is counted from its model.json ``inference`` record. Read here with
    the standard library, not through :mod:`fewlabel.models` (``compose.mirror_axes``,
    ``store.load_model``), which import torch: the Snakefile calls this while planning."""
    train = detection.get("train") or {}
    members = int(train.get("ensemble", 1))
    axes = (3 if train.get("flip_z") else 2) if train.get("mirror") else 0
    reused = detection.get("model")
    if reused:
        try:  # unreadable: counted from the config; the prediction job names the error
            record = json.loads((Path(reused) / "model.json").read_text()).get("inference") or {}
            mirrored = len(record.get("mirror_axes", []))
            return members, int(record.get("members", 1)) * 2**mirrored
        except (OSError, ValueError, AttributeError, TypeError):
            pass
    return members, members * 2**axes


def detection_minutes(detection: Mapping[str, Any], rule: str, attempt: int = 1) -> int:
    """SLURM time limit (minutes) of a detection rule's job: :data:`TRAIN_MINUTES` per
    trained network, :data:`PREDICT_MINUTES` per network pass, times the attempt (a job
    killed at its limit is retried with a longer one, ``retries`` in the profile)."""
    trained, passes = detection_passes(detection)
    if rule == "train_detector":
        return TRAIN_MINUTES * trained * attempt
    if rule in ("predict_volume", "predict_volume_slab"):
        return PREDICT_MINUTES * passes * attempt
    raise ValueError(f"no scaled time limit for rule {rule!r}")


@dataclass(frozen=True)
class Node:
    """One node of one partition, as sinfo reports it."""

    partition: str
    cpus: int
    mem_mb: int
    gres: tuple[str, ...] = ()
    default: bool = False  # the partition is the cluster's default ('*' in sinfo)
    max_minutes: int | None = None  # the partition's time limit; None: infinite or unknown

    def gpus(self, model: str | None = None) -> int:
        """GPUs of this node (of ``model`` if given): GRES ``gpu:N`` or ``gpu:<model>:N``."""
        return sum(n for kind, n in _gpu_gres(self.gres) if model is None or kind == model)

    def gpu_models(self) -> set[str]:
        return {kind for kind, _ in _gpu_gres(self.gres) if kind}


def _gpu_gres(gres: Iterable[str]) -> list[tuple[str | None, int]]:
    """(model or None, count) of each GPU GRES entry: gpu, gpu:2, gpu:a100, gpu:a100:4(S:0)."""
    found = []
    for entry in gres:
        parts = re.sub(r"\(.*\)$", "", entry).split(":")
        if parts[0] != "gpu":
            continue
        count = int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
        names = parts[1:-1] if len(parts) > 1 and parts[-1].isdigit() else parts[1:]
        found.append((names[0] if names else None, count))
    return found


@dataclass(frozen=True)
class Request:
    """What one cluster job asks sbatch for."""

    rule: str
    partition: str | None  # None: the cluster's default partition
    cpus: int
    mem_mb: int | None
    gpus: int = 0
    gpu_model: str | None = None
    minutes: int | None = None  # --time; None: not (yet) known


def parse_time_limit(text: str) -> int | None:
    """Minutes of a SLURM time limit (sinfo %l): ``M``, ``M:S``, ``H:M:S``, ``D-H``,
    ``D-H:M``, ``D-H:M:S`` (seconds rounded up); None for ``infinite`` or anything else."""
    found = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if found is None:
        return None
    days, first, second, third = (int(g) if g else None for g in found.groups())
    if days is not None:  # D-H[:M[:S]]
        hours, mins, secs = first, second or 0, third or 0
    elif third is not None:  # H:M:S
        hours, mins, secs = first, second, third
    else:  # M[:S]
        hours, mins, secs = 0, first, second or 0
    return ((days or 0) * 24 + hours) * 60 + mins + (secs > 0)


def parse_sinfo(text: str) -> list[Node]:
    """Nodes from ``sinfo -N -h -o '%P|%c|%m|%G|%l'`` (one line per node and partition; the
    time limit column may be missing)."""
    nodes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split("|")]
        partition, cpus, mem, gres = fields[:4]
        limit = parse_time_limit(fields[4]) if len(fields) > 4 else None
        gres_entries = () if gres in ("", "(null)") else tuple(_split_gres(gres))
        nodes.append(
            Node(
                partition=partition.rstrip("*"),
                cpus=int(re.sub(r"\D.*", "", cpus) or 0),
                mem_mb=int(re.sub(r"\D.*", "", mem) or 0),
                gres=gres_entries,
                default=partition.endswith("*"),
                max_minutes=limit,
            )
        )
    return nodes


def _split_gres(text: str) -> list[str]:
    """``gpu:a100:4(S:0-1),shard:8`` -> ['gpu:a100:4(S:0-1)', 'shard:8'] (commas in (...) kept)."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current] if current else parts


def sinfo_nodes() -> list[Node] | None:
    """The cluster's nodes, or None when ``sinfo`` is not available or fails."""
    if shutil.which("sinfo") is None:
        return None
    try:
        result = subprocess.run(SINFO, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return parse_sinfo(result.stdout)


def job_request(job) -> Request:
    """The sbatch request of a Snakemake job, as snakemake-executor-plugin-slurm builds it:
    --cpus-per-task from ``cpus_per_task`` if set, else the job's threads; --mem from
    ``mem_mb`` (or ``mem_mb_per_cpu`` x CPUs); --gpus from ``gpu`` / ``gpu_model``; --time
    from ``runtime`` (minutes)."""
    resources = job.resources
    cpus = _number(resources.get("cpus_per_task")) or job.threads
    mem = _number(resources.get("mem_mb"))
    if _number(resources.get("mem_mb_per_cpu")):
        mem = _number(resources.get("mem_mb_per_cpu")) * cpus
    return Request(
        rule=job.rule.name,
        partition=str(resources.get("slurm_partition") or "") or None,
        cpus=int(cpus),
        mem_mb=mem,
        gpus=_number(resources.get("gpu")) or 0,
        gpu_model=str(resources.get("gpu_model") or "") or None,
        minutes=_number(resources.get("runtime")),
    )


def _number(value) -> int | None:
    """An integer resource value; None when unset or not (yet) a number."""
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def site_problems(requests: Iterable[Request], nodes: Sequence[Node]) -> list[str]:
    """One sentence per problem (requests grouped by rule), empty when every request fits
    some node of its partition."""
    by_partition: dict[str, list[Node]] = defaultdict(list)
    for node in nodes:
        by_partition[node.partition].append(node)
    default = next((node.partition for node in nodes if node.default), None)
    known = ", ".join(sorted(by_partition)) or "none"
    grouped: dict[str, set[str]] = defaultdict(set)
    for request in requests:
        partition = request.partition or default
        if partition is None:
            grouped[
                "no partition requested and the cluster has no default partition: "
                f"set cpu_partition and gpu_partition in {SITE_BLOCK} (partitions: {known})"
            ].add(request.rule)
            continue
        names = [name.strip() for name in partition.split(",")]  # sbatch -p a,b: any of them
        missing = [name for name in names if name not in by_partition]
        if missing:
            variable = "gpu_partition" if request.gpus else "cpu_partition"
            grouped[
                f"partition '{', '.join(missing)}' does not exist on this cluster "
                f"(partitions: {known}): set {variable} in {SITE_BLOCK}"
            ].add(request.rule)
            continue
        members = [node for name in names for node in by_partition[name]]
        if request.gpus:
            with_gpus = [n for n in members if n.gpus() >= request.gpus]
            if not with_gpus:
                grouped[
                    f"no node of partition '{partition}' has {request.gpus} GPU(s) (GRES: "
                    f"{_gres_summary(members)}): set gpu_partition in {SITE_BLOCK} to a GPU "
                    "partition"
                ].add(request.rule)
                continue
            if request.gpu_model and not any(
                n.gpus(request.gpu_model) >= request.gpus for n in with_gpus
            ):
                models = sorted(set().union(*(n.gpu_models() for n in with_gpus)))
                grouped[
                    f"no node of partition '{partition}' has GPU model '{request.gpu_model}' "
                    f"(models there: {', '.join(models) or 'none named'}): set gpu_model in "
                    f'{SITE_BLOCK} ("" = any GPU)'
                ].add(request.rule)
                members = with_gpus  # CPUs and memory: compared with any GPU node
            else:
                members = [n for n in with_gpus if n.gpus(request.gpu_model) >= request.gpus]
        most_cpus = max(n.cpus for n in members)
        if request.cpus > most_cpus:
            grouped[
                f"{request.cpus} CPUs asked for, but the nodes of partition '{partition}' have "
                f"at most {most_cpus}: set max_cpus in {SITE_BLOCK} to {most_cpus} or less"
            ].add(request.rule)
        most_mem = max(n.mem_mb for n in members)
        if request.mem_mb is not None and request.mem_mb > most_mem:
            grouped[
                f"{request.mem_mb} MB of memory asked for, but the nodes of partition "
                f"'{partition}' have at most {most_mem} MB: set max_mem_mb in {SITE_BLOCK} "
                f"to {most_mem} or less"
            ].add(request.rule)
        limits = [n.max_minutes for n in members]
        longest = None if None in limits else max(limits)  # type: ignore[type-var]
        if request.minutes is not None and longest is not None and request.minutes > longest:
            grouped[
                f"{request.minutes} min asked for, but partition '{partition}' allows at most "
                f"{longest} min: if the jobs need less, give these rules runtime: {longest} "
                f"(or less) under set-resources in {PROFILE}; else use a partition with a "
                "longer limit (the detection rules' time grows with detection.train.ensemble "
                "and mirror)"
            ].add(request.rule)
    return [f"{problem} (rules: {', '.join(sorted(rules))})" for problem, rules in grouped.items()]


def _gres_summary(nodes: Sequence[Node]) -> str:
    entries = sorted({entry for node in nodes for entry in node.gres})
    return ", ".join(entries) or "none"
