"""Schema checks of request bodies: unknown and duplicate fields (``fieldValidation``), and schemas.

Two entry points, called from the write path:

- ``check_fields`` runs on the decoded body (or the patched object) before defaulting. It is
  the part of upstream's decoding that knows the kind's schema: unknown fields are pruned (they
  never reach storage, as with kube-apiserver's typed decoder and its CRD pruning), duplicate
  JSON fields are found, and ``fieldValidation`` decides what the client hears: ``Strict`` an
  error, ``Warn`` (upstream's default when the parameter is absent,
  ``apiserver:pkg/endpoints/handlers/rest.go`` ``fieldValidation``) one ``Warning: 299`` per
  field, ``Ignore`` nothing. For built-in kinds it also refuses values of the wrong JSON type
  (422), because defaulting would otherwise trip over them or store garbage.
- ``validate_schema`` returns the 422 causes of a custom resource against its CRD's
  ``openAPIV3Schema``, with the apiextensions-apiserver's reasons and messages (kube-openapi's
  ``"<path> in body must be of type integer: \"string\""`` and friends); for built-in kinds, the
  JSON types again (the apply path skips ``check_fields``) and ``spec.replicas >= 0``.

Speed: a kind's schema is compiled once into a tree of ``_Node`` (built-in kinds from the
project's own OpenAPI schemas, ``openapi.model_schema``, memoised for the process since
lightkube-models never changes under us; custom resources from their CRD schema, memoised by
the identity of that schema, which a registry change replaces). One walk of the object then
prunes and type-checks in a single pass. Duplicate keys cost one extra C-speed ``json.loads``
of the body with a pairs hook; only when it finds one is the body walked again, pair by pair,
to name the duplicates in upstream's order.

CEL rules (``x-kubernetes-validations``) run after the schema checks, through the ``cel`` package, with
the stored object as ``oldSelf`` on update; as upstream, they are skipped (one cause says so)
when the schema checks found a wrong type, a missing required field, an unsupported enum value
or a size limit exceeded, since the rules were written for well-shaped objects.

Not done: YAML bodies are not checked for duplicate keys (PyYAML keeps the last one);
``format: int32``/``int64`` are not range-checked (kube-openapi does not either); CEL rules have
no cost budget (see the ``cel`` package for what else differs from cel-go).
"""

from __future__ import annotations

import base64
import copy
import datetime
import decimal
import ipaddress
import json
import logging
import math
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from services.apiserver import cel, context, openapi, registry
from services.machinery import errors

log = logging.getLogger(__name__)

