"""A real uvicorn HTTPS server with our TLS context and protocols, driven by httpx.

The app echoes what ``credentials_from_scope`` made of each request, so the tests see exactly what
the API server's authentication will see: the verified client certificate's subject, the bearer
token, or nothing. Servers listen on an ephemeral loopback port and are stopped in ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from services.apiserver import tls
from services.apiserver.auth import authn, types
from supervisor import pki


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    credentials = tls.credentials_from_scope(scope)
    user = await authn.Authenticator().authenticate(credentials)
    extension = scope.get("extensions", {}).get("tls", {})
    body = {
        "cn": credentials.cert_common_name,
        "o": list(credentials.cert_organizations),
        "token": credentials.bearer_token,
        "user": user.name if user else None,
        "groups": list(user.groups) if user else [],
        "name": extension.get("client_cert_name"),
        "chain": len(extension.get("client_cert_chain", [])),
        "tls_version": extension.get("tls_version"),
    }
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


class EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test process keeps its own signal handlers


@pytest.fixture
def files(tmp_path: Path) -> pki.TlsFiles:
    return pki.ensure(tmp_path)


@contextlib.asynccontextmanager
async def serving(files: pki.TlsFiles, http: str, app: Any = echo) -> AsyncIterator[str]:
    context = tls.server_context(
        cert_file=files.crt(pki.SERVING_APISERVER),
        key_file=files.key(pki.SERVING_APISERVER),
        client_ca_file=files.crt(pki.CLIENT_CA),
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = tls.uvicorn_config_for(
        app, context=context, host="127.0.0.1", port=port, http=http, log_level="warning"
    )
    server = EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def client_context(files: pki.TlsFiles, cert_stem: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=files.crt(pki.SERVER_CA))
    if cert_stem:
        context.load_cert_chain(files.crt(cert_stem), files.key(cert_stem))
    return context


HTTP_IMPLEMENTATIONS = ["h11", "httptools"]


@pytest.mark.parametrize("http", HTTP_IMPLEMENTATIONS)
async def test_client_certificate_reaches_the_app(files: pki.TlsFiles, http: str) -> None:
    async with (
        serving(files, http) as url,
        httpx.AsyncClient(verify=client_context(files, pki.CLIENT_ADMIN)) as client,
    ):
        first = (await client.get(f"{url}/api")).json()
        second = (await client.get(f"{url}/apis")).json()  # same connection, same subject
    assert first == second
    assert first["cn"] == "system:admin" and first["o"] == ["system:masters"]
    assert first["user"] == "system:admin"
    assert first["groups"] == ["system:masters", "system:authenticated"]
    assert first["name"] == "CN=system:admin,O=system:masters"
    assert first["chain"] == 1 and first["tls_version"] in (0x0303, 0x0304)
    assert first["token"] is None


@pytest.mark.parametrize("http", HTTP_IMPLEMENTATIONS)
async def test_without_a_certificate_only_the_token_is_seen(files: pki.TlsFiles, http: str) -> None:
    async with serving(files, http) as url, httpx.AsyncClient(verify=client_context(files, None)) as client:
        anonymous = (await client.get(f"{url}/version")).json()
        with_token = (await client.get(f"{url}/api", headers={"Authorization": "Bearer abc.def"})).json()
    assert anonymous["cn"] is None and anonymous["user"] is None and anonymous["chain"] == 0
    assert with_token["token"] == "abc.def" and with_token["cn"] is None


async def test_other_client_certificates(files: pki.TlsFiles) -> None:
    async with serving(files, "auto") as url:
        async with httpx.AsyncClient(verify=client_context(files, "client-scheduler")) as client:
            scheduler = (await client.get(f"{url}/")).json()
        node_cert = pki.issue_client_cert(pki.load(files, pki.CLIENT_CA), "system:node:n1", ["system:nodes"])
        cert_file, key_file = files.directory / "node.crt", files.directory / "node.key"
        cert_file.write_bytes(node_cert.cert_pem())
        key_file.write_bytes(node_cert.key_pem())
        context = client_context(files, None)
        context.load_cert_chain(cert_file, key_file)
        async with httpx.AsyncClient(verify=context) as client:
            kubelet = (await client.get(f"{url}/")).json()
    assert (scheduler["cn"], scheduler["o"]) == ("system:kube-scheduler", [])
    assert (kubelet["cn"], kubelet["o"]) == ("system:node:n1", ["system:nodes"])


async def test_certificate_from_another_ca_fails_the_handshake(files: pki.TlsFiles) -> None:
    rogue_ca = pki.generate_ca("rogue")
    rogue = pki.issue_client_cert(rogue_ca, "system:admin", ["system:masters"])
    cert_file, key_file = files.directory / "rogue.crt", files.directory / "rogue.key"
    cert_file.write_bytes(rogue.cert_pem())
    key_file.write_bytes(rogue.key_pem())
    context = client_context(files, None)
    context.load_cert_chain(cert_file, key_file)
    async with serving(files, "auto") as url, httpx.AsyncClient(verify=context) as client:
        with pytest.raises(httpx.TransportError):
            await client.get(f"{url}/")
        # The server keeps serving others.
        async with httpx.AsyncClient(verify=client_context(files, pki.CLIENT_ADMIN)) as good:
            assert (await good.get(f"{url}/")).json()["cn"] == "system:admin"


async def test_serving_certificate_names_verify(files: pki.TlsFiles) -> None:
    async with serving(files, "auto") as url, httpx.AsyncClient(verify=client_context(files, None)) as client:
        port = url.rsplit(":", 1)[1]
        assert (await client.get(f"https://localhost:{port}/")).status_code == 200


async def websocket_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        await echo(scope, receive, send)
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept", "subprotocol": "v5.channel.k8s.io"})
    credentials = tls.credentials_from_scope(scope)
    await send(
        {
            "type": "websocket.send",
            "text": json.dumps([credentials.cert_common_name, credentials.bearer_token]),
        }
    )
    await send({"type": "websocket.close"})


@pytest.mark.parametrize("http", HTTP_IMPLEMENTATIONS)
async def test_websocket_upgrade_keeps_the_subject(files: pki.TlsFiles, http: str) -> None:
    websockets = pytest.importorskip("websockets", reason="no WebSocket implementation installed for uvicorn")
    token = tls.WS_BEARER_PREFIX + "YWJjLmRlZg"  # base64url("abc.def"), unpadded as clients send it
    async with serving(files, http, app=websocket_echo) as url:
        async with websockets.connect(
            url.replace("https://", "wss://") + "/api/v1/namespaces/default/pods/p/exec",
            ssl=client_context(files, pki.CLIENT_ADMIN),
            subprotocols=["v5.channel.k8s.io", token],
        ) as ws:
            assert json.loads(await ws.recv()) == ["system:admin", "abc.def"]


# -- credentials from a scope, without a server ------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [(b"Bearer abc", "abc"), (b"bearer  abc", None), (b"BEARER xyz extra", "xyz"), (b"Basic dXNlcjpwdw==", None),
     (b"Bearer ", None), (b"  Bearer t0k  ", "t0k")],
)  # fmt: skip
def test_bearer_header_parsing(header: bytes, token: str | None) -> None:
    assert tls.bearer_token({"type": "http", "headers": [(b"authorization", header)]}) == token


def test_websocket_bearer_subprotocol() -> None:
    encoded = "YWJjLmRlZg"  # base64url("abc.def"), unpadded as clients send it
    scope = {
        "type": "websocket",
        "headers": [],
        "subprotocols": ["v5.channel.k8s.io", tls.WS_BEARER_PREFIX + encoded],
    }
    assert tls.bearer_token(scope) == "abc.def"
    assert tls.bearer_token({**scope, "type": "http"}) is None


def test_credentials_from_a_scope_without_tls() -> None:
    credentials = tls.credentials_from_scope({"type": "http", "headers": []})
    assert credentials == types.Credentials()
