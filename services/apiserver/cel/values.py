"""JSON values as CEL sees them at a schema node, and the schema facts both the checks and the conversion need.

The apiextensions-apiserver converts an object before a rule sees it: null fields are absent,
property names are escaped (``x-y`` is ``x__dash__y``), ``number`` fields are doubles and
``integer`` ones ints, ``date-time``/``duration``/``byte`` strings are timestamps, durations and
bytes, and the root of a resource (or of an embedded resource) shows only ``apiVersion``,
``kind`` and ``metadata.name``/``generateName``. A string that does not parse in its format stays
a string: the schema checks have already reported it.
"""

from __future__ import annotations

import base64
import datetime
import re
from collections.abc import Callable
from typing import Any

_RESERVED = frozenset(
    "true false null in as break const continue else for function if import let loop package namespace "
    "return var void while".split()
)


def escape(name: str) -> str | None:
    """How a property name is spelled in CEL (upstream's escaping); None when it cannot be."""
    if name in _RESERVED:
        return f"__{name}__"
    out = name.replace("__", "__underscores__").replace(".", "__dot__").replace("-", "__dash__")
    out = out.replace("/", "__slash__")
    return out if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", out) else None


def is_map(schema: dict) -> bool:
    """Whether a schema node is a map (``additionalProperties`` and no ``properties``)."""
    return not schema.get("properties") and isinstance(schema.get("additionalProperties"), dict)


def declared_fields(schema: Any, root: bool) -> dict[str, Any] | None:
    """The fields CEL sees on an object node (escaped name -> schema), None if it is no object."""
    if not isinstance(schema, dict) or is_map(schema):
        return None
    props = schema.get("properties")
    if not isinstance(props, dict) and not root:
        return (
            None
            if schema.get("type") != "object" or schema.get("x-kubernetes-preserve-unknown-fields")
            else {}
        )
    fields = {e: sub for k, sub in (props or {}).items() if (e := escape(k)) is not None}
    if root:
        meta = {
            "type": "object",
            "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}},
        }
        fields.update(apiVersion={"type": "string"}, kind={"type": "string"}, metadata=meta)
    return fields


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> datetime.timedelta | str:
    body = text.lstrip("+-")
    parts = _DURATION_PART.findall(body)
    if text in ("0", "-0", "+0"):
        return datetime.timedelta(0)
    if not parts or "".join(n + u for n, u in parts) != body:
        return text
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    return datetime.timedelta(seconds=-seconds if text.startswith("-") else seconds)


def _timestamp(text: str) -> datetime.datetime | str:
    try:
        when = datetime.datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return text
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def _bytes(text: str) -> bytes | str:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return text


_STRING_FORMATS: dict[str, Callable[[str], Any]] = {
    "date-time": _timestamp,
    "datetime": _timestamp,
    "date": _timestamp,
    "duration": _duration,
    "byte": _bytes,
}


def to_cel(schema: Any, value: Any, *, root: bool = False) -> Any:
    """A JSON value as CEL sees it at a schema node."""
    if not isinstance(schema, dict):
        schema = {}
    if isinstance(value, dict):
        if root:
            meta = value.get("metadata")
            value = {**value, "metadata": {k: meta[k] for k in ("name", "generateName") if k in meta}} if isinstance(meta, dict) else value  # fmt: skip
        if is_map(schema):
            items = schema["additionalProperties"]
            return {k: to_cel(items, v) for k, v in value.items() if v is not None}
        props = schema.get("properties") or {}
        out = {}
        for key, v in value.items():
            name = escape(key) if key in props else key
            if v is not None and name is not None:
                sub = props.get(key)
                out[name] = to_cel(sub, v, root=isinstance(sub, dict) and bool(sub.get("x-kubernetes-embedded-resource")))  # fmt: skip
        return out
    if isinstance(value, list):
        return [to_cel(schema.get("items"), v) for v in value]
    kind = schema.get("type")
    if kind == "number" and type(value) is int:
        return float(value)
    if kind == "integer" and type(value) is float and value.is_integer():
        return int(value)
    if isinstance(value, str) and kind == "string":
        convert = _STRING_FORMATS.get(schema.get("format") or "")
        return convert(value) if convert else value
    return value
