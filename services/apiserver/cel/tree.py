"""The tree of compiled rules of one schema, and the walk that runs them on an object.

Only the positions that have rules, or have some below them, get a node, so an object whose
schema has one rule deep inside costs one walk down one path. The tree of a schema is built once,
keyed by the identity of the schema object (a registry change brings a new one), as
``validation.py`` does for its own compiled tree. There is no cost budget: a rule runs to the end.

Upstream's words for the results: ``Invalid value: "object": failed rule: <rule>``,
``<error> evaluating rule: <rule>``, the rule's ``message``/``messageExpression``/``reason``/
``fieldPath``, and ratcheting: on update, a failing rule that does not use ``oldSelf`` on a value
that did not change is a warning, not an error. ``oldSelf`` is the correlated old value (object
fields, map keys, ``x-kubernetes-list-type: map`` items); a rule that uses it runs only where one
exists, unless ``optionalOldSelf`` makes it an optional.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

from services.apiserver.cel import engine, fieldpath, rules, values
from services.machinery import errors

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 5000  # upstream's MaxEvaluatedMessageExpressionSizeBytes


class Node:
    """The rules of one schema position and of the positions below it that have any."""

    __slots__ = ("schema", "rules", "props", "items", "values", "all_of", "root", "type_name")

    def __init__(
        self, schema: dict[str, Any], *, root: bool, rules_from: dict[str, Any] | None = None
    ) -> None:
        self.schema = schema
        self.root = root
        self.type_name = str(schema.get("type") or "")
        raw = (schema if rules_from is None else rules_from).get("x-kubernetes-validations")
        self.rules = tuple(
            rules.compile_rule(r, schema, root=root)
            for r in (raw if isinstance(raw, list) else ())
            if isinstance(r, dict)
        )
        self.props: dict[str, Node] = {}
        self.items: Node | None = None
        self.values: Node | None = None
        self.all_of: tuple[Node, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.rules or self.props or self.items or self.values or self.all_of)


def _embedded(schema: Any) -> bool:
    return isinstance(schema, dict) and bool(schema.get("x-kubernetes-embedded-resource"))


def build(schema: Any, *, root: bool = False) -> Node | None:
    """The validator of a schema node, or None when no rule lives at or below it."""
    if not isinstance(schema, dict):
        return None
    node = Node(schema, root=root)
    props = schema.get("properties")
    for name, sub in props.items() if isinstance(props, dict) else ():
        child = build(sub, root=_embedded(sub))
        if child is not None:
            node.props[name] = child
    items = schema.get("items")
    node.items = build(items, root=_embedded(items))
    values = schema.get("additionalProperties")
    node.values = build(values, root=_embedded(values))
    # allOf entries may carry rules of their own; they run on this node's value and structure.
    node.all_of = tuple(
        Node(schema, root=root, rules_from=sub)
        for sub in schema.get("allOf") or ()
        if isinstance(sub, dict) and sub.get("x-kubernetes-validations")
    )
    return None if node.empty else node


_VALIDATORS: dict[int, tuple[Any, Node | None]] = {}  # id(schema) -> (schema, validator)
_VALIDATORS_LIMIT = 512


def validator_for(schema: dict[str, Any]) -> Node | None:
    """The compiled rules of a custom resource's schema, built once per schema object."""
    found = _VALIDATORS.get(id(schema))
    if found is not None and found[0] is schema:
        return found[1]
    if len(_VALIDATORS) >= _VALIDATORS_LIMIT:
        _VALIDATORS.clear()
    node = build(schema, root=True)
    _VALIDATORS[id(schema)] = (schema, node)
    return node


@dataclasses.dataclass
class Outcome:
    """What the rules found: causes (the 422) and warnings (ratcheted failures)."""

    causes: list[errors.Cause] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)


_MISSING = object()


def validate(node: Node, obj: Any, old: Any = None) -> Outcome:
    """Run every rule of ``node`` on ``obj`` (and ``old``, the stored object, on update)."""
    out = Outcome()
    before = _MISSING if old is None else old
    _walk(node, obj, before, "", out, unchanged=before is not _MISSING and before == obj)
    return out


def _walk(node: Node, value: Any, old: Any, path: str, out: Outcome, *, unchanged: bool) -> None:
    if value is None:
        return  # rules see only non-null values
    if node.rules:
        _run_rules(node, value, old, path, out, unchanged=unchanged)
    for sub in node.all_of:
        _walk(sub, value, old, path, out, unchanged=unchanged)
    if isinstance(value, dict):
        _walk_object(node, value, old, path, out, unchanged=unchanged)
    elif isinstance(value, list) and node.items is not None:
        olds = _correlate_list(node.schema, old)
        for i, item in enumerate(value):
            before = olds(item)
            same = before == item if before is not _MISSING else unchanged
            _walk(node.items, item, before, f"{path}[{i}]", out, unchanged=same)