DIRECTIVES = ("Ignore", "Strict", "Warn")
DEFAULT_DIRECTIVE = "Warn"  # upstream's when the parameter is absent (GA since 1.27)
MAX_STRICT_ERRORS = 100  # sigs.k8s.io/json stops collecting there
_OPTIONS_KIND = {"create": "CreateOptions", "update": "UpdateOptions", "patch": "PatchOptions"}
_PATCH_KINDS = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
}
_JSON_PATCH_FIELDS = frozenset({"op", "path", "from", "value"})
_REPLICATED = frozenset({("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "StatefulSet"),
                         ("", "ReplicationController")})  # fmt: skip


# -- compiled schemas --------------------------------------------------------------------------

_ANY, _SCALAR, _OBJ, _ARR, _MAP, _META = range(6)
# Unknown-field classes of custom resources, in upstream's reporting order: the object's own
# metadata (ObjectMeta coercion), then pruned fields, then embedded resources' metadata.
_TYPED, _ROOT_META, _PRUNED, _EMBEDDED_META = range(4)


class _Node:
    """One schema position: what may appear there and what to do with what may not."""

    __slots__ = ("kind", "props", "child", "preserve", "types", "type_name", "drop_null", "defaults", "cls")

    def __init__(
        self,
        kind: int = _ANY,
        *,
        props: dict[str, _Node] | None = None,
        child: _Node | None = None,
        preserve: bool = False,
        types: frozenset[type] = frozenset(),
        type_name: str = "",
        cls: int = _TYPED,
    ) -> None:
        self.kind = kind
        self.props = props or {}  # _OBJ/_META: known fields
        self.child = child  # _ARR: items; _MAP: values
        self.preserve = preserve  # _OBJ: unknown fields are kept (x-kubernetes-preserve-unknown-fields)
        self.types = types  # _SCALAR: accepted Python types (checked for built-in kinds only)
        self.type_name = type_name  # as kube-openapi names the expected type
        self.drop_null = False  # custom resources: null where not nullable is pruned
        self.defaults: tuple[tuple[str, Any], ...] = ()  # custom resources: structural defaults
        self.cls = cls  # _META: the unknown-field class inside


_STR = frozenset({str, datetime.date, datetime.datetime})  # YAML bodies may carry dates
_SCALARS: dict[str, tuple[frozenset[type], str]] = {
    "string": (_STR, "string"),
    "integer": (frozenset({int}), "integer"),
    "number": (frozenset({int, float}), "number"),
    "boolean": (frozenset({bool}), "boolean"),
}
_INT_OR_STRING = (frozenset({int}) | _STR, "integer,string")
_QUANTITY = (frozenset({int, float}) | _STR, "string")


def _ref_of(schema: dict) -> str:
    ref = schema.get("$ref")
    if ref is None and len(schema.get("allOf") or ()) == 1:
        ref = schema["allOf"][0].get("$ref")
    return ref or ""


def _compile_builtin(schema: dict, resolve: Callable[[str], _Node]) -> _Node:
    """A node from one of the project's OpenAPI component schemas (``openapi.model_schema``)."""
    ref = _ref_of(schema)
    if ref:
        return resolve(ref)
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties")
        if props is not None:
            return _Node(_OBJ, props={k: _compile_builtin(v, resolve) for k, v in props.items()})
        values = schema.get("additionalProperties")
        if isinstance(values, dict):
            return _Node(_MAP, child=_compile_builtin(values, resolve))
        return _Node(_ANY)  # RawExtension, FieldsV1: any embedded JSON
    if kind == "array":
        return _Node(_ARR, child=_compile_builtin(schema.get("items") or {}, resolve))
    if schema.get("x-kubernetes-int-or-string"):
        return _Node(_SCALAR, types=_INT_OR_STRING[0], type_name=_INT_OR_STRING[1])
    if "oneOf" in schema:  # Quantity: a string or a number
        return _Node(_SCALAR, types=_QUANTITY[0], type_name=_QUANTITY[1])
    if kind in _SCALARS:
        types, name = _SCALARS[kind]
        return _Node(_SCALAR, types=types, type_name=name)
    return _Node(_ANY)


_MODELS: dict[openapi.TypeKey, _Node] = {}


def _model(key: openapi.TypeKey) -> _Node:
    """The node of one lightkube type, compiled once for the process."""
    node = _MODELS.get(key)
    if node is None:
        building: dict[openapi.TypeKey, _Node] = {}
        node = _build_model(key, building)
        # Published whole: API servers on other threads (tests) never see a half-built node.
        _MODELS.update(building)
    return node


def _build_model(key: openapi.TypeKey, building: dict[openapi.TypeKey, _Node]) -> _Node:
    node = _MODELS.get(key) or building.get(key)
    if node is not None:
        return node
    node = building[key] = _Node()  # placeholder first: JSONSchemaProps contains itself
    schema, deps = openapi.model_schema(*key)
    refs = {openapi.REF_PREFIX + openapi.schema_name(*dep): dep for dep in deps}
    built = _compile_builtin(
        schema, lambda ref: _build_model(refs[ref], building) if ref in refs else _Node()
    )
    for slot in _Node.__slots__:
        setattr(node, slot, getattr(built, slot))
    return node


_ROOTS: dict[tuple[str, str, str], _Node | None] = {}


def _builtin_root(info: registry.ResourceInfo) -> _Node | None:
    key = (info.group, info.version, info.kind)
    if key not in _ROOTS:
        module = openapi.module_for(info.group, info.version)
        _ROOTS[key] = (
            _model((module, info.kind)) if info.kind in openapi.load_module(module).classes else None
        )
    return _ROOTS[key]


def _meta_node(cls: int) -> _Node:
    meta = _model(("meta_v1", "ObjectMeta"))
    return _Node(_META, props=meta.props, cls=cls)


def _compile_custom(schema: Any) -> _Node:
    """A node from a CRD's structural schema, with upstream's pruning rules."""
    if not isinstance(schema, dict):
        return _Node(_ANY)
    if schema.get("x-kubernetes-int-or-string"):
        return _Node(_SCALAR)
    preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    kind = schema.get("type")
    props = schema.get("properties")
    if not isinstance(props, dict):
        props = None
    embedded = bool(schema.get("x-kubernetes-embedded-resource"))
    if kind == "array":
        return _Node(
            _ARR, child=_compile_custom(schema.get("items") or {"x-kubernetes-preserve-unknown-fields": True})
        )
    if kind != "object" and props is None and not embedded:
        return _Node(_ANY) if preserve or not kind else _Node(_SCALAR)
    values = schema.get("additionalProperties")
    if props is None and isinstance(values, dict):
        return _Node(_MAP, child=_compile_custom(values))
    node = _Node(_OBJ, props={k: _compile_custom(v) for k, v in (props or {}).items()},
                 preserve=preserve or values is True)  # fmt: skip
    for name, sub in (props or {}).items():
        node.props[name].drop_null = not (isinstance(sub, dict) and sub.get("nullable", False))
    node.defaults = tuple(
        (k, v["default"]) for k, v in (props or {}).items() if isinstance(v, dict) and "default" in v
    )
    if embedded:
        node.props.update(apiVersion=_Node(_SCALAR), kind=_Node(_SCALAR), metadata=_meta_node(_EMBEDDED_META))
    return node


def _custom_root(schema: dict | None) -> _Node:
    root = _compile_custom(schema) if schema else _Node(_OBJ, preserve=True)
    if root.kind != _OBJ:
        root = _Node(_OBJ, preserve=True)
    # apiVersion, kind and metadata are the server's, whatever the schema says of them.
    root.props.update(apiVersion=_Node(_SCALAR), kind=_Node(_SCALAR), metadata=_meta_node(_ROOT_META))
    return root


_CUSTOM: dict[int, tuple[dict | None, _Node]] = {}  # id(schema) -> (schema, node)
_CUSTOM_LIMIT = 512  # compiled CRD schemas kept; a registry change brings new schema objects


def _schema_driven(info: registry.ResourceInfo) -> bool:
    return info.custom or info.schema is not None


def _root(info: registry.ResourceInfo) -> _Node | None:
    if not _schema_driven(info):
        return _builtin_root(info)
    found = _CUSTOM.get(id(info.schema))
    if found is not None and found[0] is info.schema:
        return found[1]
    if len(_CUSTOM) >= _CUSTOM_LIMIT:
        _CUSTOM.clear()
    node = _custom_root(info.schema)
    _CUSTOM[id(info.schema)] = (info.schema, node)
    return node


# -- the walk ----------------------------------------------------------------------------------

Path = tuple[str | int, ...]


class _Walk:
    """What one walk found: unknown fields (class, path) in walk order, values of the wrong type."""

    __slots__ = ("unknown", "bad", "prune", "check", "cls")

    def __init__(self, *, prune: bool, check: bool, cls: int) -> None:
        self.unknown: list[tuple[int, Path]] = []
        self.bad: list[tuple[Path, _Node, Any]] = []
        self.prune = prune  # drop unknown fields (not under Strict, whose error shows them)
        self.check = check  # report JSON type mismatches (built-in kinds)
        self.cls = cls


def _walk(node: _Node, value: dict, path: Path, w: _Walk) -> None:
    """Prune and check one object in place. Hot path: keep it flat."""
    props = node.props
    drop = None
    for key, v in value.items():
        child = props.get(key)
        if child is None:
            if not node.preserve:
                w.unknown.append((w.cls, (*path, key)))
                if w.prune:
                    drop = drop or []
                    drop.append(key)
            continue
        if v is None:
            if child.drop_null:
                drop = drop or []
                drop.append(key)
            continue
        kind = child.kind
        if kind == _SCALAR:
            if w.check and type(v) not in child.types:
                w.bad.append(((*path, key), child, v))
        elif kind != _ANY:
            _value(child, v, (*path, key), w)
    if drop:
        for key in drop:
            del value[key]
    for key, default in node.defaults:
        if key not in value:
            value[key] = copy.deepcopy(default)


def _value(node: _Node, v: Any, path: Path, w: _Walk) -> None:
    kind = node.kind
    if kind == _OBJ:
        if type(v) is dict:
            _walk(node, v, path, w)
            return
    elif kind == _ARR:
        if type(v) is list:
            child = node.child
            if child is not None and child.kind != _ANY:
                for i, item in enumerate(v):
                    if item is not None:
                        _value(child, item, (*path, i), w)
            return
    elif kind == _MAP:
        if type(v) is dict:
            child = node.child
            if child is not None and child.kind != _ANY:
                for k, item in v.items():
                    if item is not None:
                        _value(child, item, (*path, k), w)
            return
    elif kind == _META:
        if type(v) is dict:
            outer, w.cls = w.cls, node.cls
            _walk(node, v, path, w)
            w.cls = outer
            return
    elif kind == _SCALAR:
        if not w.check or type(v) in node.types:
            return
    else:
        return
    if w.check:
        w.bad.append((path, node, v))


def _json_type(v: Any) -> str:
    """kube-openapi's name of a value's JSON type."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, list):
        return "array"
    return "string"


def _type_cause(path: str, expected: str, v: Any) -> errors.Cause:
    actual = _json_type(v)
    return errors.Cause(
        "FieldValueTypeInvalid",
        f'Invalid value: "{actual}": {path} in body must be of type {expected}: "{actual}"',
        path,
    )


def _bad_causes(w: _Walk) -> list[errors.Cause]:
    expected = {_OBJ: "object", _META: "object", _MAP: "object", _ARR: "array"}
    return [_type_cause(_fmt(p), expected.get(n.kind, n.type_name), v) for p, n, v in w.bad]


def _fmt(path: Iterable[str | int]) -> str:
    """``spec.containers[0].image``: upstream's way of writing a field path."""
    out = ""
    for part in path:
        if type(part) is int:
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


# -- fieldValidation ---------------------------------------------------------------------------


def _directive(ctx: context.Request) -> str:
    values = ctx.query.get("fieldValidation") or [""]
    value = values[0]
    if value and value not in DIRECTIVES:
        message = f'Unsupported value: {go_quote(value)}: supported values: "", "Ignore", "Strict", "Warn"'
        cause = errors.Cause("FieldValueNotSupported", message, "fieldValidation")
        raise errors.invalid(
            _OPTIONS_KIND.get(ctx.info.verb, "CreateOptions"), "", [cause], group="meta.k8s.io"
        )
    return value or DEFAULT_DIRECTIVE


def check_fields(ctx: context.Request, obj: dict[str, Any]) -> None:
    """Apply ``fieldValidation`` (Strict: an error, Warn: warnings, Ignore) and drop unknown fields."""
    directive = _directive(ctx)
    info = ctx.resource
    root = _root(info)
    if root is None or not isinstance(obj, dict):
        return  # no schema known; or a patch made the object a non-object, which the write refuses
    custom = _schema_driven(info)
    strict = directive == "Strict"
    w = _Walk(prune=not strict, check=not custom, cls=_PRUNED if custom else _TYPED)
    _walk(root, obj, (), w)
    if w.bad:
        # Upstream's decoder fails on these whatever the directive; a 422 names them all.
        raise errors.invalid(info.kind, _name(obj), _bad_causes(w), group=info.group)
    if directive == "Ignore":
        return
    patch_kind = _PATCH_KINDS.get(ctx.content_type)
    found = _strict_errors(ctx, root, w, custom=custom, patch_kind=patch_kind)
    if not found:
        return
    if strict:
        raise _strict_error(ctx, obj, found, patch_kind=patch_kind)
    for text in found:
        if text not in ctx.warnings:  # a retried patch or PUT-creates check twice
            ctx.warnings.append(text)


def _name(obj: dict[str, Any]) -> str:
    md = obj.get("metadata")
    return str(md.get("name") or "") if isinstance(md, dict) else ""


def _strict_errors(
    ctx: context.Request, root: _Node, w: _Walk, *, custom: bool, patch_kind: str | None
) -> list[str]:
    """Upstream's strict decoding errors, in its order (see the module docstring)."""
    body_json = ctx.content_type in ("application/json", "") or patch_kind is not None
    scan = body_json and bool(ctx.body) and patch_kind != "json"  # JSON patches: their own check
    pairs = _pairs_if_duplicates(ctx.body) if scan else None
    messages: list[str] = []
    if patch_kind is not None:
        if patch_kind == "json":
            messages += _json_patch_errors(ctx.body)
        elif pairs is not None:
            messages += _all_duplicates(pairs, ())
        messages += [f'unknown field "{_fmt(p)}"' for _, p in sorted(w.unknown, key=_order)]
    elif custom:
        if pairs is not None:
            messages += _all_duplicates(pairs, ())
        messages += [f'unknown field "{_fmt(p)}"' for _, p in sorted(w.unknown, key=_order)]
    elif pairs is not None:
        messages += _typed_strict(root, pairs, ())
    elif body_json:
        messages += [f'unknown field "{_fmt(p)}"' for _, p in w.unknown]  # document order
    else:
        messages += [f'unknown field "{_fmt(p)}"' for _, p in sorted(w.unknown, key=_order)]  # YAML, protobuf
    return list(dict.fromkeys(messages))[:MAX_STRICT_ERRORS]


def _order(entry: tuple[int, Path]) -> tuple[int, tuple[tuple[int, str | int], ...]]:
    """Sort key: the class, then the path depth-first with keys sorted, as Go re-encodes maps."""
    cls, path = entry
    return cls, tuple((isinstance(p, int), p) for p in path)


def _strict_error(
    ctx: context.Request, obj: dict[str, Any], found: list[str], *, patch_kind: str | None
) -> errors.ApiError:
    text = "strict decoding error: " + ", ".join(found)
    info = ctx.resource
    if patch_kind is None:
        # apiserver handlers/rest.go transformDecodeError (the body's kind and version are ours by now).
        return errors.bad_request(
            f'{info.kind} in version "{info.version}" cannot be handled as a {info.kind}: {text}'
        )
    # handlers/patch.go: field.Invalid("patch", <patched object JSON | the patch map>, ...) in an
    # Invalid error of an empty kind and name.
    if patch_kind == "strategic":
        shown = _go_value(_json_or_none(ctx.body))
    else:
        shown = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS, default=str).decode()
    cause = errors.Cause("FieldValueInvalid", f"Invalid value: {go_quote(shown)}: {text}", "patch")
    return errors.invalid("", "", [cause])


