"""Label and field selectors, as apimachinery's ``labels`` and ``fields`` packages define them.

Label selectors come in two shapes: the string form of list/watch queries
(``app=web,tier in (a,b),!canary,rank>3``), parsed by a small lexer and a
recursive-descent parser that follow ``labels.Parse`` token for token so errors
read the same; and the API form (``matchLabels``/``matchExpressions``) of
Deployments, Services' cousins and PodDisruptionBudgets. Both become the same
immutable ``LabelSelector``: requirements sorted by key, each with a frozenset of
values, so ``matches`` is a few dict lookups per object on the list hot path.
``str()`` renders the canonical string form (Scale ``status.selector``).

Field selectors only know ``=``, ``==`` and ``!=`` joined by commas, with ``\\``
escaping ``,``, ``=`` and ``\\`` in values. What a kind can be selected on is
data: ``selectable_fields`` names the labels, ``object_fields`` computes their
values from an object (``kubernetes:pkg/registry/*/strategy.go`` ``ToSelectableFields``),
and ``check_field_selector`` turns an unknown label into upstream's 400.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from services.machinery import errors, meta

# --- label selectors: model ------------------------------------------------------------------

EXISTS, DOES_NOT_EXIST = "exists", "!"
IN, NOT_IN = "in", "notin"
EQUALS, DOUBLE_EQUALS, NOT_EQUALS = "=", "==", "!="
VALUE_OPERATORS = frozenset({IN, EQUALS, DOUBLE_EQUALS})  # operators that require a label to have one of given values
GREATER, LESS = "gt", "lt"

_INT64 = re.compile(r"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _parse_int(text: str) -> int | None:
    if not _INT64.fullmatch(text):
        return None
    value = int(text)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


@dataclasses.dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # one of the constants above
    values: tuple[str, ...] = ()  # sorted; one element for =, ==, !=, gt, lt

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op == EXISTS:
            return self.key in labels
        if op == DOES_NOT_EXIST:
            return self.key not in labels
        value = labels.get(self.key)
        if op in (IN, EQUALS, DOUBLE_EQUALS):
            return value is not None and value in self.values
        if op in (NOT_IN, NOT_EQUALS):
            return value is None or value not in self.values
        return self._compare(value)

    def _compare(self, value: str | None) -> bool:
        if value is None:
            return False
        have, want = _parse_int(value), _parse_int(self.values[0])
        if have is None or want is None:
            return False
        return have > want if self.operator == GREATER else have < want

    def __str__(self) -> str:
        op = self.operator
        if op == EXISTS:
            return self.key
        if op == DOES_NOT_EXIST:
            return "!" + self.key
        if op in (IN, NOT_IN):
            return f"{self.key} {op} ({','.join(self.values)})"
        symbol = {GREATER: ">", LESS: "<"}.get(op, op)
        return f"{self.key}{symbol}{self.values[0]}"


@dataclasses.dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False  # a nil API selector: matches no object (labels.Nothing())

    @property
    def empty(self) -> bool:
        """True when it selects everything (an empty string or an empty API selector)."""
        return not self.nothing and not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


EVERYTHING = LabelSelector()
NOTHING = LabelSelector(nothing=True)


def _value_repr(values: Iterable[str]) -> str:
    return "[]string{" + ", ".join(f'"{v}"' for v in values) + "}"


def _requirement_errors(key: str, op: str, values: list[str]) -> list[str]:
    """``labels.NewRequirement``'s checks, each rendered as ``field.Error.Error()``."""
    out = [f"key: {c.message}" for c in _key_causes(key)]
    where = "values"
    if op in (IN, NOT_IN) and not values:
        out.append(
            f"{where}: Invalid value: {_value_repr(values)}: for 'in', 'notin' operators, values set can't be empty"
        )
    elif op in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS) and len(values) != 1:
        out.append(
            f"{where}: Invalid value: {_value_repr(values)}: exact-match compatibility requires one single value"
        )
    elif op in (EXISTS, DOES_NOT_EXIST) and values:
        out.append(
            f"{where}: Invalid value: {_value_repr(values)}: values set must be empty for exists and does not exist"
        )
    elif op in (GREATER, LESS):
        if len(values) != 1:
            out.append(
                f"{where}: Invalid value: {_value_repr(values)}: for 'Gt', 'Lt' operators, exactly one value is required"
            )
        for i, v in enumerate(values):
            if _parse_int(v) is None:
                out.append(
                    f"{where}[{i}]: Invalid value: \"{v}\": for 'Gt', 'Lt' operators, the value must be an integer"
                )
    for i, v in enumerate(values):
        msgs = meta.label_value_errors(v)
        if msgs:
            out.append(f'{where}[{i}][{key}]: Invalid value: "{v}": {"; ".join(msgs)}')
    return out


