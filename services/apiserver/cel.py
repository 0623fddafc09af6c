"""CEL validation rules of custom resources (``x-kubernetes-validations``), as kube-apiserver runs them.

The expression language itself is the ``common-expression-language`` package (Rust bindings of
cel-rust): it parses, runs the standard macros and functions, and reports which names an
expression references. Around it this module adds what Kubernetes puts on top of plain CEL:

- the variables: ``self`` is the value at the rule's schema node, converted the way the
  apiextensions-apiserver does (null fields are absent, property names are escaped, ``number``
  fields are doubles, ``date-time``/``duration``/``byte`` strings are timestamps, durations and
  bytes, the resource root shows only ``metadata.name`` and ``generateName``); ``oldSelf`` is
  the correlated old value on update, and a rule that uses it (a transition rule) runs only
  where one exists, unless ``optionalOldSelf`` makes it an optional;
- Kubernetes' cheap extension functions (lists: ``isSorted``, ``sum``, ``min``, ``max``,
  ``indexOf``, ``lastIndexOf``; strings: ``charAt``, ``indexOf``, ``lastIndexOf``,
  ``lowerAscii``, ``upperAscii``, ``trim``, ``split``, ``join``, ``replace``, ``substring``,
  ``reverse``; regex: ``find``, ``findAll``). ``url``, ``quantity``, ``ip`` and ``cidr`` are not
  provided;
- a static check standing in for cel-go's type checker: names and functions that nothing
  declares, and fields that the schema does not have (``undefined field 'x'``), fail at CRD
  write time with upstream's ``compilation failed: ERROR: <input>:1:N: ...`` text. Types are
  otherwise checked only when the rule runs;
- the errors, worded as upstream words them (``Invalid value: "object": failed rule: <rule>``,
  ``<error> evaluating rule: <rule>``), with ``message``, ``messageExpression``, ``reason`` and
  ``fieldPath``, and ratcheting: on update, a failing rule that does not use ``oldSelf`` on a
  value that did not change is a warning, not an error.

Compilation happens once: programs are memoised by source text, and the tree of rules of one
schema by the identity of that schema object (a registry change brings a new one), as
``validation.py`` does for its own compiled tree. There is no cost budget: a rule runs to the end.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from services.machinery import errors

log = logging.getLogger(__name__)
# The library logs a WARNING each time a registered function raises; ours raise on purpose (an
# out-of-range substring is the rule's runtime error, reported to the client), so only its errors.
logging.getLogger("cel").setLevel(logging.ERROR)

REASONS = ("FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired")
MAX_MESSAGE_BYTES = 5000  # upstream's MaxEvaluatedMessageExpressionSizeBytes


# -- Kubernetes' extension functions -------------------------------------------------------------


class _Error(ValueError):
    """A runtime error of an extension function; its text is what the client reads."""


def _index(s: str, i: int) -> int:
    if i < 0 or i > len(s):
        raise _Error(f"index out of range: {i}")
    return i


def _index_of(target: Any, item: Any, start: int = 0) -> int:
    if isinstance(target, str):
        return target.find(item, _index(target, start))
    return next((i for i, x in enumerate(target) if x == item), -1)


def _last_index_of(target: Any, item: Any, end: int | None = None) -> int:
    if isinstance(target, str):
        stop = len(target) if end is None else _index(target, end) + len(item)
        return target.rfind(item, 0, stop)
    return next((i for i in range(len(target) - 1, -1, -1) if target[i] == item), -1)


def _substring(s: str, start: int, end: int | None = None) -> str:
    stop = len(s) if end is None else _index(s, end)
    if _index(s, start) > stop:
        raise _Error(f"invalid substring range. start: {start}, end: {stop}")
    return s[start:stop]


def _char_at(s: str, i: int) -> str:
    return s[_index(s, i) : i + 1]


def _split(s: str, sep: str, limit: int = -1) -> list[str]:
    if limit == 0:
        return []
    if sep == "":
        parts = list(s)
        return parts if limit < 0 or limit >= len(parts) else [*parts[: limit - 1], s[limit - 1 :]]
    return s.split(sep, limit - 1 if limit > 0 else -1)


def _replace(s: str, old: str, new: str, limit: int = -1) -> str:
    return s.replace(old, new, limit if limit >= 0 else -1)


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_ASCII_UPPER = {c + 32: c for c in range(ord("A"), ord("Z") + 1)}


def _extreme(pick: Callable[..., Any], name: str) -> Callable[[list], Any]:
    def call(items: list) -> Any:
        if not items:
            raise _Error(f"{name}(list) called on an empty list")
        return pick(items)

    return call


def _find_all(s: str, pattern: str, limit: int = -1) -> list[str]:
    found = [m.group(0) for m in re.finditer(pattern, s)]
    return found if limit < 0 else found[:limit]


def _find(s: str, pattern: str) -> str:
    match = re.search(pattern, s)
    return match.group(0) if match else ""


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "isSorted": lambda items: all(items[i] <= items[i + 1] for i in range(len(items) - 1)),
    "sum": lambda items: sum(items, 0),
    "min": _extreme(min, "min"),
    "max": _extreme(max, "max"),
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "charAt": _char_at,
    "lowerAscii": lambda s: s.translate(_ASCII_LOWER),
    "upperAscii": lambda s: s.translate(_ASCII_UPPER),
    "trim": lambda s: s.strip(),
    "split": _split,
    "join": lambda items, sep="": sep.join(items),
    "replace": _replace,
    "substring": _substring,
    "reverse": lambda v: v[::-1],
    "find": _find,
    "findAll": _find_all,
}

# What the expression may name besides FUNCTIONS: the standard library, types and macros.
_STANDARD = frozenset(
    "size int uint double string bool bytes dyn type duration timestamp matches contains startsWith endsWith "
    "getDate getDayOfMonth getDayOfWeek getDayOfYear getFullYear getHours getMilliseconds getMinutes "
    "getMonth getSeconds hasValue value orValue or optional list map null_type has all exists exists_one "
    "filter".split()
)
# Kubernetes libraries not provided (url, quantity, ip, cidr, semver, format): a CRD naming them
# is accepted, as upstream accepts it, and a rule calling one fails when it runs.
_NOT_PROVIDED = frozenset(
    "url isURL getScheme getHost getHostname getPort getEscapedPath getQuery quantity isQuantity sign "
    "isInteger asInteger asApproximateFloat add sub isLessThan isGreaterThan compareTo ip isIP family "
    "isUnspecified isLoopback isLinkLocalMulticast isLinkLocalUnicast isGlobalUnicast cidr isCIDR "
    "containsIP containsCIDR masked prefixLength semver isSemver major minor patch format quote "
    "authorizer".split()
)
_MACRO_VAR = re.compile(
    r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,(?:\s*([A-Za-z_]\w*)\s*,)?"
)
_STRING_LITERAL = re.compile(
    r"""[rRbB]*('''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")""", re.S
)
_SELECT_CHAIN = re.compile(r"(?<![\w.])(self|oldSelf)((?:\s*\.\s*[A-Za-z_]\w*(?!\w)(?!\s*\())*)")
_SEGMENT = re.compile(r"\.\s*([A-Za-z_]\w*)")


# -- compilation -----------------------------------------------------------------------------------


class CompileError(Exception):
    """Why a rule does not compile, in cel-go's words (``ERROR: <input>:1:N: ...``)."""


_PROGRAMS: dict[str, Any] = {}
_PROGRAMS_LIMIT = 4096


def _located(source: str, pos: int, message: str) -> str:
    line_start = source.rfind("\n", 0, pos) + 1
    line_end = source.find("\n", pos)
    line_end = len(source) if line_end < 0 else line_end
    row = source.count("\n", 0, pos) + 1
    col = pos - line_start
    return f"ERROR: <input>:{row}:{col + 1}: {message}\n | {source[line_start:line_end]}\n | {'.' * col}^"


def _engine() -> Any:
    """The CEL engine, loaded at the first rule: it costs about 24 MB, which a cluster without CEL
    rules (most edge devices) should not pay."""
    import cel

    return cel


def _parse(source: str) -> Any:
    found = _PROGRAMS.get(source)
    if found is None:
        try:
            found = _engine().compile(source)
        except (ValueError, RuntimeError) as exc:
            text = str(exc)
            text = text[text.find("ERROR:") :] if "ERROR:" in text else text
            raise CompileError(re.sub(r"(?m)^\| ", " | ", text)) from None
        if len(_PROGRAMS) >= _PROGRAMS_LIMIT:
            _PROGRAMS.clear()
        _PROGRAMS[source] = found
    return found


def _blank_strings(source: str) -> str:
    """The source with string literals' contents blanked (positions kept), for the scans below."""
    return _STRING_LITERAL.sub(lambda m: m.group(0)[0] + " " * (len(m.group(0)) - 2) + m.group(0)[-1], source)


def _check_names(program: Any, source: str, scanned: str, declared: frozenset[str]) -> None:
    bound = {name for match in _MACRO_VAR.finditer(scanned) for name in match.groups() if name}
    for name in program.variables():
        if name not in declared and name not in bound and name not in _STANDARD:
            pos = re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", scanned)
            raise CompileError(_located(source, pos.start() if pos else 0, f"undeclared reference to '{name}' (in container '')"))  # fmt: skip
    for name in program.functions():
        known = name in _STANDARD or name in FUNCTIONS or name in _NOT_PROVIDED
        if re.fullmatch(r"[A-Za-z_]\w*", name) and not known:
            pos = re.search(rf"\b{re.escape(name)}\s*\(", scanned)
            raise CompileError(_located(source, pos.start() if pos else 0, f"undeclared reference to '{name}' (in container '')"))  # fmt: skip


def _check_fields(source: str, scanned: str, schema: dict, *, root: bool, old_optional: bool) -> None:
    """cel-go's ``undefined field`` for selections of ``self``/``oldSelf`` the schema does not declare."""
    for chain in _SELECT_CHAIN.finditer(scanned):
        if chain.group(1) == "oldSelf" and old_optional:
            continue
        node: Any = schema
        at_root = root
        for seg in _SEGMENT.finditer(chain.group(2)):
            fields = _declared_fields(node, at_root)
            if fields is None:
                node = node.get("additionalProperties") if _is_map(node) else None
                if not isinstance(node, dict):
                    break
            elif seg.group(1) in fields:
                node = fields[seg.group(1)]
            else:
                if node.get("x-kubernetes-preserve-unknown-fields"):
                    break
                pos = chain.start(2) + seg.start()
                raise CompileError(_located(source, pos, f"undefined field '{seg.group(1)}'"))
            at_root = isinstance(node, dict) and bool(node.get("x-kubernetes-embedded-resource"))


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


def _is_map(schema: dict) -> bool:
    return not schema.get("properties") and isinstance(schema.get("additionalProperties"), dict)


def _declared_fields(schema: Any, root: bool) -> dict[str, Any] | None:
    """The fields CEL sees on an object node (escaped name -> schema), None if it is no object."""
    if not isinstance(schema, dict) or _is_map(schema):
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


@dataclasses.dataclass(frozen=True)
class Rule:
    """One ``x-kubernetes-validations`` entry, compiled."""

    rule: str
    message: str = ""
    message_expression: str = ""
    reason: str = ""
    field_path: str = ""
    optional_old_self: bool = False
    program: Any = None
    message_program: Any = None
    uses_old_self: bool = False
    error: str = ""  # why the rule does not compile ("compilation failed: ...")
    message_error: str = ""  # why the messageExpression does not compile

    @property
    def error_string(self) -> str:
        """The rule as errors name it: its message if it has one, else its text."""
        return self.message.strip() or self.rule.strip()


def compile_rule(raw: dict[str, Any], schema: dict[str, Any], *, root: bool = False) -> Rule:
    """Compile one rule written at ``schema`` (``root``: the resource's or an embedded resource's root)."""
    source = str(raw.get("rule") or "")
    rule = Rule(
        rule=source,
        message=str(raw.get("message") or ""),
        message_expression=str(raw.get("messageExpression") or ""),
        reason=str(raw.get("reason") or ""),
        field_path=str(raw.get("fieldPath") or ""),
        optional_old_self=bool(raw.get("optionalOldSelf")),
    )
    if not source.strip():
        return rule
    try:
        program = _parse(source)
        scanned = _blank_strings(source)
        _check_names(program, source, scanned, frozenset({"self", "oldSelf"}))
        _check_fields(source, scanned, schema, root=root, old_optional=rule.optional_old_self)
    except CompileError as exc:
        return dataclasses.replace(rule, error=f"compilation failed: {exc}")
    uses_old = "oldSelf" in program.variables()
    rule = dataclasses.replace(rule, program=program, uses_old_self=uses_old)
    if rule.message_expression.strip():
        try:
            msg = _parse(rule.message_expression)
            _check_names(msg, rule.message_expression, _blank_strings(rule.message_expression), frozenset({"self", "oldSelf"}))  # fmt: skip
        except CompileError as exc:
            return dataclasses.replace(rule, message_error=f"messageExpression compilation failed: {exc}")
        rule = dataclasses.replace(rule, message_program=msg)
    return rule


# -- values ------------------------------------------------------------------------------------------


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
        if _is_map(schema):
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


# -- evaluation ------------------------------------------------------------------------------------


class EvalError(Exception):
    """A rule that could not be evaluated, with cel-go's words for why."""


_LIBRARY_FUNCTION_ERROR = re.compile(r"Function '(\w+)' error: (?:Python function call failed: \w+: )?(.*?)(?:\. Check function arguments.*)?$", re.S)  # fmt: skip


def _eval_error(exc: Exception) -> EvalError:
    text = str(exc)
    if isinstance(exc, KeyError):
        return EvalError(f"no such key: {exc.args[0] if exc.args else ''}")
    if isinstance(exc, TypeError) and text.lower().startswith("no such overload"):
        return EvalError("no such overload")
    if isinstance(exc, OverflowError):
        return EvalError("integer overflow")
    if isinstance(exc, ZeroDivisionError):
        return EvalError("modulus by zero" if "modulo" in text else "division by zero")
    match = _LIBRARY_FUNCTION_ERROR.search(text)
    if match:
        return EvalError(match.group(2))
    undefined = re.search(r"Undefined variable or function: '(\w+)'", text)
    if undefined:
        return EvalError(f"no such attribute: {undefined.group(1)}")
    return EvalError(text)


def run(program: Any, variables: dict[str, Any]) -> Any:
    """Evaluate a compiled program; every failure is an EvalError."""
    try:
        return program.execute(_engine().Context(variables, FUNCTIONS))
    except (
        KeyError,
        IndexError,
        TypeError,
        ValueError,
        OverflowError,
        ZeroDivisionError,
        RuntimeError,
    ) as exc:
        raise _eval_error(exc) from None


# -- the validator tree ----------------------------------------------------------------------------


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
            compile_rule(r, schema, root=root)
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


def _child_path(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


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
        where = _child_path(path, key)
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
    self_value = to_cel(node.schema, value, root=node.root)
    old_value = (
        to_cel(node.schema, old, root=node.root) if old is not _MISSING and old is not None else _MISSING
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
                variables["oldSelf"] = _engine().OptionalValue.none() if old_value is _MISSING else _engine().OptionalValue.of(old_value)  # fmt: skip
            elif old_value is _MISSING:
                continue  # transition rules run only where there is an old value
            else:
                variables["oldSelf"] = old_value
        try:
            result = run(rule.program, variables)
        except EvalError as exc:
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
        where = _rule_path(path, rule.field_path) or "<nil>"
        cause = _failure(rule, where, node.type_name, _message(rule, variables, old_value))
        if not rule.uses_old_self and unchanged:
            out.warnings.append(f"{cause.field}: {cause.message}")
        else:
            out.causes.append(cause)


def _message(rule: Rule, variables: dict[str, Any], old_value: Any) -> str:
    if rule.message_program is not None:
        activation = dict(variables)
        if rule.uses_old_self and old_value is not _MISSING:
            activation["oldSelf"] = old_value  # messageExpression sees the plain (not optional) oldSelf
        try:
            text = run(rule.message_program, activation)
        except EvalError as exc:
            log.debug("messageExpression %r failed: %s", rule.message_expression, exc)
        else:
            if isinstance(text, str):
                text = text.strip()
                if text and "\n" not in text and len(text.encode()) <= MAX_MESSAGE_BYTES:
                    return text
    return rule.message.strip() if rule.message.strip() else f"failed rule: {rule.rule.strip()}"


def _invalid(path: str, type_name: str, detail: str) -> errors.Cause:
    return errors.Cause("FieldValueInvalid", f"Invalid value: {json.dumps(type_name)}: {detail}", path)


def _failure(rule: Rule, path: str, type_name: str, detail: str) -> errors.Cause:
    if rule.reason == "FieldValueForbidden":
        return errors.Cause("FieldValueForbidden", f"Forbidden: {detail}", path)
    if rule.reason == "FieldValueRequired":
        return errors.Cause("FieldValueRequired", f"Required value: {detail}", path)
    if rule.reason == "FieldValueDuplicate":
        return errors.Cause("FieldValueDuplicate", f"Duplicate value: {json.dumps(type_name)}", path)
    return _invalid(path, type_name, detail)


# -- fieldPath ---------------------------------------------------------------------------------------


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


def _rule_path(path: str, field_path: str) -> str:
    if not field_path.strip():
        return path
    for match in _FIELD_PATH_TOKEN.finditer(field_path.strip()):
        if match.group(1) is not None:
            path = _child_path(path, match.group(1))
        else:
            path += "[" + re.sub(r"\\(.)", r"\1", match.group(2) or "") + "]"
    return path
