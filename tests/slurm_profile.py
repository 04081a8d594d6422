"""profiles/slurm as Snakemake reads it (a YTE template), with the site block replaced: shared by
tests/test_workflow_plan.py (routing) and tests/test_slurm.py (a real cluster run)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import yaml

from fewlabel.slurm import detection_minutes

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
RULE_RE = re.compile(
    r"^\s*(?:(?:rule|checkpoint) (\w+):|use rule (\w+) as (\w+) with:)", re.MULTILINE
)


def with_site(site: dict, dest: Path, profile: Path = PROFILE) -> Path:
    """Write ``profile`` to ``dest``/config.yaml with ``site`` values in its site block
    (``__variables__``; unknown names are an error), everything else unchanged."""
    template = yaml.safe_load(profile.read_text())
    unknown = set(site) - set(template["__variables__"])
    assert not unknown, f"not in the site block of {profile}: {sorted(unknown)}"
    template["__variables__"].update(site)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(template, sort_keys=False))
    return dest


def render(profile: Path = PROFILE) -> dict:
    """The profile after YTE (what Snakemake's profile parser evaluates): plain values."""
    import yte

    text = (profile / "config.yaml" if profile.is_dir() else profile).read_text()
    return yte.process_yaml(io.StringIO(text), require_use_yte=True)


def rule_blocks() -> dict[str, str]:
    """Every rule/checkpoint name in workflow/rules -> the text of its definition; a rule
    derived with ``use rule A as B with:`` gets its overrides followed by A's text (what it
    does not override, it inherits)."""
    blocks: dict[str, str] = {}
    derived: dict[str, tuple[str, str]] = {}
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = path.read_text()
        starts = [(m.start(), m.group(1), m.group(2), m.group(3)) for m in RULE_RE.finditer(text)]
        for index, (start, name, parent, child) in enumerate(starts):
            end = starts[index + 1][0] if index + 1 < len(starts) else len(text)
            if name:
                blocks[name] = text[start:end]
            else:
                derived[child] = (parent, text[start:end])
    for child, (parent, overrides) in derived.items():
        blocks[child] = overrides + blocks[parent]
    return blocks


def parent_rule(rule: str) -> str | None:
    """The rule a ``use rule … as`` rule derives from (None for a rule of its own)."""
    found = re.match(r"\s*use rule (\w+) as", rule_blocks()[rule])
    return found.group(1) if found else None


def gpu_rules() -> set[str]:
    """Rules that ask for a GPU (`resources: gpu=1`)."""
    return {
        name for name, body in rule_blocks().items() if re.search(r"resources:\s*\n\s*gpu=1", body)
    }


def local_rules() -> set[str]:
    """Rules marked `localrule: True` (run on the submit host under a cluster executor)."""
    return {name for name, body in rule_blocks().items() if "localrule: True" in body}


def declared_threads(rule: str) -> int:
    found = re.search(r"^\s*threads:\s*(\d+)", rule_blocks()[rule], re.MULTILINE)
    return int(found.group(1)) if found else 1


def expected_request(profile: dict, rule: str, detection: dict | None = None) -> dict:
    """What the profile says a cluster job of ``rule`` gets: partition, CPUs (set-threads or
    the rule's threads, capped by max-threads), memory (MB), runtime (min: the profile's, else
    a detection rule's own, scaled by the run's ``detection`` config section), GPUs."""
    default = profile["default-resources"]
    own = profile.get("set-resources", {}).get(rule, {})
    threads = profile.get("set-threads", {}).get(rule, declared_threads(rule))
    runtime = own.get("runtime", default["runtime"])
    if "runtime" not in own and "runtime=" in rule_blocks()[rule]:
        runtime = detection_minutes(detection or {}, rule)
    return {
        "partition": own.get("slurm_partition", default["slurm_partition"]),
        "cpus": min(threads, profile["max-threads"]),
        "mem_mb": own.get("mem_mb", default["mem_mb"]),
        "runtime": runtime,
        "gpus": own.get("gpu", 0),
        "gpu_model": own.get("gpu_model"),
    }
