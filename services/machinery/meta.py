"""Object metadata helpers: identities, timestamps, names and ObjectMeta validation.

Mirrors apimachinery's ``validation`` and ``api/validation`` packages over plain
dicts. Messages are Kubernetes' own wording (clients and users grep for them),
and each problem is an ``errors.Cause`` whose ``message`` is what apimachinery's
``field.Error.ErrorBody()`` prints (``Invalid value: "x": <detail>``), so the API
server can hand the list straight to ``errors.invalid``.

Everything here is pure and cheap: precompiled regexes, no copies of the object.
"""

from __future__ import annotations

import datetime
import os
import random
import re
import time
from collections.abc import Callable
from typing import Any, Literal

from services.machinery import errors

# generateName: 5 random characters from an alphabet without vowels (no accidental words)
# and without look-alikes, appended to a prefix cut to 63 - 5 characters.
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
RANDOM_LENGTH = 5
MAX_GENERATED_PREFIX = 63 - RANDOM_LENGTH

TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024  # bytes of keys plus values, as upstream counts them
STANDARD_FINALIZERS = frozenset({"kubernetes", "orphan", "foregroundDeletion"})

_QNAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QNAME_MSG = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
_LABEL_VALUE_FMT = f"({_QNAME_FMT})?"
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_DNS_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_DNS_SUBDOMAIN_FMT = _DNS_LABEL_FMT + r"(\." + _DNS_LABEL_FMT + ")*"
_DNS_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)

_QNAME_RE = re.compile(_QNAME_FMT)
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE_FMT)
_DNS_LABEL_RE = re.compile(_DNS_LABEL_FMT)
_DNS_SUBDOMAIN_RE = re.compile(_DNS_SUBDOMAIN_FMT)


# --- identities and time ------------------------------------------------------------------------


def new_uid() -> str:
    """A random (version 4) UUID; ``uuid.uuid4()`` costs several times more, and every create takes one."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_stamp: tuple[int, str] = (-1, "")  # the last second asked for and its text: formatted once per second


def now_rfc3339() -> str:
    """``metav1.Time``: UTC, second precision, ``Z`` suffix."""
    global _stamp
    second = int(time.time())
    if _stamp[0] != second:
        _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
    return _stamp[1]


def rfc3339_in(seconds: float) -> str:
    """``metav1.Time`` ``seconds`` from now (deletion deadlines, lease expiries)."""
    then = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    return then.strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """``metav1.MicroTime``: UTC with six fractional digits."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def generate_name(prefix: str) -> str:
    # Not a secret: math/rand upstream too. The caller retries on AlreadyExists.
    return prefix[:MAX_GENERATED_PREFIX] + "".join(random.choices(NAME_ALPHABET, k=RANDOM_LENGTH))


# --- string checks (apimachinery/pkg/util/validation) ------------------------------------------


