"""Resource quantities (``100m``, ``512Mi``, ``1e3``, ``1.5Gi``) as the integers schedulers and quotas sum.

apimachinery's ``resource.Quantity`` grammar: a signed decimal number, then either a binary suffix
(``Ki`` .. ``Ei``), a decimal suffix (``n``, ``u``, ``m``, none, ``k``, ``M`` .. ``E``) or an
exponent (``e3``, ``E-2``). The scheduler compares CPU in millicores and everything else in whole
units, rounding up as ``Quantity.MilliValue`` and ``Quantity.Value`` do, so a request of
``0.0001`` CPU still counts as 1m. Exact arithmetic (``fractions``), cached per string: pods of
one workload repeat the same few strings thousands of times.
"""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<exp>[eE][+-]?[0-9]+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)"
)


class QuantityError(ValueError):
    """Not a quantity Kubernetes would accept."""


@functools.lru_cache(maxsize=4096)
def parse(text: str | int | float) -> Fraction:
    """The exact value of a quantity (``"100m"`` -> 1/10)."""
    if isinstance(text, bool):
        raise QuantityError(f"quantities must match the regular expression, got {text!r}")
    if isinstance(text, int):
        return Fraction(text)
    if isinstance(text, float):
        return Fraction(str(text))
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        raise QuantityError(f"quantities must match the regular expression, got {text!r}")
    number = Fraction(match["number"])
    if match["exp"]:
        return number * Fraction(10) ** int(match["exp"][1:])
    suffix = match["suffix"] or ""
    return number * (_BINARY[suffix] if suffix in _BINARY else _DECIMAL[suffix])


def milli_value(text: str | int | float) -> int:
    """Thousandths, rounded up (CPU in millicores)."""
    return math.ceil(parse(text) * 1000)


def value(text: str | int | float) -> int:
    """Whole units, rounded up (bytes, pod counts, extended resources)."""
    return math.ceil(parse(text))


def amount(resource: str, text: str | int | float) -> int:
    """A resource's quantity in the unit the scheduler keeps it in: millicores for cpu."""
    return milli_value(text) if resource == "cpu" else value(text)


def safe_amount(resource: str, text: object) -> int:
    """``amount``, with anything unparsable counted as 0 (the API server validated it already)."""
    try:
        return amount(resource, text)  # type: ignore[arg-type]
    except (QuantityError, TypeError, ValueError, ZeroDivisionError):
        return 0


def is_binary(text: str | int | float) -> bool:
    """Whether a quantity was written with a binary suffix (``Ki`` .. ``Ei``); sums keep that form."""
    match = _QUANTITY.fullmatch(str(text).strip())
    return bool(match and match["suffix"] in _BINARY)


def format(value: Fraction, *, binary: bool = False) -> str:  # noqa: A001 - the module's verb, as parse
    """The canonical text of ``value`` as apimachinery writes it: a binary suffix when ``binary`` and
    exact, else the largest decimal suffix that keeps nano precision (rounded up, as upstream)."""
    if value == 0:
        return "0"
    if binary and value.denominator == 1 and abs(value) >= 1024:
        for suffix, size in reversed(_BINARY.items()):
            if value % size == 0:
                return f"{value // size}{suffix}"
    nanos = math.ceil(value * 10**9)
    for suffix, scale in reversed(_DECIMAL.items()):
        step = scale * 10**9
        if step.denominator == 1 and nanos % int(step) == 0:
            return f"{nanos // int(step)}{suffix}"
    raise AssertionError("unreachable: nano precision always divides")
