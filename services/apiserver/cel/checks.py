"""A static check standing in for cel-go's type checker, run when a CRD is written.

The engine parses and reports which names an expression references, but declares nothing: it
would accept ``self.nope`` or ``frobnicate(self)`` and fail only when a rule runs. Upstream
refuses such a CRD, so this module does too, with cel-go's text: names and functions that
nothing declares (``undeclared reference to 'x' (in container '')``), and selections of
``self``/``oldSelf`` the schema does not have (``undefined field 'x'``). Types are otherwise
checked only when the rule runs. The scans work on the source with string literals blanked, so a
literal ``'self.x'`` is not a selection.
"""

from __future__ import annotations

import re
from typing import Any

from services.apiserver.cel import engine, library, values

# What the expression may name besides the libraries: the standard library, types and macros.
STANDARD = frozenset(
    "size int uint double string bool bytes dyn type duration timestamp matches contains startsWith endsWith "
    "getDate getDayOfMonth getDayOfWeek getDayOfYear getFullYear getHours getMilliseconds getMinutes "
    "getMonth getSeconds hasValue value orValue or optional list map null_type has all exists exists_one "
    "filter".split()
)
_MACRO_VAR = re.compile(
    r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,(?:\s*([A-Za-z_]\w*)\s*,)?"
)
_STRING_LITERAL = re.compile(
    r"""[rRbB]*('''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")""", re.S
)
_QUALIFIED_CALL = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\s*\.\s*([A-Za-z_]\w*)\s*\(")
_SELECT_CHAIN = re.compile(r"(?<![\w.])(self|oldSelf)((?:\s*\.\s*[A-Za-z_]\w*(?!\w)(?!\s*\())*)")
_SEGMENT = re.compile(r"\.\s*([A-Za-z_]\w*)")


def blank_strings(source: str) -> str:
    """The source with string literals' contents blanked (positions kept), for the scans below."""
    return _STRING_LITERAL.sub(lambda m: m.group(0)[0] + " " * (len(m.group(0)) - 2) + m.group(0)[-1], source)


def _undeclared(source: str, pos: int, name: str) -> engine.CompileError:
    return engine.CompileError(
        engine.located(source, pos, f"undeclared reference to '{name}' (in container '')")
    )


def _namespaced(scanned: str) -> tuple[set[str], set[str]]:
    """Namespaces used only as qualified library calls (``format.dns1123Label()``), and the
    functions' short names, which the engine reports on their own."""
    calls = [(m.group(1), m.group(2)) for m in _QUALIFIED_CALL.finditer(scanned)]
    known = {(ns, fn) for ns, fn in calls if f"{ns}.{fn}" in library.FUNCTIONS}
    unknown = {ns for ns, fn in calls if (ns, fn) not in known}
    return {ns for ns, _ in known} - unknown, {fn for _, fn in known}


def check_names(program: Any, source: str, scanned: str, declared: frozenset[str]) -> None:
    """Every variable and function the program names must be declared somewhere."""
    bound = {name for match in _MACRO_VAR.finditer(scanned) for name in match.groups() if name}
    namespaces, members = _namespaced(scanned)
    for name in program.variables():
        if name not in declared and name not in bound and name not in STANDARD and name not in namespaces:
            pos = re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", scanned)
            raise _undeclared(source, pos.start() if pos else 0, name)
    for name in program.functions():
        known = (
            name in STANDARD or name in library.FUNCTIONS or name in library.NOT_PROVIDED or name in members
        )
        if re.fullmatch(r"[A-Za-z_]\w*", name) and not known:
            pos = re.search(rf"\b{re.escape(name)}\s*\(", scanned)
            raise _undeclared(source, pos.start() if pos else 0, name)


def check_fields(source: str, scanned: str, schema: dict, *, root: bool, old_optional: bool) -> None:
    """cel-go's ``undefined field`` for selections of ``self``/``oldSelf`` the schema does not declare."""
    for chain in _SELECT_CHAIN.finditer(scanned):
        if chain.group(1) == "oldSelf" and old_optional:
            continue
        node: Any = schema
        at_root = root
        for seg in _SEGMENT.finditer(chain.group(2)):
            fields = values.declared_fields(node, at_root)
            if fields is None:
                node = node.get("additionalProperties") if values.is_map(node) else None
                if not isinstance(node, dict):
                    break
            elif seg.group(1) in fields:
                node = fields[seg.group(1)]
            else:
                if node.get("x-kubernetes-preserve-unknown-fields"):
                    break
                pos = chain.start(2) + seg.start()
                raise engine.CompileError(engine.located(source, pos, f"undefined field '{seg.group(1)}'"))
            at_root = isinstance(node, dict) and bool(node.get("x-kubernetes-embedded-resource"))
