"""The ``quantity`` library: ``quantity()``, ``isQuantity()`` and the methods of a Quantity.

Parsing is apimachinery's ``resource.ParseQuantity`` grammar, shared with the scheduler
(``services.machinery.quantity``); a Quantity carries its exact value as a fraction (``"3/2"``),
so ``quantity('1.5') == quantity('1500m')`` as upstream's ``Equal`` says, and arithmetic and
comparisons are exact. An exponent beyond ±4096 (``1e5000``) is refused rather than expanded:
exact arithmetic on it would let one string cost seconds of CPU. Not provided: ``mul``, ``div`` and ``divInt`` (newer upstream additions).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from services.apiserver.cel.library import opaque
from services.machinery import quantity as machinery_quantity

# apimachinery's errors (resource.ErrFormatWrong, ErrNumeric, ErrSuffix)
_FORMAT_WRONG = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
_NUMERIC = "unable to parse numeric part of quantity"
_SUFFIX = "unable to parse quantity's suffix"
_SHAPE = re.compile(r"[+-]?(?P<digits>[0-9]*(?:\.[0-9]*)?)[eEinumkKMGTP]*[-+]?[0-9]*")
_EXPONENT = re.compile(r"[eE]([+-]?[0-9]+)$")
_MAX_EXPONENT = 4096


def parse(text: str) -> Fraction:
    """The exact value of a quantity, or upstream's error for why it is not one."""
    exponent = _EXPONENT.search(text)
    if exponent and abs(int(exponent.group(1))) > _MAX_EXPONENT:
        raise opaque.LibraryError(f"quantity exponent out of the supported range (±{_MAX_EXPONENT})")
    if text and text == text.strip():
        try:
            return machinery_quantity.parse(text)
        except machinery_quantity.QuantityError:
            pass
    shape = _SHAPE.fullmatch(text)
    if not text or shape is None:
        raise opaque.LibraryError(_FORMAT_WRONG)
    raise opaque.LibraryError(_SUFFIX if shape["digits"].strip(".") else _NUMERIC)


def _wrap(value: Fraction) -> dict[int, str]:
    return opaque.wrap(opaque.Kind.QUANTITY, str(value))


def value_of(value: Any) -> Fraction:
    """The exact value of a Quantity argument."""
    return Fraction(opaque.unwrap(value, opaque.Kind.QUANTITY))


def _operand(value: Any) -> Fraction:
    """The other side of ``add``/``sub``: a Quantity or an int."""
    if type(value) is int:
        return Fraction(value)
    return value_of(value)


def _is_integer(value: Any) -> bool:
    """Whether ``asInteger`` succeeds: a whole number that fits an int64 (``Quantity.AsInt64``)."""
    exact = value_of(value)
    return exact.denominator == 1 and -(2**63) <= exact < 2**63


def _as_integer(value: Any) -> int:
    if not _is_integer(value):
        raise opaque.LibraryError("cannot convert value to integer")
    return int(value_of(value))


def _approximate(value: Any) -> float:
    exact = value_of(value)
    try:
        return float(exact)
    except OverflowError:
        return math.copysign(math.inf, exact)


def _sign(value: Any) -> int:
    exact = value_of(value)
    return (exact > 0) - (exact < 0)


def compare(left: str, right: str) -> int:
    """Upstream's ``Cmp`` of two Quantities' canonical texts: -1, 0 or 1."""
    a, b = Fraction(left), Fraction(right)
    return (a > b) - (a < b)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "quantity": lambda text: _wrap(parse(opaque.text_argument(text))),
    "isQuantity": lambda text: opaque.parses(parse, opaque.text_argument(text)),
    "sign": _sign,
    "isInteger": _is_integer,
    "asInteger": _as_integer,
    "asApproximateFloat": _approximate,
    "add": lambda value, other: _wrap(value_of(value) + _operand(other)),
    "sub": lambda value, other: _wrap(value_of(value) - _operand(other)),
}
