"""``workflow/schemas/config.schema.yaml`` is generated from :class:`FewlabelConfig`.

    python -m fewlabel.config.schema            # (re)write the schema file
    python -m fewlabel.config.schema --check    # exit 1 if the committed file is stale

The file documents the configuration for editors and readers (JSON Schema draft 2020-12);
validation itself runs through the pydantic models.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from fewlabel.config.root import FewlabelConfig
from fewlabel.config.sheet import SCHEMA_DIR

SCHEMA_PATH = SCHEMA_DIR / "config.schema.yaml"
HEADER = (
    "# GENERATED from the pydantic models in src/fewlabel/config/ by\n"
    "#   python -m fewlabel.config.schema\n"
    "# Do not edit: change the models and regenerate (a unit test compares the two).\n"
)


def _compact(node: Any) -> Any:
    """Drop the generated titles, join docstring lines, and write a tuple of equal items
    (``prefixItems: [X, X, X]``) as ``items: X`` (same meaning with min/maxItems)."""
    if isinstance(node, list):
        return [_compact(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _compact(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(out.get("description"), str):
        out["description"] = " ".join(out["description"].split())
    prefix = out.get("prefixItems")
    if isinstance(prefix, list) and prefix and all(item == prefix[0] for item in prefix):
        out = {
            ("items" if k == "prefixItems" else k): (prefix[0] if k == "prefixItems" else v)
            for k, v in out.items()
        }
    return out


def config_schema() -> dict[str, Any]:
    """The JSON schema of the configuration (validation mode)."""
    schema = _compact(FewlabelConfig.model_json_schema(mode="validation"))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    """The schema file's content."""
    body = yaml.safe_dump(
        config_schema(), sort_keys=False, allow_unicode=True, width=100, default_flow_style=None
    )
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fewlabel.config.schema", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--output", type=Path, default=SCHEMA_PATH, help="schema file to write")
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 when the file differs from the models",
    )
    args = parser.parse_args(argv)
    text = schema_text()
    current = args.output.read_text() if args.output.exists() else None
    if args.check:
        if current != text:
            print(f"{args.output} is stale: run python -m fewlabel.config.schema", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