# -- duplicate fields ---------------------------------------------------------------------------


class _Pairs(list):
    """A JSON object as its (key, value) pairs, duplicates kept, in document order."""


class _Duplicate(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Duplicate
    return out


def _pairs_if_duplicates(body: bytes) -> Any:
    """The body as pairs if some object in it repeats a key, else None (the common case).

    A body that is byte for byte orjson's own encoding of what it decodes to (compact JSON in
    document order, as client libraries send) repeats no key: an encoded dict never does. Only
    other bodies pay for the pure-Python pair hook (tens of microseconds for a small object).
    """
    try:
        if orjson.dumps(orjson.loads(body)) == body:
            return None
    except orjson.JSONDecodeError:
        pass  # e.g. NaN or a 65-bit integer, which the slower decoder below accepts
    try:
        json.loads(body, object_pairs_hook=_no_duplicates)
    except _Duplicate:
        return json.loads(body, object_pairs_hook=_Pairs)
    except ValueError:
        return None
    return None


def _all_duplicates(value: Any, path: Path) -> list[str]:
    """Every repeated key, anywhere (an untyped decode: custom resources, patches)."""
    out: list[str] = []
    if isinstance(value, _Pairs):
        seen: set[str] = set()
        for key, item in value:
            if key in seen:
                out.append(f'duplicate field "{_fmt((*path, key))}"')
            seen.add(key)
            out += _all_duplicates(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _all_duplicates(item, (*path, i))
    return out


def _typed_strict(node: _Node, value: Any, path: Path) -> list[str]:
    """Unknown and duplicate fields of a typed decode, interleaved in document order."""
    out: list[str] = []
    if isinstance(value, _Pairs) and node.kind in (_OBJ, _META, _MAP):
        seen: set[str] = set()
        for key, item in value:
            child = node.child if node.kind == _MAP else node.props.get(key)
            where = (*path, key)
            if child is None:
                if not node.preserve:
                    out.append(f'unknown field "{_fmt(where)}"')
                continue
            if key in seen:
                out.append(f'duplicate field "{_fmt(where)}"')
            seen.add(key)
            out += _typed_strict(child, item, where)
    elif isinstance(value, list) and node.kind == _ARR and node.child is not None:
        for i, item in enumerate(value):
            out += _typed_strict(node.child, item, (*path, i))
    return out


def _json_patch_errors(body: bytes) -> list[str]:
    """Unknown and repeated fields of JSON patch operations (``json patch unknown field "[0].foo"``)."""
    try:
        ops = json.loads(body, object_pairs_hook=_Pairs)
    except ValueError:
        return []
    out: list[str] = []
    for i, op in enumerate(ops if isinstance(ops, list) else ()):
        seen: set[str] = set()
        for key, _ in op if isinstance(op, _Pairs) else ():
            if key not in _JSON_PATCH_FIELDS:
                out.append(f'json patch unknown field "[{i}].{key}"')
            elif key in seen:
                out.append(f'json patch duplicate field "[{i}].{key}"')
            seen.add(key)
    return out


def _json_or_none(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


# -- Go formatting (for messages that quote values as apimachinery prints them) ------------------


def go_quote(text: str) -> str:
    """Go's ``%q``."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append(
                {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t", "\v": r"\v"}[
                    ch
                ]
            )
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _go_float(f: float) -> str:
    """Go's ``%v`` of a float64 (strconv 'g', shortest, exponent from 1e+06 and below 1e-04)."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1, f) < 0 else "0"
    sign, digits, exponent = decimal.Decimal(repr(f)).normalize().as_tuple()
    text = "".join(map(str, digits))
    point = len(text) + int(exponent)  # position of the decimal point in the digits
    exp = point - 1
    neg = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{neg}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{neg}0.{'0' * -point}{text}"
    if point >= len(text):
        return f"{neg}{text}{'0' * (point - len(text))}"
    return f"{neg}{text[:point]}.{text[point:]}"


def _go_bad_value(v: Any) -> str:
    """How ``field.Error`` prints a bad value: simple types plainly, strings quoted, the rest as ``%#v``."""
    if v is None:
        return '"null"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, str):
        return go_quote(v)
    return _go_syntax(v)


def _go_syntax(v: Any) -> str:
    """Go's ``%#v`` of decoded JSON."""
    if isinstance(v, dict):
        items = ", ".join(f"{go_quote(str(k))}:{_go_syntax(v[k])}" for k in sorted(v))
        return "map[string]interface {}{" + items + "}"
    if isinstance(v, list):
        return "[]interface {}{" + ", ".join(_go_syntax(x) for x in v) + "}"
    if v is None:
        return "interface {}(nil)"
    return _go_bad_value(v)


def _go_value(v: Any) -> str:
    """Go's ``%+v`` of decoded JSON (numbers are float64 there)."""
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{_go_value(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, list):
        return "[" + " ".join(_go_value(x) for x in v) + "]"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return _go_float(float(v))
    return str(v)


# -- schema validation ---------------------------------------------------------------------------


def validate_schema(
    ctx: context.Request, obj: dict[str, Any], old: dict[str, Any] | None = None
) -> list[errors.Cause]:
    """Causes for values the kind's schema refuses (custom resources: their openAPIV3Schema and
    its CEL rules, ``old`` being the stored object on update)."""
    info = ctx.resource
    if _schema_driven(info):
        return _validate_custom(info.schema, obj, old=old, warnings=ctx.warnings) if info.schema else []
    root = _builtin_root(info)
    causes: list[errors.Cause] = []
    if root is not None:
        w = _Walk(prune=False, check=True, cls=_TYPED)
        _walk(root, obj, (), w)
        causes += _bad_causes(w)
    if (info.group, info.kind) in _REPLICATED:
        replicas = (obj.get("spec") or {}).get("replicas")
        if type(replicas) is int and replicas < 0:
            causes.append(errors.Cause("FieldValueInvalid", f"Invalid value: {replicas}: must be greater than or equal to 0", "spec.replicas"))  # fmt: skip
    return causes


# Schema failures that stop the CEL rules from running (upstream's hasBlockingErr).
_BLOCKING = frozenset({"FieldValueNotSupported", "FieldValueRequired", "FieldValueTooLong", "FieldValueTooMany",
                       "FieldValueTypeInvalid"})  # fmt: skip
_RULES_SKIPPED = errors.Cause(
    "FieldValueInvalid",
    "Invalid value: null: some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation",
    "<nil>",
)


def _validate_custom(
    schema: dict, obj: dict[str, Any], *, old: dict[str, Any] | None = None, warnings: list[str] | None = None
) -> list[errors.Cause]:
    out: list[errors.Cause] = []
    try:
        _check(schema, obj, (), out)
    except (TypeError, AttributeError, ValueError, ZeroDivisionError) as exc:
        # Upstream refuses such a CRD (not structural); here it is stored, so its objects go unchecked.
        log.warning("custom resource schema is malformed, objects are not validated against it: %r", exc)
        return []
    rules = cel.validator_for(schema)
    if rules is None:
        return out
    if any(c.reason in _BLOCKING for c in out):
        return [*out, _RULES_SKIPPED]
    found = cel.validate(rules, obj, old)
    if warnings is not None:  # failures ratcheted on unchanged values
        warnings.extend(w for w in found.warnings if w not in warnings)
    return out + found.causes


def _invalid(
    out: list[errors.Cause], path: Path, value: Any, detail: str, reason: str = "FieldValueInvalid"
) -> None:
    """kube-openapi's message behind field.Invalid's ``Invalid value: <v>``."""
    where = _fmt(path)
    out.append(
        errors.Cause(reason, f"Invalid value: {_go_bad_value(value)}: {where} in body {detail}", where)
    )


def _types(schema: dict) -> list[str]:
    if schema.get("x-kubernetes-int-or-string"):
        return ["integer", "string"]
    kind = schema.get("type")
    if isinstance(kind, list):
        return [str(k) for k in kind]
    return [kind] if isinstance(kind, str) and kind else []


def _type_ok(types: list[str], v: Any) -> bool:
    actual = _json_type(v)
    if actual in types:
        return True
    if actual == "integer" and "number" in types:
        return True
    return actual == "number" and "integer" in types and float(v).is_integer()


def _check(schema: dict, v: Any, path: Path, out: list[errors.Cause]) -> None:
    """Validate one value against one schema node, as the apiextensions-apiserver does."""
    if not isinstance(schema, dict):
        return
    types = _types(schema)
    if v is None:
        if types and not schema.get("nullable"):
            where = _fmt(path)
            out.append(errors.Cause("FieldValueTypeInvalid", f'Invalid value: "null": {where} in body must be of type {",".join(types)}: "null"', where))  # fmt: skip
        return
    if types and not _type_ok(types, v):
        out.append(_type_cause(_fmt(path), ",".join(types), v))
        return
    if isinstance(v, str):
        _check_string(schema, v, path, out)
    elif isinstance(v, int | float) and not isinstance(v, bool):
        _check_number(schema, v, path, out)
    elif isinstance(v, list):
        _check_array(schema, v, path, out)
    elif isinstance(v, dict):
        _check_object(schema, v, path, out)
    enum = schema.get("enum")
    if enum is not None and not any(_same_json(v, e) for e in enum):
        values = ", ".join(go_quote(e if isinstance(e, str) else _json_text(e)) for e in enum)
        where = _fmt(path)
        out.append(errors.Cause("FieldValueNotSupported", f"Unsupported value: {_go_bad_value(v)}: supported values: {values}", where))  # fmt: skip
    _check_composites(schema, v, path, out)


def _check_string(schema: dict, v: str, path: Path, out: list[errors.Cause]) -> None:
    length = len(v)  # kube-openapi counts runes
    if "minLength" in schema and length < schema["minLength"]:
        _invalid(out, path, v, f"should be at least {schema['minLength']} chars long")
    if "maxLength" in schema and length > schema["maxLength"]:
        where = _fmt(path)
        out.append(
            errors.Cause(
                "FieldValueTooLong", f"Too long: may not be more than {schema['maxLength']} bytes", where
            )
        )
    pattern = schema.get("pattern")
    if pattern and not _regex(pattern).search(v):
        _invalid(out, path, v, f"should match '{pattern}'")
    fmt = schema.get("format")
    if fmt and not _FORMATS.get(fmt, _anything)(v):
        where = _fmt(path)
        out.append(errors.Cause("FieldValueTypeInvalid", f"Invalid value: {go_quote(v)}: {where} in body must be of type {fmt}: {go_quote(v)}", where))  # fmt: skip


def _check_number(schema: dict, v: float, path: Path, out: list[errors.Cause]) -> None:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None:
        if schema.get("exclusiveMinimum") and v <= low:
            _invalid(out, path, v, f"should be greater than {_go_float(float(low))}")
        elif v < low:
            _invalid(out, path, v, f"should be greater than or equal to {_go_float(float(low))}")
    if high is not None:
        if schema.get("exclusiveMaximum") and v >= high:
            _invalid(out, path, v, f"should be less than {_go_float(float(high))}")
        elif v > high:
            _invalid(out, path, v, f"should be less than or equal to {_go_float(float(high))}")
    step = schema.get("multipleOf")
    if step and not (v / step).is_integer():
        _invalid(out, path, v, f"should be a multiple of {_go_float(float(step))}")


def _check_array(schema: dict, v: list, path: Path, out: list[errors.Cause]) -> None:
    if "minItems" in schema and len(v) < schema["minItems"]:
        _invalid(out, path, len(v), f"should have at least {schema['minItems']} items")
    if "maxItems" in schema and len(v) > schema["maxItems"]:
        out.append(errors.Cause("FieldValueTooMany", f"Too many: {len(v)}: must have at most {schema['maxItems']} items", _fmt(path)))  # fmt: skip
    if schema.get("uniqueItems") and len({_json_text(x) for x in v}) != len(v):
        _invalid(out, path, "", "shouldn't contain duplicates")
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(v):
            _check(items, item, (*path, i), out)
    _check_list_type(schema, v, path, out)


def _check_list_type(schema: dict, v: list, path: Path, out: list[errors.Cause]) -> None:
    """x-kubernetes-list-type set and map: no repeated items or keys (apiextensions listtype)."""
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        seen: set[str] = set()
        for i, item in enumerate(v):
            text = _json_text(item)
            if text in seen:
                out.append(
                    errors.Cause(
                        "FieldValueDuplicate", f"Duplicate value: {_go_bad_value(item)}", _fmt((*path, i))
                    )
                )
            seen.add(text)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        props = (schema.get("items") or {}).get("properties") or {}
        seen = set()
        for i, item in enumerate(v):
            if not isinstance(item, dict):
                continue
            key = {k: item.get(k, (props.get(k) or {}).get("default")) for k in keys}
            text = _json_text(key)
            if text in seen:
                out.append(
                    errors.Cause(
                        "FieldValueDuplicate", f"Duplicate value: {_go_syntax(key)}", _fmt((*path, i))
                    )
                )
            seen.add(text)


def _check_object(schema: dict, v: dict, path: Path, out: list[errors.Cause]) -> None:
    for name in schema.get("required") or ():
        if name not in v:
            out.append(errors.Cause("FieldValueRequired", "Required value", _fmt((*path, name))))
    props = schema.get("properties") or {}
    for name, sub in props.items():
        if name in v and not (not path and name == "metadata"):
            _check(sub, v[name], (*path, name), out)
    if not path and "metadata" in v and "metadata" in props:
        _check_metadata(props["metadata"], v["metadata"], out)
    values = schema.get("additionalProperties")
    if isinstance(values, dict):
        for name, item in v.items():
            if name not in props:
                _check(values, item, (*path, name), out)


def _check_metadata(schema: dict, v: Any, out: list[errors.Cause]) -> None:
    """A CRD may constrain only ``metadata.name`` and ``metadata.generateName``."""
    props = schema.get("properties") or {}
    if isinstance(v, dict):
        for name in ("name", "generateName"):
            if name in props and name in v:
                _check(props[name], v[name], ("metadata", name), out)


def _check_composites(schema: dict, v: Any, path: Path, out: list[errors.Cause]) -> None:
    for sub in schema.get("allOf") or ():
        _check(sub, v, path, out)
    where = _fmt(path)
    any_of = schema.get("anyOf")
    if any_of and not any(_passes(sub, v, path) for sub in any_of):
        out.append(errors.Cause("FieldValueInvalid", f'Invalid value: "": {where} in body must validate at least one schema (anyOf)', where))  # fmt: skip
    one_of = schema.get("oneOf")
    if one_of and sum(_passes(sub, v, path) for sub in one_of) != 1:
        out.append(errors.Cause("FieldValueInvalid", f'Invalid value: "": {where} in body must validate one and only one schema (oneOf)', where))  # fmt: skip
    not_ = schema.get("not")
    if isinstance(not_, dict) and _passes(not_, v, path):
        out.append(errors.Cause("FieldValueInvalid", f'Invalid value: "": {where} in body must not validate the schema (not)', where))  # fmt: skip


def _passes(schema: dict, v: Any, path: Path) -> bool:
    found: list[errors.Cause] = []
    _check(schema, v, path, found)
    return not found


def _json_text(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return orjson.dumps(v, option=orjson.OPT_SORT_KEYS, default=str).decode()


def _same_json(a: Any, b: Any) -> bool:
    return _json_text(a) == _json_text(b)


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _regex(pattern: str) -> re.Pattern[str]:
    found = _REGEX_CACHE.get(pattern)
    if found is None:
        try:
            found = re.compile(pattern)
        except re.error:  # an RE2 feature Python lacks: accept rather than fail every write
            found = re.compile("")
        if len(_REGEX_CACHE) > 1024:
            _REGEX_CACHE.clear()
        _REGEX_CACHE[pattern] = found
    return found


# -- string formats (the ones CRDs use; others pass) ----------------------------------------------


def _anything(_: str) -> bool:
    return True


def _parses(parse: Callable[[str], Any]) -> Callable[[str], bool]:
    def check(text: str) -> bool:
        try:
            parse(text)
        except (ValueError, TypeError):
            return False
        return True

    return check


_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_DURATION = re.compile(
    r"^[-+]?(\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d|w)((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d|w))*$"
)
_MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)


def _date_time(text: str) -> bool:
    return bool(_DATE_TIME.match(text)) and _parses(
        lambda t: datetime.datetime.fromisoformat(t.replace("z", "Z"))
    )(text)


_FORMATS: dict[str, Callable[[str], bool]] = {
    "date-time": _date_time,
    "datetime": _date_time,
    "date": _parses(datetime.date.fromisoformat),
    "duration": lambda t: t == "0" or bool(_DURATION.match(t)),
    "byte": _parses(lambda t: base64.b64decode(t, validate=True)),
    "uuid": _parses(uuid.UUID),
    "uuid3": _parses(uuid.UUID),
    "uuid4": _parses(uuid.UUID),
    "uuid5": _parses(uuid.UUID),
    "ipv4": _parses(ipaddress.IPv4Address),
    "ipv6": _parses(ipaddress.IPv6Address),
    "cidr": _parses(lambda t: ipaddress.ip_network(t, strict=False)),
    "mac": lambda t: bool(_MAC.match(t)),
    "hostname": lambda t: bool(_HOSTNAME.match(t)),
}
