"""Kubernetes' CEL libraries (k8s.io/apiserver/pkg/cel/library), as functions the engine calls.

Each module holds one library and exports ``FUNCTIONS`` (name -> Python callable); this package
joins them. A method is a function whose first argument is the receiver, a namespaced function
(``format.dns1123Label``, ``ip.isCanonical``) is registered under its dotted name, and a name
two libraries share is one function that dispatches on its receiver's type (see ``opaque``):
``isLessThan``/``isGreaterThan``/``compareTo`` here, ``ip`` and ``string`` in ``net``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.apiserver.cel.library import formats, lists, net, opaque, quantity, semver, strfmt, urls

_COMPARE: dict[opaque.Kind, Callable[[str, str], int]] = {
    opaque.Kind.QUANTITY: quantity.compare,
    opaque.Kind.SEMVER: semver.compare,
}


def _compare_to(value: Any, other: Any) -> int:
    """``<Quantity>.compareTo(<Quantity>)`` and ``<Semver>.compareTo(<Semver>)``: -1, 0 or 1."""
    kind = opaque.kind_of(value)
    if kind not in _COMPARE:
        raise opaque.LibraryError(opaque.NO_SUCH_OVERLOAD)
    return _COMPARE[kind](opaque.unwrap(value, kind), opaque.unwrap(other, kind))


FUNCTIONS: dict[str, Callable[..., Any]] = {
    **lists.FUNCTIONS,
    **quantity.FUNCTIONS,
    **urls.FUNCTIONS,
    **net.FUNCTIONS,
    **semver.FUNCTIONS,
    **formats.FUNCTIONS,
    **strfmt.FUNCTIONS,
    "compareTo": _compare_to,
    "isLessThan": lambda value, other: _compare_to(value, other) < 0,
    "isGreaterThan": lambda value, other: _compare_to(value, other) > 0,
}

# Kubernetes functions not provided: a CRD naming them is accepted, as upstream accepts it, and a
# rule calling one fails when it runs (``authorizer`` belongs to admission policies, not CRDs).
NOT_PROVIDED = frozenset({"mul", "div", "divInt", "authorizer"})
