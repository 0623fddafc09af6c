"""K3s's own endpoints on the API port: ``/cacerts`` (the CA bundle agents verify the token
against) and ``/ping``, both anonymous as in K3s, and the ``/v1-k3s/*`` routes joining agents use
(``nodeauth``), which authenticate with the join token instead of an API credential."""

from __future__ import annotations

import weakref
from pathlib import Path

from services.apiserver import context, nodeauth, responses

ANONYMOUS_PATHS = frozenset({"/cacerts", "/ping"})
V1_PREFIX = nodeauth.PREFIX

# One handler per API server (it caches the passwd file and per-node locks).
_handlers: weakref.WeakKeyDictionary[context.Api, nodeauth.NodeAuth] = weakref.WeakKeyDictionary()


def respond(path: str, *, data_dir: Path) -> responses.Response | None:
    if path == "/ping":
        return responses.Response(200, b"pong", "text/plain")
    if path == "/cacerts":
        ca = (data_dir / "server" / "tls" / "server-ca.crt").read_bytes()
        return responses.Response(200, ca, "text/plain")
    return None


async def v1(api: context.Api, path: str, *, method: str, headers: dict[str, str]) -> responses.Response:
    """A ``/v1-k3s/...`` request; errors are raised as ``ApiError`` (a Status body)."""
    handler = _handlers.get(api)
    if handler is None:
        handler = _handlers[api] = nodeauth.NodeAuth(api, data_dir=api.settings.data_dir)
    return await handler.respond(path, method=method, headers=headers)