def _key_causes(key: str) -> list[errors.Cause]:
    msgs = meta.qualified_name_errors(key)
    return [meta.invalid("", key, "; ".join(msgs))] if msgs else []


def _aggregate(messages: list[str]) -> str:
    unique = list(dict.fromkeys(messages))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


def new_requirement(key: str, op: str, values: Iterable[str]) -> Requirement:
    """Validated requirement; raises 400 with apimachinery's aggregate message."""
    try:
        return _checked(key, op, list(values))
    except ValueError as exc:
        raise errors.bad_request(str(exc)) from None


def _selector(requirements: list[Requirement]) -> LabelSelector:
    if not requirements:
        return EVERYTHING
    return LabelSelector(tuple(sorted(requirements, key=lambda r: r.key)))


# --- label selectors: the string form ---------------------------------------------------------

_SPECIAL = frozenset("=!(),<>")
_SYMBOLS = frozenset({"!", "!=", "(", ")", ",", "=", "==", ">", "<"})
_KEYWORDS = frozenset({"in", "notin"})
_WHITESPACE = " \t\r\n"
_IDENT, _END = "identifier", "end"
_OPERATOR_TOKENS = {
    "in": IN,
    "notin": NOT_IN,
    "=": EQUALS,
    "==": DOUBLE_EQUALS,
    "!=": NOT_EQUALS,
    ">": GREATER,
    "<": LESS,
}


def _lex(text: str) -> list[tuple[str, str]]:
    """Tokens as (kind, literal): kind is _IDENT, _END, a symbol, or a keyword."""
    tokens, i, n = [], 0, len(text)
    while True:
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if i >= n:
            tokens.append((_END, ""))
            return tokens
        j = i
        if text[i] in _SPECIAL:
            while j < n and text[j] in _SPECIAL and text[i : j + 1] in _SYMBOLS:
                j += 1
            tokens.append((text[i:j], text[i:j]))
        else:
            while j < n and text[j] not in _SPECIAL and text[j] not in _WHITESPACE:
                j += 1
            word = text[i:j]
            tokens.append((word if word in _KEYWORDS else _IDENT, word))
        i = j