def _max_len(length: int) -> str:
    return f"must be no more than {length} characters"


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    # Upstream's loop writes "'a', " then " or 'b', ": the doubled space is part of the message.
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def dns1123_label_errors(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append(_max_len(63))
    if not _DNS_LABEL_RE.fullmatch(value):
        if _DNS_SUBDOMAIN_RE.fullmatch(value):
            errs.append("must not contain dots")  # a valid subdomain of legal length: only dots are wrong
        else:
            errs.append(_regex_error(_DNS_LABEL_MSG, _DNS_LABEL_FMT, "my-name", "123-abc"))
    return errs


def dns1123_subdomain_errors(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append(_max_len(253))
    if not _DNS_SUBDOMAIN_RE.fullmatch(value):
        errs.append(_regex_error(_DNS_SUBDOMAIN_MSG, _DNS_SUBDOMAIN_FMT, "example.com"))
    return errs


def path_segment_errors(value: str, *, prefix: bool = False) -> list[str]:
    """Names used as one URL path segment (RBAC roles, ...): no ``.``/``..``, no ``/`` or ``%``."""
    if not prefix and value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and _DNS_LABEL_RE.fullmatch(value) is not None


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= 253 and _DNS_SUBDOMAIN_RE.fullmatch(value) is not None


def qualified_name_errors(key: str) -> list[str]:
    """Label and annotation keys: ``[prefix/]name`` with a DNS subdomain prefix."""
    parts = key.split("/")
    errs: list[str] = []
    if len(parts) > 2:
        return [
            "a qualified name "
            + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in dns1123_subdomain_errors(prefix))
    name = parts[-1]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part " + _max_len(63))
    if not _QNAME_RE.fullmatch(name):
        errs.append("name part " + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc"))
    return errs


def label_value_errors(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append(_max_len(63))
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(_regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


# --- causes in field.Error's wording ---------------------------------------------------------


def _render(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def invalid(field: str, value: Any, detail: str) -> errors.Cause:
    return errors.Cause("FieldValueInvalid", f"Invalid value: {_render(value)}: {detail}", field)


def required(field: str, detail: str = "") -> errors.Cause:
    return errors.Cause(
        "FieldValueRequired", f"Required value: {detail}" if detail else "Required value", field
    )


def forbidden(field: str, detail: str) -> errors.Cause:
    return errors.Cause("FieldValueForbidden", f"Forbidden: {detail}", field)


def too_long(field: str, limit: int) -> errors.Cause:
    return errors.Cause("FieldValueTooLong", f"Too long: may not be more than {limit} bytes", field)


# --- ObjectMeta ------------------------------------------------------------------------------

NameRule = Literal["subdomain", "label", "path"]


def _mask_trailing_dash(name: str) -> str:
    # A generateName prefix may end in '-': the random suffix follows it.
    return name[:-1] + "a" if len(name) > 1 and name.endswith("-") else name


def _name_checker(rule: NameRule) -> Callable[[str, bool], list[str]]:
    if rule == "path":
        return lambda name, prefix: path_segment_errors(name, prefix=prefix)
    check = dns1123_label_errors if rule == "label" else dns1123_subdomain_errors
    return lambda name, prefix: check(_mask_trailing_dash(name) if prefix else name)


def validate_object_meta(
    obj: dict[str, Any], *, namespaced: bool, name_rule: NameRule, kind: str
) -> list[errors.Cause]:
    """ObjectMeta checks every kind shares; ``kind`` is accepted for kind-specific rules to come."""
    md = obj.get("metadata")
    if not isinstance(md, dict):
        return [required("metadata")]
    causes = _name_causes(md, _name_checker(name_rule))
    causes += _namespace_causes(md, namespaced=namespaced)
    generation = md.get("generation")
    if isinstance(generation, int) and generation < 0:
        causes.append(invalid("metadata.generation", generation, "must be greater than or equal to 0"))
    causes += label_causes(md.get("labels"), "metadata.labels")
    causes += annotation_causes(md.get("annotations"), "metadata.annotations")
    causes += _owner_reference_causes(md.get("ownerReferences"), "metadata.ownerReferences")
    causes += finalizer_causes(md.get("finalizers"), "metadata.finalizers")
    return causes


def _name_causes(md: dict[str, Any], check: Callable[[str, bool], list[str]]) -> list[errors.Cause]:
    name, generate = md.get("name") or "", md.get("generateName") or ""
    causes = (
        [invalid("metadata.generateName", generate, m) for m in check(generate, True)] if generate else []
    )
    if name:
        causes += [invalid("metadata.name", name, m) for m in check(name, False)]
    elif not generate:
        causes.append(required("metadata.name", "name or generateName is required"))
    return causes


def _namespace_causes(md: dict[str, Any], *, namespaced: bool) -> list[errors.Cause]:
    namespace = md.get("namespace") or ""
    if not namespaced:
        return [forbidden("metadata.namespace", "not allowed on this type")] if namespace else []
    if not namespace:
        return [required("metadata.namespace")]
    return [invalid("metadata.namespace", namespace, m) for m in dns1123_label_errors(namespace)]


def label_causes(labels: Any, path: str) -> list[errors.Cause]:
    if not labels:
        return []
    if not isinstance(labels, dict):
        return [invalid(path, str(labels), "must be a map of string keys to string values")]
    causes = []
    for key, value in labels.items():
        causes += [invalid(path, key, m) for m in qualified_name_errors(key)]
        if not isinstance(value, str):
            causes.append(invalid(path, str(value), "label values must be strings"))
            continue
        causes += [invalid(path, value, m) for m in label_value_errors(value)]
    return causes


def annotation_causes(annotations: Any, path: str) -> list[errors.Cause]:
    if not annotations:
        return []
    if not isinstance(annotations, dict):
        return [invalid(path, str(annotations), "must be a map of string keys to string values")]
    causes, size = [], 0
    for key, value in annotations.items():
        causes += [invalid(path, key, m) for m in qualified_name_errors(key.lower())]
        size += len(key) + (len(value) if isinstance(value, str) else 0)
    if size > TOTAL_ANNOTATION_SIZE_LIMIT:
        causes.append(too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT))
    return causes


def finalizer_causes(finalizers: Any, path: str) -> list[errors.Cause]:
    if not finalizers:
        return []
    causes = []
    for name in finalizers:
        if not isinstance(name, str):
            causes.append(invalid(path, str(name), "finalizers must be strings"))
            continue
        causes += [invalid(path, name, m) for m in qualified_name_errors(name)]
        if "/" not in name and name not in STANDARD_FINALIZERS:
            causes.append(
                invalid(path, name, "name is neither a standard finalizer name nor is it fully qualified")
            )
    if "orphan" in finalizers and "foregroundDeletion" in finalizers:
        causes.append(invalid(path, "orphan", "finalizer orphan and foregroundDeletion cannot be both set"))
    return causes


def _owner_reference_causes(refs: Any, path: str) -> list[errors.Cause]:
    if not refs:
        return []
    causes, controllers = [], []
    for ref in refs:
        if not isinstance(ref, dict):
            causes.append(invalid(path, str(ref), "must be an object"))
            continue
        for key, what in (("apiVersion", "version"), ("kind", "kind"), ("name", "name"), ("uid", "uid")):
            if not ref.get(key):
                causes.append(invalid(path, "", f"{what} must not be empty"))
        if ref.get("controller") is True:
            controllers.append(f"{ref.get('kind')}/{ref.get('name')}")
    if len(controllers) > 1:
        found = ", ".join(controllers)
        causes.append(
            invalid(
                path,
                found,
                f'Only one reference can have Controller set to true. Found "true" in references for {found}',
            )
        )
    return causes
