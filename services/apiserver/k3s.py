"""K3s's own endpoints on the API port: ``/cacerts`` (the CA bundle agents verify the token
against) and ``/ping``; both anonymous, as in K3s."""

from __future__ import annotations

from pathlib import Path

from services.apiserver import responses

ANONYMOUS_PATHS = frozenset({"/cacerts", "/ping"})


def respond(path: str, *, data_dir: Path) -> responses.Response | None:
    if path == "/ping":
        return responses.Response(200, b"pong", "text/plain")
    if path == "/cacerts":
        ca = (data_dir / "server" / "tls" / "server-ca.crt").read_bytes()
        return responses.Response(200, ca, "text/plain")
    return None
