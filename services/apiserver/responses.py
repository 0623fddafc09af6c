"""What handlers return: a whole JSON body, or a stream (watch, logs)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import orjson

from services.machinery import errors

JSON = "application/json"


@dataclasses.dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(slots=True)
class Stream:
    status: int
    chunks: AsyncIterator[bytes]
    content_type: str = JSON
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def json(obj: Any, status: int = 200, *, content_type: str = JSON) -> Response:
    return Response(status, orjson.dumps(obj), content_type)


def error(exc: errors.ApiError) -> Response:
    response = Response(exc.code, orjson.dumps(exc.status()))
    if exc.retry_after:
        response.headers.append(("retry-after", str(exc.retry_after)))
    return response
