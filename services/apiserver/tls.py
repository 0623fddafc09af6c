"""HTTPS for the API server: verify client certificates and hand their subject to the ASGI app.

The TLS context asks for a client certificate but does not require one (``CERT_OPTIONAL``, Go's
``VerifyClientCertIfGiven``): anonymous and token clients connect without one, while a certificate
that does not chain to ``client-ca`` fails the handshake, so one that reaches the app is verified.

uvicorn does not pass the peer certificate to the app. Its protocol classes receive the TLS
transport in ``connection_made``, after the handshake; ``with_client_certs`` subclasses any of them
(httptools, h11, and the WebSocket implementations an upgrade switches to) to read the peer
certificate there, once per connection, and wrap the connection's app so every scope carries ASGI's
TLS extension::

    scope["extensions"]["tls"] = {
        "server_cert": None, "client_cert_chain": [<PEM>], "client_cert_name": "CN=...,O=...",
        "client_cert_error": None, "tls_version": 0x0304, "cipher_suite": None,
        "client_cert_subject": {"cn": "system:admin", "o": ["system:masters"]},  # ours, pre-parsed
    }

``credentials_from_scope`` turns a scope into ``Credentials``: that subject, and a bearer token from
``Authorization: Bearer`` (or, for WebSockets from browsers, the ``base64url.bearer.authorization.k8s.io.``
subprotocol, as kube-apiserver accepts).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ssl
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn import config as uvicorn_config

from services.apiserver import spdyupgrade, websocket
from services.apiserver.auth import types

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

WS_BEARER_PREFIX = "base64url.bearer.authorization.k8s.io."
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def server_context(*, cert_file: Path, key_file: Path, client_ca_file: Path) -> ssl.SSLContext:
    """TLS 1.2+ with the serving certificate; client certificates optional but verified."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(cafile=client_ca_file)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.set_alpn_protocols(["http/1.1"])  # Go clients offer h2 first; we speak HTTP/1.1
    return context


def tls_extension(transport: Any) -> dict[str, Any] | None:
    """ASGI's TLS extension for a connection, or None when it is not TLS."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    subject = client_subject(ssl_object.getpeercert()) if der else None
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": _rfc4514(subject) if subject else None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
        "client_cert_subject": subject,
    }


def client_subject(peer: dict[str, Any] | None) -> dict[str, Any] | None:
    """``{"cn": ..., "o": [...]}`` from ``SSLObject.getpeercert()`` (a verified peer), else None."""
    if not peer:
        return None
    cn, orgs = None, []
    for rdn in peer.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and cn is None:
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    return {"cn": cn, "o": orgs}


def credentials_from_scope(scope: Scope) -> types.Credentials:
    subject = ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_subject") or {}
    return types.Credentials(
        cert_common_name=subject.get("cn"),
        cert_organizations=tuple(subject.get("o") or ()),
        bearer_token=bearer_token(scope),
    )


def bearer_token(scope: Scope) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or of the WebSocket bearer subprotocol."""
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            parts = value.decode("latin-1").strip().split(" ")
            if len(parts) >= 2 and parts[0].lower() == "bearer" and parts[1]:
                return parts[1]
            return None
    if scope.get("type") == "websocket":
        for protocol in scope.get("subprotocols") or ():
            if protocol.startswith(WS_BEARER_PREFIX):
                encoded = protocol.removeprefix(WS_BEARER_PREFIX)
                try:
                    token = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
                except (binascii.Error, UnicodeDecodeError):
                    return None
                return token or None
    return None


# -- uvicorn --------------------------------------------------------------------------------------


def with_client_certs(protocol_class: type, *, coalesce: bool = False) -> type:
    """A subclass of a uvicorn protocol class whose scopes carry the TLS extension; with
    ``coalesce``, what it writes in one turn of the event loop leaves as one TLS record."""

    class ClientCertProtocol(protocol_class):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            extension = tls_extension(transport)
            if extension is not None:
                self.app = _with_tls(self.app, extension)
                if coalesce:
                    self.transport = CoalescingTransport(transport)

    ClientCertProtocol.__name__ = ClientCertProtocol.__qualname__ = f"ClientCert{protocol_class.__name__}"
    return ClientCertProtocol


def http_protocol(name: str = "auto") -> type:
    """uvicorn's HTTP implementation ``name`` (auto, httptools, h11), with client certificates and
    kubectl's ``Upgrade: SPDY/3.1`` (see ``spdyupgrade``)."""
    base = uvicorn_config.import_from_string(uvicorn_config.HTTP_PROTOCOLS[name])
    return with_client_certs(spdyupgrade.with_spdy_upgrades(base), coalesce=True)


def websocket_protocol(name: str = "auto") -> type | None:
    """uvicorn's WebSocket implementation ``name`` with client certificates; None if none installed."""
    if name == "none":
        return None
    base = uvicorn_config.import_from_string(uvicorn_config.WS_PROTOCOLS[name])
    # kubectl's port-forward offers the subprotocol SPDY/3.1+portforward.k8s.io, a name the
    # websockets library would refuse (the "/") before our app could choose it.
    return None if base is None else with_client_certs(websocket.with_kubernetes_subprotocols(base))


def uvicorn_config_for(
    app: ASGIApp,
    *,
    context: ssl.SSLContext,
    host: str = "0.0.0.0",
    port: int = 6443,
    http: str = "auto",
    ws: str = "auto",
    **kwargs: Any,
) -> uvicorn.Config:
    """A uvicorn ``Config`` serving ``app`` over ``context`` with the TLS extension in every scope."""
    ws_class = websocket_protocol(ws)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=http_protocol(http),
        ws=ws_class if ws_class is not None else "none",
        ssl_context_factory=lambda _config, _default: context,
        **kwargs,
    )


class CoalescingTransport(asyncio.Transport):
    """A TLS transport whose writes in one turn of the event loop leave as one write.

    uvicorn writes a response's head and its body separately. Over TLS each write is a record of
    its own, encrypted and sent by a syscall of its own; joined at the end of the turn (the ASGI
    app sends both without yielding), the usual response costs one of each. What ends the stream
    (``close``, ``write_eof``) sends what is pending first; ``abort`` drops it, as it drops the
    transport's own buffer. Everything else is the wrapped transport's.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self._transport = transport
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data if type(data) is bytes else bytes(data))  # a caller may reuse its buffer

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        pending = self._pending
        if pending:
            self._pending = []
            if not self._transport.is_closing():
                self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()


def _with_tls(app: ASGIApp, extension: dict[str, Any]) -> ASGIApp:
    async def app_with_tls(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket", "spdy"):
            scope.setdefault("extensions", {})["tls"] = extension
        await app(scope, receive, send)

    return app_with_tls


def _rfc4514(subject: dict[str, Any]) -> str:
    parts = [f"CN={_escape(subject['cn'])}"] if subject.get("cn") else []
    parts += [f"O={_escape(o)}" for o in subject.get("o") or ()]
    return ",".join(parts)


def _escape(value: str) -> str:
    out = "".join(f"\\{c}" if c in ',+"\\<>;=' else c for c in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out
