"""Kubernetes' CEL types (Quantity, URL, IP, CIDR, Semver, Format) as values the engine can carry.

cel-go lets a library declare opaque types; the Python bindings of cel-rust do not: a function may
return only what converts to a CEL value (null, bool, int, double, string, bytes, list, map,
timestamp, duration, optional). So a value of a library type travels as a one-entry map whose key
is the type's integer tag and whose value is its canonical text, e.g. ``{1: "3/2"}`` for
``quantity('1500m')``. The integer key is why no custom resource field can pass for one: a JSON
object's keys are strings.

Canonical text makes CEL's own ``==`` agree with upstream's ``Equal`` methods
(``quantity('1') == quantity('1000m')``, ``ip('::0') == ip('::')``). Methods are functions
whose first argument is the receiver (CEL reads ``x.f(a)`` as ``f(x, a)``); a name shared by two
types (``compareTo`` of Quantity and Semver, ``ip`` of a string and of a CIDR) dispatches on the tag.
What cel-go's type checker refuses when the CRD is written (``quantity('1').getHost()``) is a
``no such overload`` error when the rule runs, and ``type(quantity('1'))`` is ``map``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any


class LibraryError(ValueError):
    """A runtime error of a library function; its text is what the client reads."""


class Kind(enum.IntEnum):
    """The tag of each library type (the key of its one-entry map)."""

    QUANTITY = 1
    URL = 2
    IP = 3
    CIDR = 4
    SEMVER = 5
    FORMAT = 6


NO_SUCH_OVERLOAD = "no such overload"


def wrap(kind: Kind, text: str) -> dict[int, str]:
    """A library value: its tag and its canonical text."""
    return {int(kind): text}


def kind_of(value: Any) -> Kind | None:
    """The library type of a value, None for plain CEL values."""
    if isinstance(value, dict) and len(value) == 1:
        key = next(iter(value))
        if type(key) is int and key in Kind._value2member_map_:
            return Kind(key)
    return None


def unwrap(value: Any, kind: Kind) -> str:
    """The canonical text of a value of type ``kind``; any other value is ``no such overload``."""
    if kind_of(value) is not kind:
        raise LibraryError(NO_SUCH_OVERLOAD)
    return value[int(kind)]


def text_argument(value: Any) -> str:
    """A string argument (``quantity(<string>)``); anything else is ``no such overload``."""
    if not isinstance(value, str):
        raise LibraryError(NO_SUCH_OVERLOAD)
    return value


def parses(make: Callable[..., Any], *args: Any) -> bool:
    """``isQuantity``/``isIP``/...: whether ``make(*args)`` succeeds; a wrong argument type stays
    ``no such overload``, as in cel-go."""
    try:
        make(*args)
    except LibraryError as exc:
        if str(exc) == NO_SUCH_OVERLOAD:
            raise
        return False
    return True


def go_quote(text: str) -> str:
    """Go's ``%q`` of a string, for error messages quoted from upstream."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x80 else f"\\u{ord(ch):04x}")
    return "".join(out + ['"'])


def optional(value: Any) -> Any:
    """A CEL optional: ``optional.of(value)``, or ``optional.none()`` for None."""
    import cel  # the engine, already loaded: only a running rule calls a library function

    return cel.OptionalValue.none() if value is None else cel.OptionalValue.of(value)
