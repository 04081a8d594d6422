"""Building blocks of the typed configuration (torch-free).

* :class:`ConfigModel`: the base of every section model (unknown keys are errors, frozen).
* Field types shared by all sections, above all the z, y, x triples (:data:`ZYXInt`,
  :data:`ZYXNonNegInt`, :data:`ZYXFloat`, ...) and the percentile pair.
* :func:`config_error`: a pydantic :class:`~pydantic.ValidationError` as one
  :class:`~fewlabel.errors.ConfigError` whose lines name the config key path of each problem
  (``config key 'ingest.chunks.0': ...``) and the fix; :func:`parse` validates a mapping and
  raises that error; :func:`zyx` checks a z, y, x argument of a library function with the same
  field types.
"""

from __future__ import annotations

import numbers
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from fewlabel.errors import ConfigError

CONFIG_FIX = "edit config/config.yaml (every key is documented there)."


class ConfigModel(BaseModel):
    """Base of every configuration section: unknown keys are errors; instances are immutable
    (derive a changed copy with ``model_copy(update=...)``, validate it with
    ``type(m).model_validate({**m.model_dump(), ...})``).

    Command-line overrides are typed like YAML (:func:`yaml_typed`): Snakemake reads a nested
    ``--config detection='{train: {epochs: 2}, model: null}'`` with YAML's BaseLoader, so
    every scalar arrives as a string. Numeric and boolean strings already pass pydantic's lax
    mode; ``null`` / ``~`` for an optional key, ``'2'`` for ``Literal[2, 3]`` and the values of
    free mappings (``loss_params``) are converted here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _command_line_strings(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        return value if field is None else yaml_typed(value, field.annotation)


_NULL_STRINGS = frozenset({"null", "Null", "NULL", "~"})


def _allows_none(annotation: Any) -> bool:
    if annotation is None or annotation is type(None):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, Annotated):
        return any(_allows_none(a) for a in typing.get_args(annotation))
    return False


def _literal_values(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, Annotated):
        return [v for a in typing.get_args(annotation) for v in _literal_values(a)]
    return []


def _scalar(text: str) -> Any:
    """A string as YAML's safe loader types a plain scalar (3, 0.5, true, null), else itself."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if value is None or isinstance(value, (bool, int, float)) else text


def yaml_typed(value: Any, annotation: Any) -> Any:
    """``value`` for a field of type ``annotation``, with command-line strings typed as YAML
    would: ``'null'``/``'~'`` -> None where None is allowed, ``'2'`` -> 2 for an int Literal,
    and every string leaf of a free mapping (``dict[str, Any]``) as a YAML scalar. Anything
    else is returned unchanged (pydantic's lax mode handles numeric and boolean strings)."""
    if isinstance(value, str):
        if value in _NULL_STRINGS and _allows_none(annotation):
            return None
        literals = _literal_values(annotation)
        if value not in literals:
            for literal in literals:
                if isinstance(literal, int) and not isinstance(literal, bool):
                    typed = _scalar(value)
                    if typed == literal and isinstance(typed, int):
                        return typed
        return value
    if isinstance(value, Mapping) and _is_mapping(annotation):
        return {k: _retype_leaves(v) for k, v in value.items()}
    return value


def _retype_leaves(value: Any) -> Any:
    if isinstance(value, str):
        return _scalar(value)
    if isinstance(value, Mapping):
        return {k: _retype_leaves(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_retype_leaves(v) for v in value]
    return value


# --------------------------------------------------------------------------- field types
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1)]
"""A number in [0, 1]."""
OpenFraction = Annotated[float, Field(gt=0, lt=1)]
"""A number in (0, 1)."""

ZYXInt = tuple[PosInt, PosInt, PosInt]
"""z, y, x voxel counts, each >= 1 (tiles, crops, chunks, shapes)."""
ZYXNonNegInt = tuple[NonNegInt, NonNegInt, NonNegInt]
"""z, y, x voxel counts, each >= 0 (overlaps, halos, radii)."""
ZYXFloat = tuple[PosFloat, PosFloat, PosFloat]
"""z, y, x positive finite numbers (voxel sizes in µm, Gaussian sigmas)."""
ZYXNonNegFloat = tuple[NonNegFloat, NonNegFloat, NonNegFloat]
"""z, y, x finite numbers >= 0."""


def _increasing(value: tuple[float, float]) -> tuple[float, float]:
    if not value[0] < value[1]:
        raise ValueError(f"low {value[0]:g} must be below high {value[1]:g}")
    return value


Percent = Annotated[float, Field(ge=0, le=100)]
Percentiles = Annotated[tuple[Percent, Percent], AfterValidator(_increasing)]
"""(low, high) percentiles with 0 <= low < high <= 100."""


