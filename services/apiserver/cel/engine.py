"""The CEL engine behind the rules: loading it, compiling source text once, running a program.

The engine is the ``common-expression-language`` package (Rust bindings of cel-rust). It is
imported at the first rule, not at start: it costs about 24 MB, which a cluster without CEL rules
(most edge devices) should not pay. Programs are memoised by source text, so a rule shared by many
schemas, or recompiled when a CRD changes, is parsed once. Every failure leaves this module as a
``CompileError`` or an ``EvalError`` worded as cel-go words it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from services.apiserver.cel import library

# The library logs a WARNING each time a registered function raises; ours raise on purpose (an
# out-of-range substring is the rule's runtime error, reported to the client), so only its errors.
logging.getLogger("cel").setLevel(logging.ERROR)

_PROGRAMS: dict[str, Any] = {}
_PROGRAMS_LIMIT = 4096


class CompileError(Exception):
    """Why a rule does not compile, in cel-go's words (``ERROR: <input>:1:N: ...``)."""


class EvalError(Exception):
    """A rule that could not be evaluated, with cel-go's words for why."""


def load() -> Any:
    """The engine module (``cel``), imported on first use."""
    import cel

    return cel


def located(source: str, pos: int, message: str) -> str:
    """cel-go's error text pointing at ``pos`` in ``source``."""
    line_start = source.rfind("\n", 0, pos) + 1
    line_end = source.find("\n", pos)
    line_end = len(source) if line_end < 0 else line_end
    row = source.count("\n", 0, pos) + 1
    col = pos - line_start
    return f"ERROR: <input>:{row}:{col + 1}: {message}\n | {source[line_start:line_end]}\n | {'.' * col}^"


def parse(source: str) -> Any:
    """The compiled program of ``source`` (memoised); a syntax error is a CompileError."""
    found = _PROGRAMS.get(source)
    if found is None:
        try:
            found = load().compile(source)
        except (ValueError, RuntimeError) as exc:
            text = str(exc)
            text = text[text.find("ERROR:") :] if "ERROR:" in text else text
            raise CompileError(re.sub(r"(?m)^\| ", " | ", text)) from None
        if len(_PROGRAMS) >= _PROGRAMS_LIMIT:
            _PROGRAMS.clear()
        _PROGRAMS[source] = found
    return found


_LIBRARY_FUNCTION_ERROR = re.compile(r"Function '([\w.]+)' error: (?:Python function call failed: \w+: )?(.*?)(?:\. Check function arguments.*)?$", re.S)  # fmt: skip


def _eval_error(exc: Exception) -> EvalError:
    text = str(exc)
    if isinstance(exc, KeyError):
        return EvalError(f"no such key: {exc.args[0] if exc.args else ''}")
    if isinstance(exc, TypeError) and text.lower().startswith("no such overload"):
        return EvalError("no such overload")
    if isinstance(exc, OverflowError):
        return EvalError("integer overflow")
    if isinstance(exc, ZeroDivisionError):
        return EvalError("modulus by zero" if "modulo" in text else "division by zero")
    match = _LIBRARY_FUNCTION_ERROR.search(text)
    if match:
        return EvalError(match.group(2))
    undefined = re.search(r"Undefined variable or function: '(\w+)'", text)
    if undefined:
        return EvalError(f"no such attribute: {undefined.group(1)}")
    return EvalError(text)


def run(program: Any, variables: dict[str, Any]) -> Any:
    """Evaluate a compiled program with Kubernetes' libraries; every failure is an EvalError."""
    try:
        return program.execute(load().Context(variables, library.FUNCTIONS))
    except (
        KeyError,
        IndexError,
        TypeError,
        ValueError,
        OverflowError,
        ZeroDivisionError,
        RuntimeError,
    ) as exc:
        raise _eval_error(exc) from None