def _walk_object(node: Node, value: dict, old: Any, path: str, out: Outcome, *, unchanged: bool) -> None:
    map_type = node.schema.get("x-kubernetes-map-type")
    olds = old if isinstance(old, dict) and map_type in (None, "granular", "atomic") else {}
    for key, item in value.items():
        child = node.props.get(key) if node.props else None
        where = fieldpath.child_path(path, key)
        if child is None and node.values is not None and key not in (node.schema.get("properties") or {}):
            child, where = node.values, f"{path}[{key}]"
        if child is None:
            continue
        before = olds.get(key, _MISSING)
        same = before == item if before is not _MISSING else unchanged
        _walk(child, item, before, where, out, unchanged=same)


def _correlate_list(schema: dict, old: Any) -> Callable[[Any], Any]:
    """Old items by their list-map keys: only ``x-kubernetes-list-type: map`` lists correlate."""
    keys = schema.get("x-kubernetes-list-map-keys") or []
    if schema.get("x-kubernetes-list-type") != "map" or not isinstance(old, list) or not keys:
        return lambda _item: _MISSING
    defaults = {
        k: ((schema.get("items") or {}).get("properties") or {}).get(k, {}).get("default") for k in keys
    }

    def key_of(item: Any) -> str:
        return json.dumps([item.get(k, defaults[k]) for k in keys]) if isinstance(item, dict) else ""

    by_key = {key_of(item): item for item in old if isinstance(item, dict)}
    return lambda item: by_key.get(key_of(item), _MISSING)


def _run_rules(node: Node, value: Any, old: Any, path: str, out: Outcome, *, unchanged: bool) -> None:
    self_value = values.to_cel(node.schema, value, root=node.root)
    old_value = (
        values.to_cel(node.schema, old, root=node.root)
        if old is not _MISSING and old is not None
        else _MISSING
    )
    shown = path or "<nil>"
    for rule in node.rules:
        if rule.error:
            out.causes.append(_invalid(shown, node.type_name, f"rule compile error: {rule.error}"))
            continue
        if rule.program is None:
            continue
        variables = {"self": self_value}
        if rule.uses_old_self:
            if rule.optional_old_self:
                variables["oldSelf"] = engine.load().OptionalValue.none() if old_value is _MISSING else engine.load().OptionalValue.of(old_value)  # fmt: skip
            elif old_value is _MISSING:
                continue  # transition rules run only where there is an old value
            else:
                variables["oldSelf"] = old_value
        try:
            result = engine.run(rule.program, variables)
        except engine.EvalError as exc:
            detail = str(exc)
            if detail == "no such overload":
                detail = f"'{detail}': call arguments did not match a supported operator, function or macro signature for rule: {rule.error_string}"  # fmt: skip
            else:
                detail = f"{detail} evaluating rule: {rule.error_string}"
            out.causes.append(_invalid(shown, node.type_name, detail))
            continue
        if result is True:
            continue
        if result is not False:
            out.causes.append(_invalid(shown, node.type_name, f"cel expression must evaluate to a bool evaluating rule: {rule.error_string}"))  # fmt: skip
            continue
        where = fieldpath.rule_path(path, rule.field_path) or "<nil>"
        cause = _failure(rule, where, node.type_name, _message(rule, variables, old_value))
        if not rule.uses_old_self and unchanged:
            out.warnings.append(f"{cause.field}: {cause.message}")
        else:
            out.causes.append(cause)


def _message(rule: rules.Rule, variables: dict[str, Any], old_value: Any) -> str:
    if rule.message_program is not None:
        activation = dict(variables)
        if rule.uses_old_self and old_value is not _MISSING:
            activation["oldSelf"] = old_value  # messageExpression sees the plain (not optional) oldSelf
        try:
            text = engine.run(rule.message_program, activation)
        except engine.EvalError as exc:
            log.debug("messageExpression %r failed: %s", rule.message_expression, exc)
        else:
            if isinstance(text, str):
                text = text.strip()
                if text and "\n" not in text and len(text.encode()) <= MAX_MESSAGE_BYTES:
                    return text
    return rule.message.strip() if rule.message.strip() else f"failed rule: {rule.rule.strip()}"


def _invalid(path: str, type_name: str, detail: str) -> errors.Cause:
    return errors.Cause("FieldValueInvalid", f"Invalid value: {json.dumps(type_name)}: {detail}", path)


def _failure(rule: rules.Rule, path: str, type_name: str, detail: str) -> errors.Cause:
    if rule.reason == "FieldValueForbidden":
        return errors.Cause("FieldValueForbidden", f"Forbidden: {detail}", path)
    if rule.reason == "FieldValueRequired":
        return errors.Cause("FieldValueRequired", f"Required value: {detail}", path)
    if rule.reason == "FieldValueDuplicate":
        return errors.Cause("FieldValueDuplicate", f"Duplicate value: {json.dumps(type_name)}", path)
    return _invalid(path, type_name, detail)
