"""Report sections of the run record: provenance (creation time, git commit, package versions
per environment, input checksums) and the config as YAML.

Like :mod:`fewlabel.report.sections`, each builder returns ``None`` when its input is not given,
which omits the section.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from fewlabel.report.data import table_context


def _versions_table(data: Mapping[str, Any]) -> tuple[pd.DataFrame | None, str | None]:
    """Package versions, one column per environment: the one that wrote the run record
    (rule summarize_run) and, per trained model, the one its training job ran in."""
    columns: dict[str, Mapping[str, Any] | str] = {}
    if data.get("versions"):
        columns["run record (summarize_run)"] = data["versions"]
    for role, model in (data.get("models") or {}).items():
        if isinstance(model, Mapping):
            stage = model.get("stage")
            name = f"{role} ({stage})" if stage else str(role)
            columns[name] = model.get("versions") or "not recorded"
    if not columns:
        return None, None
    packages: list[str] = []
    for versions in columns.values():
        if isinstance(versions, Mapping):
            packages += [str(k) for k in versions if str(k) not in packages]
    rows = [
        {
            "package": package,
            **{
                name: (
                    str(versions.get(package, "–"))
                    if isinstance(versions, Mapping)
                    else str(versions)
                )
                for name, versions in columns.items()
            },
        }
        for package in packages or ["–"]
    ]
    note = None
    if len(columns) > 1:
        note = (
            "Each column is one environment: the run record's own (the run summary rule), and "
            "per model the one its training job ran in (from the model's training.json). "
            "Under --sdm conda each rule has its own environment, so a package missing from one "
            'reads "not in this rule\'s environment".'
        )
    return pd.DataFrame(rows, columns=["package", *columns]), note


def _provenance_section(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if data is None:
        return None
    versions, versions_note = _versions_table(data)
    inputs = data.get("inputs") or {}
    return {
        "created": data.get("created"),
        "git_commit": data.get("git_commit"),
        "versions": table_context(versions, key=None) if versions is not None else None,
        "versions_note": versions_note,
        "inputs": table_context(
            pd.DataFrame(
                [{"input": k, "sha256": v} for k, v in inputs.items()], columns=["input", "sha256"]
            ),
            key=None,
        )
        if inputs
        else None,
    }


def _config_yaml(config: Mapping[str, Any] | None) -> str | None:
    if not config:
        return None
    import yaml

    plain = json.loads(json.dumps(config, default=str))
    return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False, allow_unicode=True)
