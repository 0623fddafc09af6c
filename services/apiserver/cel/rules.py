"""One ``x-kubernetes-validations`` entry, compiled: its program, its message program, and why not.

A rule that does not compile is not an exception here: it is a ``Rule`` carrying the error text,
so the CRD write can report every bad rule at once (``compilation failed: ERROR: ...``), and a
CRD stored before a check existed still serves its objects, each failing with the rule's error.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from services.apiserver.cel import checks, engine

REASONS = ("FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired")
_VARIABLES = frozenset({"self", "oldSelf"})


@dataclasses.dataclass(frozen=True)
class Rule:
    """One ``x-kubernetes-validations`` entry, compiled."""

    rule: str
    message: str = ""
    message_expression: str = ""
    reason: str = ""
    field_path: str = ""
    optional_old_self: bool = False
    program: Any = None
    message_program: Any = None
    uses_old_self: bool = False
    error: str = ""  # why the rule does not compile ("compilation failed: ...")
    message_error: str = ""  # why the messageExpression does not compile

    @property
    def error_string(self) -> str:
        """The rule as errors name it: its message if it has one, else its text."""
        return self.message.strip() or self.rule.strip()


def compile_rule(raw: dict[str, Any], schema: dict[str, Any], *, root: bool = False) -> Rule:
    """Compile one rule written at ``schema`` (``root``: the resource's or an embedded resource's root)."""
    source = str(raw.get("rule") or "")
    rule = Rule(
        rule=source,
        message=str(raw.get("message") or ""),
        message_expression=str(raw.get("messageExpression") or ""),
        reason=str(raw.get("reason") or ""),
        field_path=str(raw.get("fieldPath") or ""),
        optional_old_self=bool(raw.get("optionalOldSelf")),
    )
    if not source.strip():
        return rule
    try:
        program = engine.parse(source)
        scanned = checks.blank_strings(source)
        checks.check_names(program, source, scanned, _VARIABLES)
        checks.check_fields(source, scanned, schema, root=root, old_optional=rule.optional_old_self)
    except engine.CompileError as exc:
        return dataclasses.replace(rule, error=f"compilation failed: {exc}")
    uses_old = "oldSelf" in program.variables()
    rule = dataclasses.replace(rule, program=program, uses_old_self=uses_old)
    if rule.message_expression.strip():
        text = rule.message_expression
        try:
            msg = engine.parse(text)
            checks.check_names(msg, text, checks.blank_strings(text), _VARIABLES)
        except engine.CompileError as exc:
            return dataclasses.replace(rule, message_error=f"messageExpression compilation failed: {exc}")
        rule = dataclasses.replace(rule, message_program=msg)
    return rule
