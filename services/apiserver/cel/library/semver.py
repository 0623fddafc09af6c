"""The ``semver`` library: ``semver()``, ``isSemver()``, ``major``/``minor``/``patch`` and comparisons.

Parsing and ordering are blang/semver's (what upstream uses): ``MAJOR.MINOR.PATCH``, optional
``-prerelease`` and ``+build``, no leading zeros, a version with a prerelease below the same one
without, prerelease identifiers compared numerically when both are numbers. ``semver(s, true)``
normalizes first (a leading ``v`` dropped, missing minor/patch filled with 0, leading zeros
removed). A Semver carries ``MAJOR.MINOR.PATCH[-prerelease]``: build metadata plays no part in
upstream's ``Equal`` or ``compareTo``, so it is dropped.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any

from services.apiserver.cel.library import opaque

_ALNUM_HYPHEN = frozenset(string.ascii_letters + string.digits + "-")


def _number(text: str, part: str) -> int:
    if not text or not (text.isascii() and text.isdigit()):
        raise opaque.LibraryError(f"Invalid character(s) found in {part} number {opaque.go_quote(text)}")
    if len(text) > 1 and text[0] == "0":
        raise opaque.LibraryError(f"{part.capitalize()} number must not contain leading zeroes {opaque.go_quote(text)}")  # fmt: skip
    return int(text)


def _identifiers(text: str, *, build: bool) -> list[str]:
    parts = text.split(".")
    for part in parts:
        if not part:
            raise opaque.LibraryError("Buildversion is empty" if build else "Prerelease is empty")
        if any(ch not in _ALNUM_HYPHEN for ch in part):
            what = "build meta data" if build else "prerelease"
            raise opaque.LibraryError(f"Invalid character(s) found in {what} {opaque.go_quote(part)}")
        if not build and part.isdigit() and len(part) > 1 and part[0] == "0":
            raise opaque.LibraryError(f"Numeric PreRelease version must not contain leading zeroes {opaque.go_quote(part)}")  # fmt: skip
    return parts


def parse(text: str) -> str:
    """The canonical text of a version (blang/semver's ``Parse``), or its error."""
    if not text:
        raise opaque.LibraryError("Version string empty")
    parts = text.split(".", 2)
    if len(parts) != 3:
        raise opaque.LibraryError("No Major.Minor.Patch elements found")
    major, minor = _number(parts[0], "major"), _number(parts[1], "minor")
    rest, plus, build = parts[2].partition("+")
    patch_text, dash, pre = rest.partition("-")
    patch = _number(patch_text, "patch")
    if dash:
        _identifiers(pre, build=False)
    if plus:
        _identifiers(build, build=True)
    return f"{major}.{minor}.{patch}" + (f"-{pre}" if dash else "")


def _normalize(text: str) -> str:
    """Upstream's ``normalizeAndParse`` before parsing: no ``v``, no leading zeros, three numbers."""
    parts = text.removeprefix("v").split(".", 2)
    for i, part in enumerate(parts):
        if len(part) > 1:
            part = part.lstrip("0")
            parts[i] = part if part[:1].isdigit() else "0" + part
    if len(parts) < 3:
        if re.search(r"[+-]", parts[-1]):
            raise opaque.LibraryError("short version cannot contain PreRelease/Build meta data")
        parts += ["0"] * (3 - len(parts))
    return ".".join(parts)


def _make(text: Any, normalize: Any = False) -> str:
    raw = opaque.text_argument(text)
    if type(normalize) is not bool:
        raise opaque.LibraryError(opaque.NO_SUCH_OVERLOAD)
    return parse(_normalize(raw) if normalize else raw)


def _is_semver(text: Any, normalize: Any = False) -> bool:
    return opaque.parses(_make, text, normalize)


def _key(text: str) -> tuple[tuple[int, int, int], list[tuple[int, int, str]] | None]:
    numbers, _, pre = text.partition("-")
    major, minor, patch = (int(n) for n in numbers.split("."))
    ids = [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")] if pre else None
    return (major, minor, patch), ids


def compare(left: str, right: str) -> int:
    """blang/semver's ``Compare`` of two canonical texts: -1, 0 or 1."""
    (a_nums, a_pre), (b_nums, b_pre) = _key(left), _key(right)
    if a_nums != b_nums:
        return -1 if a_nums < b_nums else 1
    if a_pre == b_pre:
        return 0
    if a_pre is None or b_pre is None:
        return 1 if a_pre is None else -1  # a version without a prerelease is the greater
    return -1 if a_pre < b_pre else 1


def _part(index: int) -> Callable[[Any], int]:
    return lambda value: _key(opaque.unwrap(value, opaque.Kind.SEMVER))[0][index]


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "semver": lambda text, normalize=False: opaque.wrap(opaque.Kind.SEMVER, _make(text, normalize)),
    "isSemver": _is_semver,
    "major": _part(0),
    "minor": _part(1),
    "patch": _part(2),
}
