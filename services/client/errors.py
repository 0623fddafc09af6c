"""The client's errors: the API said no (``ApiError``), could not be reached, or was misconfigured.

``ApiError`` is apimachinery's one family (``services.machinery.errors``), rebuilt here from the
``kind: Status`` body the server sent, so callers branch on ``code`` and ``reason`` exactly as the
server decided them. Failures below HTTP (refused, reset, TLS, timeouts) become ``TransportError``;
a kubeconfig or in-cluster setup that cannot work becomes ``ConfigError``. Informers and leader
election retry the first two; nothing retries the third.
"""

from __future__ import annotations

from typing import Any

import orjson

from services.machinery.errors import ApiError, Cause

__all__ = [
    "ApiError",
    "ClientError",
    "ConfigError",
    "TransportError",
    "from_body",
    "from_status",
    "is_already_exists",
    "is_conflict",
    "is_gone",
    "is_not_found",
]

# Reasons by code, for error bodies that are not a Status (a proxy's HTML page, say).
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ClientError(Exception):
    """Base of the errors the client raises itself (not the API's answers)."""


class TransportError(ClientError):
    """The request did not get an HTTP answer: connection refused or reset, TLS failure, timeout."""


class ConfigError(ClientError):
    """A kubeconfig or in-cluster configuration that cannot be used."""


def from_status(code: int, body: Any, *, fallback: str = "") -> ApiError:
    """An ``ApiError`` from an HTTP status and its decoded body (a Status, or anything else)."""
    if isinstance(body, dict) and body.get("kind") == "Status":
        details = body.get("details") or {}
        causes = [
            Cause(c.get("reason", ""), c.get("message", ""), c.get("field", ""))
            for c in details.get("causes") or ()
            if isinstance(c, dict)
        ]
        return ApiError(
            int(body.get("code") or code),
            body.get("reason") or _REASONS.get(code, "Unknown"),
            body.get("message") or fallback or f"the server answered {code}",
            name=details.get("name", ""),
            group=details.get("group", ""),
            kind=details.get("kind", ""),
            causes=causes,
            retry_after=int(details.get("retryAfterSeconds") or 0),
        )
    message = fallback.strip()[:500] or f"the server answered {code}"
    return ApiError(code, _REASONS.get(code, "Unknown"), message)


def from_body(code: int, content: bytes) -> ApiError:
    """The ``ApiError`` an HTTP error response stands for, from its raw body."""
    try:
        body = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        return from_status(code, None, fallback=content.decode("utf-8", "replace"))
    return from_status(code, body)


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.code == 404


def is_already_exists(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.code == 409 and exc.reason == "AlreadyExists"


def is_conflict(exc: BaseException) -> bool:
    """A stale resourceVersion (or an apply conflict): re-read and try again."""
    return isinstance(exc, ApiError) and exc.code == 409 and exc.reason == "Conflict"


def is_gone(exc: BaseException) -> bool:
    """410: the resourceVersion (or continue token) was compacted away; relist."""
    return isinstance(exc, ApiError) and exc.code == 410