class _Parser:
    """``labels.Parser``: keywords are identifiers wherever a value is expected."""

    def __init__(self, text: str) -> None:
        self.tokens = _lex(text)
        self.pos = 0

    def peek(self, *, values: bool = True) -> tuple[str, str]:
        return self._as(self.tokens[self.pos], values)

    def take(self, *, values: bool = True) -> tuple[str, str]:
        tok = self.tokens[self.pos]
        if self.pos < len(self.tokens) - 1:
            self.pos += 1
        return self._as(tok, values)

    @staticmethod
    def _as(tok: tuple[str, str], values: bool) -> tuple[str, str]:
        return (_IDENT, tok[1]) if values and tok[0] in _KEYWORDS else tok

    def parse(self) -> list[Requirement]:
        out: list[Requirement] = []
        while True:
            kind, lit = self.peek()
            if kind == _END:
                return out
            if kind not in (_IDENT, "!"):
                raise ValueError(f"found '{lit}', expected: !, identifier, or 'end of string'")
            try:
                out.append(self.requirement())
            except ValueError as exc:
                raise ValueError(f"unable to parse requirement: {exc}") from None
            kind, lit = self.take()
            if kind == _END:
                return out
            if kind != ",":
                raise ValueError(f"found '{lit}', expected: ',' or 'end of string'")
            kind, lit = self.peek()
            if kind not in (_IDENT, "!"):
                raise ValueError(f"found '{lit}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        key, op = self.key_and_operator()
        if op in (EXISTS, DOES_NOT_EXIST):
            return _checked(key, op, [])
        op = self.operator()
        vals = self.value_set() if op in (IN, NOT_IN) else self.exact_value()
        return _checked(key, op, vals)

    def key_and_operator(self) -> tuple[str, str]:
        kind, lit = self.take()
        negated = kind == "!"
        if negated:
            kind, lit = self.take()
        if kind != _IDENT:
            raise ValueError(f"found '{lit}', expected: identifier")
        causes = _key_causes(lit)
        if causes:
            raise ValueError(f"key: {causes[0].message}")
        if negated:
            return lit, DOES_NOT_EXIST
        return lit, EXISTS if self.peek()[0] in (_END, ",") else ""

    def operator(self) -> str:
        kind, lit = self.take(values=False)
        if kind not in _OPERATOR_TOKENS:
            raise ValueError(f"found '{lit}', expected: in, notin, =, ==, !=, gt, lt")
        return _OPERATOR_TOKENS[kind]

    def value_set(self) -> list[str]:
        kind, lit = self.take()
        if kind != "(":
            raise ValueError(f"found '{lit}' expected: '('")
        kind, lit = self.peek()
        if kind == ")":
            self.take()
            return [""]
        if kind not in (_IDENT, ","):
            raise ValueError(f"found '{lit}', expected: ',', ')' or identifier")
        vals = self.identifier_list()
        if self.take()[0] != ")":
            raise ValueError(f"found '{lit}', expected: ')'")
        return vals

    def identifier_list(self) -> list[str]:
        vals: list[str] = []
        while True:
            kind, lit = self.take()
            if kind == _IDENT:
                vals.append(lit)
                nxt, nlit = self.peek()
                if nxt == ")":
                    return vals
                if nxt != ",":
                    raise ValueError(f"found '{nlit}', expected: ',' or ')'")
            elif kind == ",":
                if not vals:
                    vals.append("")  # "(,a)": an empty value first
                nxt = self.peek()[0]
                if nxt == ")":
                    vals.append("")  # "(a,)": an empty value last
                    return vals
                if nxt == ",":
                    self.take()
                    vals.append("")  # "(a,,b)"
            else:
                raise ValueError(f"found '{lit}', expected: ',', or identifier")

    def exact_value(self) -> list[str]:
        if self.peek()[0] in (_END, ","):
            return [""]
        kind, lit = self.take()
        if kind != _IDENT:
            raise ValueError(f"found '{lit}', expected: identifier")
        return [lit]


def _checked(key: str, op: str, values: list[str]) -> Requirement:
    problems = _requirement_errors(key, op, values)
    if problems:
        raise ValueError(_aggregate(problems))
    return Requirement(key, op, tuple(sorted(set(values))))


def parse_label_selector(text: str) -> LabelSelector:
    """The ``labelSelector`` query parameter; bad syntax is a 400 with ``labels.Parse``'s message."""
    if not text or text.isspace():
        return EVERYTHING
    try:
        return _selector(_Parser(text).parse())
    except ValueError as exc:
        raise errors.bad_request(str(exc)) from None


# --- label selectors: the API form ----------------------------------------------------------

_API_OPERATORS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


def from_label_selector_dict(sel: Mapping[str, Any] | None) -> LabelSelector:
    """``metav1.LabelSelectorAsSelector``: ``None`` selects nothing, ``{}`` everything."""
    if sel is None:
        return NOTHING
    reqs = [new_requirement(k, EQUALS, [v]) for k, v in (sel.get("matchLabels") or {}).items()]
    for expr in sel.get("matchExpressions") or ():
        op = _API_OPERATORS.get(expr.get("operator"))
        if op is None:
            raise errors.bad_request(f'"{expr.get("operator")}" is not a valid label selector operator')
        reqs.append(new_requirement(expr.get("key", ""), op, expr.get("values") or ()))
    return _selector(reqs)


def label_selector_causes(sel: Any, path: str) -> list[errors.Cause]:
    """``ValidateLabelSelector`` for API objects (Deployment ``spec.selector`` and friends)."""
    if sel is None:
        return []
    if not isinstance(sel, dict):
        return [meta.invalid(path, str(sel), "must be an object")]
    causes = meta.label_causes(sel.get("matchLabels"), f"{path}.matchLabels")
    for i, expr in enumerate(sel.get("matchExpressions") or ()):
        causes += _expression_causes(expr, f"{path}.matchExpressions[{i}]")
    return causes


def _expression_causes(expr: dict[str, Any], path: str) -> list[errors.Cause]:
    op, values = expr.get("operator"), expr.get("values") or []
    key = expr.get("key") or ""
    causes = [meta.invalid(f"{path}.key", key, m) for m in meta.qualified_name_errors(key)]
    if op in ("In", "NotIn") and not values:
        causes.append(meta.required(f"{path}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
    elif op in ("Exists", "DoesNotExist") and values:
        causes.append(
            meta.forbidden(
                f"{path}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
            )
        )
    elif op not in _API_OPERATORS:
        causes.append(
            errors.Cause(
                "FieldValueNotSupported",
                f'Unsupported value: "{op}": supported values: "In", "NotIn", "Exists", "DoesNotExist"',
                f"{path}.operator",
            )
        )
    for i, v in enumerate(values):
        causes += [meta.invalid(f"{path}.values[{i}]", v, m) for m in meta.label_value_errors(str(v))]
    return causes


# --- field selectors ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    operator: str  # "=" or "!="
    value: str


@dataclasses.dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, fields: Mapping[str, str]) -> bool:
        for r in self.requirements:
            if (fields.get(r.field, "") == r.value) != (r.operator == "="):
                return False
        return True

    def exact(self, field: str) -> str | None:
        """The value ``field`` must equal, if the selector pins it (index look-ups: spec.nodeName)."""
        for r in self.requirements:
            if r.field == field and r.operator == "=":
                return r.value
        return None

    def __str__(self) -> str:
        return ",".join(f"{r.field}{r.operator}{escape_field_value(r.value)}" for r in self.requirements)


def escape_field_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _unescape(value: str) -> str:
    if not any(c in value for c in "\\,="):
        return value
    out, escaped = [], False
    for c in value:
        if escaped:
            if c not in "\\,=":
                raise errors.bad_request(f"invalid field selector: invalid escape sequence: \\{c}")
            out.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c in ",=":
            raise errors.bad_request(f"invalid field selector: unescaped character in value: {c}")
        else:
            out.append(c)
    if escaped:
        raise errors.bad_request("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _split_terms(text: str) -> list[str]:
    terms, start, escaped = [], 0, False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    # No escaping on the left: the first operator found splits ("!=" and "==" before "=").
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return None


def parse_field_selector(text: str) -> FieldSelector:
    """The ``fieldSelector`` query parameter (``fields.ParseSelector``); terms sort as upstream."""
    if not text:
        return FieldSelector()
    reqs = []
    for term in sorted(_split_terms(text)):
        if not term:
            continue
        parts = _split_term(term)
        if parts is None:
            raise errors.bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        field, op, value = parts
        reqs.append(FieldRequirement(field, "!=" if op == "!=" else "=", _unescape(value)))
    return FieldSelector(tuple(reqs))


# --- what each kind can be selected on -------------------------------------------------------

_POD_FIELDS = (
    "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
    "spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName",
)  # fmt: skip
_INVOLVED = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
_EVENT_FIELDS = tuple(f"involvedObject.{f}" for f in _INVOLVED) + (
    "reason",
    "reportingComponent",
    "source",
    "type",
)

# (group, kind) -> field labels beyond metadata.name/metadata.namespace (``pkg/apis/*/v1/conversion.go``).
KIND_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): _POD_FIELDS,
    ("", "Node"): ("spec.unschedulable",),
    ("", "Event"): _EVENT_FIELDS,
    ("events.k8s.io", "Event"): _EVENT_FIELDS,
    ("", "Namespace"): ("status.phase",),
    ("", "Secret"): ("type",),
    ("", "Service"): ("spec.clusterIP", "spec.type"),
    ("", "ReplicationController"): ("status.replicas",),
    ("batch", "Job"): ("status.successful",),
    ("certificates.k8s.io", "CertificateSigningRequest"): ("spec.signerName",),
}

# Field labels another name maps to before matching (the field label conversion functions).
FIELD_ALIASES: dict[tuple[str, str], dict[str, str]] = {
    ("", "Pod"): {"spec.host": "spec.nodeName"},
    ("events.k8s.io", "Event"): {
        **{f"regarding.{f}": f"involvedObject.{f}" for f in _INVOLVED},
        "reportingController": "reportingComponent",
    },
}


def selectable_fields(
    *, kind: str, group: str, namespaced: bool, extra: tuple[str, ...] = ()
) -> frozenset[str]:
    """Field labels a list of this kind accepts; ``extra`` are a CRD's selectableFields JSON paths."""
    base = ("metadata.name", "metadata.namespace") if namespaced else ("metadata.name",)
    aliases = tuple(FIELD_ALIASES.get((group, kind), ()))
    return frozenset(
        base + KIND_FIELDS.get((group, kind), ()) + aliases + tuple(p.lstrip(".") for p in extra)
    )


# Every alias once, for callers that do not say which kind they list (the canonical label must be allowed).
_ANY_KIND_ALIASES = {
    alias: canonical for table in FIELD_ALIASES.values() for alias, canonical in table.items()
}


def check_field_selector(
    sel: FieldSelector, allowed: Iterable[str], resource: str, *, kind: str = "", group: str = ""
) -> FieldSelector:
    """Reject unsupported field labels with upstream's 400; returns ``sel`` with aliases resolved.

    ``resource`` names what is listed (kept for callers' logging; upstream's message omits it).
    Matching works with or without the returned selector: ``object_fields`` also fills aliases.
    """
    aliases = FIELD_ALIASES.get((group, kind), {}) if kind else _ANY_KIND_ALIASES
    allowed = set(allowed)
    out = []
    for r in sel.requirements:
        field = aliases.get(r.field, r.field)
        if field not in allowed:
            field = r.field
        if field not in allowed:
            raise errors.bad_request(f"field label not supported: {r.field}")
        out.append(r if field == r.field else dataclasses.replace(r, field=field))
    return FieldSelector(tuple(out))


def _s(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)  # type: ignore[assignment]
    return obj


def _pod_fields(obj: Mapping[str, Any]) -> dict[str, str]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ips = status.get("podIPs") or []
    pod_ip = (ips[0].get("ip") if ips and isinstance(ips[0], dict) else None) or status.get("podIP")
    return {
        "spec.nodeName": _s(spec.get("nodeName")),
        "spec.restartPolicy": _s(spec.get("restartPolicy")),
        "spec.schedulerName": _s(spec.get("schedulerName")),
        "spec.serviceAccountName": _s(spec.get("serviceAccountName")),
        "spec.hostNetwork": _s(bool(spec.get("hostNetwork"))),
        "status.phase": _s(status.get("phase")),
        "status.podIP": _s(pod_ip),
        "status.podIPs": "",  # upstream accepts the label but sets no value: only "status.podIPs=" matches
        "status.nominatedNodeName": _s(status.get("nominatedNodeName")),
    }


def _event_fields(obj: Mapping[str, Any], *, group: str) -> dict[str, str]:
    if group == "events.k8s.io":
        involved, reporting = obj.get("regarding") or {}, obj.get("reportingController")
        source = _get(obj, "deprecatedSource", "component") or reporting
    else:
        involved, reporting = obj.get("involvedObject") or {}, obj.get("reportingComponent")
        source = _get(obj, "source", "component") or reporting
    out = {f"involvedObject.{f}": _s(involved.get(f)) for f in _INVOLVED}
    out.update(reason=_s(obj.get("reason")), reportingComponent=_s(reporting), source=_s(source))
    out["type"] = _s(obj.get("type"))
    return out


# Field label -> JSON path, for kinds whose selectable fields are plain copies.
_SIMPLE_FIELDS: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {
    ("", "Node"): {"spec.unschedulable": ("spec", "unschedulable")},
    ("", "Namespace"): {"status.phase": ("status", "phase")},
    ("", "Secret"): {"type": ("type",)},
    ("", "Service"): {"spec.clusterIP": ("spec", "clusterIP"), "spec.type": ("spec", "type")},
    ("", "ReplicationController"): {"status.replicas": ("status", "replicas")},
    ("batch", "Job"): {"status.successful": ("status", "succeeded")},
    ("certificates.k8s.io", "CertificateSigningRequest"): {"spec.signerName": ("spec", "signerName")},
}
# Go zero values printed when the field is absent (a bool or a counter is never "").
_ZERO_VALUES = {"spec.unschedulable": False, "status.replicas": 0, "status.successful": 0}


def _kind_fields(obj: Mapping[str, Any], *, kind: str, group: str) -> dict[str, str]:
    if group == "" and kind == "Pod":
        return _pod_fields(obj)
    if kind == "Event" and group in ("", "events.k8s.io"):
        return _event_fields(obj, group=group)
    paths = _SIMPLE_FIELDS.get((group, kind), {})
    out = {}
    for label, path in paths.items():
        value = _get(obj, *path)
        out[label] = _s(_ZERO_VALUES.get(label) if value is None else value)
    return out


def object_fields(
    obj: Mapping[str, Any], *, kind: str, group: str, namespaced: bool, extra: tuple[str, ...] = ()
) -> dict[str, str]:
    """Selectable field values of ``obj``; missing fields read as "" (upstream's zero values).

    ``extra`` are JSON paths (a CRD's selectableFields); labels the kind already
    computes are kept, so passing a built-in kind's label list here is harmless.
    """
    md = obj.get("metadata") or {}
    out = {"metadata.name": _s(md.get("name"))}
    if namespaced:
        out["metadata.namespace"] = _s(md.get("namespace"))
    out.update(_kind_fields(obj, kind=kind, group=group))
    for alias, canonical in FIELD_ALIASES.get((group, kind), {}).items():
        out[alias] = out[canonical]
    for json_path in extra:
        label = json_path.lstrip(".")
        if label not in out:  # a built-in kind's own labels are computed above, not read as paths
            out[label] = _s(_get(obj, *label.split(".")))
    return out