# --------------------------------------------------------------------------- errors
def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model class inside ``annotation`` (``X``, ``X | None``, ``Annotated``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _is_mapping(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, Annotated):
        return any(_is_mapping(a) for a in typing.get_args(annotation))
    return origin in (dict, Mapping) or annotation is dict


def key_path(
    model: type[BaseModel] | None, loc: tuple[Any, ...], error_type: str = ""
) -> list[str | int]:
    """``loc`` of a pydantic error without the union-member tags pydantic inserts
    (``'int'``, ``"literal['auto']"``...): keeps field names, list indices, mapping keys and
    the unknown key of an ``extra_forbidden`` error."""
    out: list[str | int] = []
    current: Any = model
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(current, type) and issubclass(current, BaseModel):
            if isinstance(part, str) and part in current.model_fields:
                out.append(part)
                annotation = current.model_fields[part].annotation
                current = _model_in(annotation) or ("mapping" if _is_mapping(annotation) else None)
            elif last and error_type == "extra_forbidden":
                out.append(part)
            continue
        if current == "mapping" and isinstance(part, str):
            out.append(part)
            current = None
        elif isinstance(part, int):
            out.append(part)
    return out


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _annotation_at(model: type[BaseModel] | None, path: list[str | int]) -> Any:
    """The annotation of the field at ``path`` (None when the path leaves the models)."""
    current: Any = model
    annotation: Any = None
    for part in path:
        if (
            isinstance(current, type)
            and issubclass(current, BaseModel)
            and part in current.model_fields
        ):
            annotation = current.model_fields[part].annotation
            current = _model_in(annotation)
        else:
            return None
    return annotation


def _tuple_length(annotation: Any) -> int | None:
    """The fixed length of the tuple inside ``annotation`` (``tuple[int, int, int]`` -> 3)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return len(args)
    for arg in args if origin is not tuple else ():
        found = _tuple_length(arg)
        if found is not None:
            return found
    return None


def _allowed_keys(model: type[BaseModel] | None, path: list[str | int]) -> list[str]:
    owner = _model_in(_annotation_at(model, path[:-1])) if path[:-1] else model
    return list(owner.model_fields) if owner is not None else []


def _message(
    model: type[BaseModel] | None, path: list[str | int], error: Any
) -> tuple[list[str | int], str]:
    """(key path, message) of one pydantic error, in config terms."""
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, path)
        return path, "unknown key" + (f"; allowed here: {allowed}" if allowed else "")
    if kind == "missing" and path and isinstance(path[-1], int):
        path = path[:-1]
        length = _tuple_length(_annotation_at(model, path))
        got = len(value) if isinstance(value, (list, tuple)) else "?"
        return path, f"needs {length or 'more'} values, got {got} ({_short(value)})"
    if kind in ("tuple_type", "too_long", "too_short") and _tuple_length(
        _annotation_at(model, path)
    ):
        length = _tuple_length(_annotation_at(model, path))
        return path, f"needs a list of {length} values (got {_short(value)})"
    message = error["msg"]
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    if not isinstance(value, Mapping) and kind != "missing":
        message += f" (got {_short(value)})"
    return path, message


def section_key(model: type[BaseModel] | None) -> str:
    """The config key path of a section model (``DetectorTrainConfig`` ->
    ``'detection.train'``), '' for the root or an unknown model."""
    if model is None:
        return ""
    from fewlabel.config.root import section_paths

    return section_paths().get(model.__name__, "")


def config_error(
    exc: ValidationError,
    *,
    model: type[BaseModel] | None = None,
    prefix: str | None = None,
    fix: str = CONFIG_FIX,
) -> ConfigError:
    """One ConfigError for all problems of ``exc``, each line naming its config key path.

    ``model`` is the validated model class (default: looked up by ``exc.title``); ``prefix``
    the config path of that model (default: where it sits in :class:`FewlabelConfig`).
    """
    if model is None:
        from fewlabel.config.root import model_by_name

        model = model_by_name(exc.title)
    if prefix is None:
        prefix = section_key(model)
    problems: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False):
        path, message = _message(model, key_path(model, tuple(error["loc"]), error["type"]), error)
        key = ".".join(str(p) for p in ([prefix] if prefix else []) + path) or "<top>"
        if message not in problems.setdefault(key, []):
            problems[key].append(message)
    lines = [
        f"config key '{key}': " + "; or ".join(messages)
        for key, messages in list(problems.items())[:12]
    ]
    if len(problems) > 12:
        lines.append(f"... and {len(problems) - 12} more")
    return ConfigError("invalid configuration:\n  " + "\n  ".join(lines) + "\n", fix=fix)


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any = None, *, prefix: str | None = None, **values: Any) -> M:
    """``model.model_validate(data | values)``; a ValidationError becomes a ConfigError naming
    the key (``prefix``: the model's config path, default its place in the config)."""
    merged = dict(data or {}) if isinstance(data, Mapping) or data is None else data
    if values and isinstance(merged, dict):
        merged.update(values)
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        raise config_error(exc, model=model, prefix=prefix) from None


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def zyx(
    value: Any, name: str, kind: Any = ZYXNonNegInt, *, broadcast: bool = True
) -> tuple[Any, Any, Any]:
    """A z, y, x argument checked with one of the shared field types (``kind``: ZYXInt,
    ZYXNonNegInt, ZYXFloat, ...); a single number means all three axes when ``broadcast``.
    Raises ConfigError naming ``name``."""
    if broadcast and isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = (value, value, value)
    adapter = _ADAPTERS.setdefault(kind, TypeAdapter(kind))
    try:
        return adapter.validate_python(value)  # type: ignore[no-any-return]
    except ValidationError as exc:
        problems = "; ".join(
            ".".join(str(p) for p in (name, *key_path(None, tuple(e["loc"])))) + ": " + e["msg"]
            for e in exc.errors(include_url=False)
        )
        raise ConfigError(
            f"{name} = {_short(value)} is not a valid z, y, x triple ({problems}).",
            fix=f"write {name} as [z, y, x].",
        ) from None


def like(base: type[BaseModel], name: str, default: Any) -> Any:
    """``Field(default)`` with the description of ``base``'s field ``name``: a subclass that
    only changes a default (same type and constraints, re-annotated) keeps the docs."""
    return Field(default, description=base.model_fields[name].description)
