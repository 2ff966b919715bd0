"""JSON Schema for tool parameters, derived from a function's signature and docstring."""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Any

__all__ = ["function_schema", "parse_docstring"]

_SIMPLE: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    dict: {"type": "object"},
    list: {"type": "array"},
    Any: {},
}


def type_schema(tp: Any) -> dict[str, Any]:
    """Return the JSON schema of one Python annotation."""
    if tp in _SIMPLE:
        return dict(_SIMPLE[tp])
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        schema = type_schema(args[0])
        for extra in args[1:]:
            if isinstance(extra, str):
                schema["description"] = extra
        return schema
    if origin is typing.Literal:
        values = list(args)
        schema = type_schema(type(values[0])) if values else {}
        schema["enum"] = values
        return schema
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            schema = type_schema(non_none[0])
            if len(non_none) != len(args) and "type" in schema:
                schema["type"] = [schema["type"], "null"]
            return schema
        return {"anyOf": [type_schema(a) for a in args]}
    if origin in (list, tuple, set, frozenset, typing.Sequence, typing.Iterable):
        schema = {"type": "array"}
        if args and args[0] is not Ellipsis:
            schema["items"] = type_schema(args[0])
        return schema
    if origin is dict:
        schema = {"type": "object"}
        if len(args) == 2:
            schema["additionalProperties"] = type_schema(args[1])
        return schema
    if inspect.isclass(tp) and typing.is_typeddict(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        return {
            "type": "object",
            "properties": {k: type_schema(v) for k, v in hints.items()},
            "required": sorted(getattr(tp, "__required_keys__", hints)),
        }
    return {}


_SECTION = re.compile(
    r"^\s*(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?|Notes?)\s*:\s*$"
)
_ARG = re.compile(r"^\s*(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into (summary, {arg: description})."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for line in lines:
        m = _SECTION.match(line)
        if m:
            section = m.group(1)
            current = None
            continue
        if section is None:
            summary.append(line)
        elif section in ("Args", "Arguments", "Parameters"):
            am = _ARG.match(line)
            indent = len(line) - len(line.lstrip())
            if am and indent <= 4:
                current = am.group(1).lstrip("*")
                args[current] = am.group(3).strip()
            elif current and line.strip():
                args[current] = f"{args[current]} {line.strip()}".strip()
    text = "\n".join(summary).strip()
    return text, args


def function_schema(
    fn: Callable[..., Any], *, skip: frozenset[str] = frozenset()
) -> tuple[str, dict[str, Any]]:
    """Return (description, parameters JSON schema) for ``fn``.

    Parameters named in ``skip`` (and ``self``) are left out: they are injected, not chosen by
    the model.
    """
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to untyped parameters
        hints = {}
    description, arg_docs = parse_docstring(fn.__doc__)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in sig.parameters.items():
        if name in skip or name == "self":
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        schema = type_schema(hints.get(name, Any))
        if name in arg_docs and "description" not in schema:
            schema["description"] = arg_docs[name]
        if param.default is inspect.Parameter.empty:
            required.append(name)
        elif param.default is None or isinstance(param.default, (str, int, float, bool)):
            schema["default"] = param.default
        properties[name] = schema
    params: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    params["additionalProperties"] = False
    return description, params
