"""Kubernetes' cheap extension functions on lists, strings and regular expressions.

Lists: ``isSorted``, ``sum``, ``min``, ``max``, ``indexOf``, ``lastIndexOf``; strings (cel-go's
strings extension, version 2): ``charAt``, ``indexOf``, ``lastIndexOf``, ``lowerAscii``,
``upperAscii``, ``trim``, ``split``, ``join``, ``replace``, ``substring``, ``reverse``; regex:
``find``, ``findAll``. ``indexOf`` and ``lastIndexOf`` serve both lists and strings, as upstream's
overloads do.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from services.apiserver.cel.library import opaque


def _index(s: str, i: int) -> int:
    if i < 0 or i > len(s):
        raise opaque.LibraryError(f"index out of range: {i}")
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
        raise opaque.LibraryError(f"invalid substring range. start: {start}, end: {stop}")
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
            raise opaque.LibraryError(f"{name}(list) called on an empty list")
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
