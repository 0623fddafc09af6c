"""The ``format`` library: named string formats whose ``validate`` returns upstream's messages.

``format.dns1123Label().validate(s)`` is ``optional.none()`` when ``s`` is valid, else an optional
list of the messages apimachinery's validators give (the same words the API server uses for
object names, from ``services.machinery.meta``); ``format.named('dns1123Label')`` is the format
as an optional, none for an unknown name. The ``*Prefix`` formats check a ``generateName``-style
prefix: a trailing ``-`` is allowed.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from collections.abc import Callable
from typing import Any

from services.apiserver.cel.library import opaque, urls
from services.machinery import meta

_DNS1035_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
    "start with an alphabetic character, and end with an alphanumeric character"
)
_UUID = re.compile(r"(?i)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})?")


def _mask_trailing_dash(name: str) -> str:
    """apimachinery's maskTrailingDash: a prefix may end in ``-`` (a random suffix follows)."""
    return name[:-2] + "a" if len(name) > 1 and name.endswith("-") else name


def _dns1035_label(value: str) -> list[str]:
    errs = [] if len(value) <= 63 else ["must be no more than 63 characters"]
    if not re.fullmatch(_DNS1035_FMT, value):
        errs.append(
            f"{_DNS1035_MSG} (e.g. 'my-name',  or 'abc-123', regex used for validation is '{_DNS1035_FMT}')"
        )
    return errs


def _date(value: str) -> list[str]:
    try:
        ok = len(value) == 10 and datetime.date.fromisoformat(value) is not None
    except ValueError:
        ok = False
    return [] if ok else ["invalid date"]


def _datetime(value: str) -> list[str]:
    if _DATE_TIME.fullmatch(value):
        try:
            datetime.datetime.fromisoformat(value[:19])
            return []
        except ValueError:
            pass
    return ["invalid datetime"]


def _byte(value: str) -> list[str]:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return ["invalid base64"]
    return []


def _uri(value: str) -> list[str]:
    error = urls.request_uri_error(value)
    return [] if error is None else [error]


FORMATS: dict[str, Callable[[str], list[str]]] = {
    "dns1123Label": meta.dns1123_label_errors,
    "dns1123Subdomain": meta.dns1123_subdomain_errors,
    "dns1035Label": _dns1035_label,
    "qualifiedName": meta.qualified_name_errors,
    "dns1123LabelPrefix": lambda s: meta.dns1123_label_errors(_mask_trailing_dash(s)),
    "dns1123SubdomainPrefix": lambda s: meta.dns1123_subdomain_errors(_mask_trailing_dash(s)),
    "dns1035LabelPrefix": lambda s: _dns1035_label(_mask_trailing_dash(s)),
    "labelValue": meta.label_value_errors,
    "uri": _uri,
    "uuid": lambda s: [] if _UUID.fullmatch(s) else ["does not match the UUID format"],
    "byte": _byte,
    "date": _date,
    "datetime": _datetime,
}


def _validate(fmt: Any, text: Any) -> Any:
    problems = FORMATS[opaque.unwrap(fmt, opaque.Kind.FORMAT)](opaque.text_argument(text))
    return opaque.optional(problems or None)


def _named(name: Any) -> Any:
    text = opaque.text_argument(name)
    return opaque.optional(opaque.wrap(opaque.Kind.FORMAT, text) if text in FORMATS else None)


def _constant(name: str) -> Callable[[], dict[int, str]]:
    return lambda: opaque.wrap(opaque.Kind.FORMAT, name)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "format.named": _named,
    "validate": _validate,
    **{f"format.{name}": _constant(name) for name in FORMATS},
}
