"""A rule's ``fieldPath``: checked against the schema when the CRD is written, joined to the
failing node's path when the rule fails (``.spec['a.b'].x`` -> ``spec[a.b].x``)."""

from __future__ import annotations

import re
from typing import Any

_FIELD_PATH_TOKEN = re.compile(r"\.([^.\[\]]*)|\['((?:\\.|[^'\\])*)'\]|(.)", re.S)


def parse_field_path(text: str, schema: Any) -> list[tuple[str, bool]] | None:
    """A rule's ``fieldPath`` as (name, is_map_key) steps valid for ``schema``; None when invalid."""
    steps: list[tuple[str, bool]] = []
    node = schema
    for match in _FIELD_PATH_TOKEN.finditer(text.strip()):
        name = match.group(1) if match.group(1) is not None else match.group(2)
        if match.group(3) is not None or name is None or not isinstance(node, dict):
            return None
        if match.group(2) is not None:
            name = re.sub(r"\\(.)", r"\1", name)
        props = node.get("properties")
        if isinstance(props, dict) and props:
            if name not in props:
                return None
            steps.append((name, False))
            node = props[name]
        elif isinstance(node.get("additionalProperties"), dict):
            steps.append((name, True))
            node = node["additionalProperties"]
        else:
            return None
    return steps


def child_path(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def rule_path(path: str, field_path: str) -> str:
    """Where a failure is reported: the node's path, extended by the rule's ``fieldPath``."""
    if not field_path.strip():
        return path
    for match in _FIELD_PATH_TOKEN.finditer(field_path.strip()):
        if match.group(1) is not None:
            path = child_path(path, match.group(1))
        else:
            path += "[" + re.sub(r"\\(.)", r"\1", match.group(2) or "") + "]"
    return path
