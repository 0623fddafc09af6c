"""cel-go's string formatting: ``'<format>'.format([args])`` and ``strings.quote(<string>)``.

``format`` takes printf-style clauses, one argument each, as cel-go's strings extension does:
``%s`` (any value, in CEL's own text: lists as ``[1, "a"]``, maps as ``{"key": value}`` with sorted
keys, bytes as text, durations in seconds, timestamps in RFC 3339; inside a list or map strings are
quoted and times written as ``timestamp("...")``/``duration("...")``), ``%d`` (integers), ``%f`` and
``%e`` (numbers, precision 6 unless ``%.Nf``/``%.Ne`` says otherwise), ``%b``, ``%o`` (integers),
``%x``/``%X`` (integers, and strings or bytes as hex) and ``%%``. ``strings.quote`` makes a
string printable: quoted, with ``\\a \\b \\f \\n \\r \\t \\v \\\\ \\"`` escaped.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable
from typing import Any

from services.apiserver.cel.library import opaque

_CLAUSE = re.compile(r"%(?:\.(\d+))?(.)", re.S)
_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
            "\\": "\\\\", '"': '\\"'}  # fmt: skip


def quote(text: Any) -> str:
    return '"' + "".join(_ESCAPES.get(c, c) for c in opaque.text_argument(text)) + '"'


def format_(template: Any, args: Any) -> str:
    template = opaque.text_argument(template)
    if not isinstance(args, list):
        raise opaque.LibraryError(opaque.NO_SUCH_OVERLOAD)
    out: list[str] = []
    used = 0
    end = 0
    for clause in _CLAUSE.finditer(template):
        out.append(template[end : clause.start()])
        end = clause.end()
        precision, verb = clause.group(1), clause.group(2)
        if verb == "%" and precision is None:
            out.append("%")
            continue
        if verb not in _VERBS:
            raise opaque.LibraryError(f'could not parse formatting clause: unrecognized formatting clause "{verb}"')
        if used >= len(args):
            raise opaque.LibraryError(f"index {used} out of range")
        out.append(_VERBS[verb](args[used], None if precision is None else int(precision)))
        used += 1
    out.append(template[end:])
    return "".join(out)


def _text(value: Any, precision: int | None = None) -> str:
    """``%s``: a value as CEL prints it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
        return f"{seconds:g}s"
    if isinstance(value, datetime.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        return "[" + ", ".join(_nested(v) for v in value) + "]"
    if isinstance(value, dict):
        if opaque.kind_of(value) is not None:
            raise opaque.LibraryError(opaque.NO_SUCH_OVERLOAD)
        items = sorted((_nested(k), _nested(v)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    raise opaque.LibraryError(opaque.NO_SUCH_OVERLOAD)


def _nested(value: Any) -> str:
    """An element of a list or map under ``%s``: strings quoted, times as their literals."""
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, datetime.datetime | datetime.timedelta):
        return f'{"timestamp" if isinstance(value, datetime.datetime) else "duration"}("{_text(value)}")'
    return _text(value)


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value).removesuffix(".0") if value.is_integer() and abs(value) < 1e21 else repr(value)


def _number(value: Any, clause: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = type(value).__name__.replace("str", "string").replace("float", "double")
        raise opaque.LibraryError(f"{clause} clause can only be used on numbers, was given {kind}")
    return float(value)


def _fixed(value: Any, precision: int | None) -> str:
    number = _number(value, "fixed-point")
    if math.isnan(number) or math.isinf(number):
        return _float_text(number)
    return f"{number:.{6 if precision is None else precision}f}"


def _scientific(value: Any, precision: int | None) -> str:
    number = _number(value, "scientific")
    if math.isnan(number) or math.isinf(number):
        return _float_text(number)
    return f"{number:.{6 if precision is None else precision}e}"


def _integer(name: str, render: Callable[[int], str]) -> Callable[[Any, int | None], str]:
    def clause(value: Any, precision: int | None) -> str:
        if isinstance(value, bool) or not isinstance(value, int):
            kind = type(value).__name__.replace("str", "string").replace("float", "double")
            raise opaque.LibraryError(f"{name} clause can only be used on integers, was given {kind}")
        return render(value)

    return clause


def _hex(upper: bool) -> Callable[[Any, int | None], str]:
    def clause(value: Any, precision: int | None) -> str:
        if isinstance(value, str):
            value = value.encode()
        if isinstance(value, bytes):
            text = value.hex()
        elif isinstance(value, int) and not isinstance(value, bool):
            text = format(value, "x")
        else:
            kind = type(value).__name__.replace("float", "double")
            raise opaque.LibraryError(f"only integers, byte buffers, and strings can be formatted as hex, was given {kind}")
        return text.upper() if upper else text

    return clause


_VERBS: dict[str, Callable[[Any, int | None], str]] = {
    "s": _text,
    "d": _integer("decimal", str),
    "f": _fixed,
    "e": _scientific,
    "b": _integer("binary", lambda n: format(n, "b")),
    "o": _integer("octal", lambda n: format(n, "o")),
    "x": _hex(upper=False),
    "X": _hex(upper=True),
}

FUNCTIONS: dict[str, Callable[..., Any]] = {"format": format_, "strings.quote": quote}
