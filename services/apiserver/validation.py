"""Schema checks of request bodies: unknown fields (fieldValidation) and custom resources' schemas."""

from __future__ import annotations

from typing import Any

from services.apiserver import context
from services.machinery import errors


def check_fields(ctx: context.Request, obj: dict[str, Any]) -> None:
    """Apply ``fieldValidation`` (Strict: 400, Warn: warnings, Ignore) and drop unknown fields."""
    return None


def validate_schema(ctx: context.Request, obj: dict[str, Any]) -> list[errors.Cause]:
    """Causes for values the kind's schema refuses (custom resources: their openAPIV3Schema)."""
    return []
