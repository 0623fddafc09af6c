"""The API client against a scripted in-process ASGI app: paths, bodies, errors, paging, watch framing.

The app stands in for the API server at the ASGI boundary (the same one the edge profile uses),
so these tests also cover ``transport.AsgiTransport``: streaming, the caller's identity, and the
disconnect the app sees when the client stops reading.
"""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from services.client import api, errors, resources

Reply = tuple[int, list[bytes]]  # status, body chunks


@dataclasses.dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    user: dict[str, Any]


class ScriptedApp:
    """An ASGI app answering each request with ``script(seen)``; a watch may stream forever."""

    def __init__(self, script: Callable[[Seen], Reply]) -> None:
        self.script = script
        self.seen: list[Seen] = []
        self.disconnected = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        query = dict(urllib.parse.parse_qsl(scope["query_string"].decode()))
        seen = Seen(
            scope["method"],
            scope["path"],
            query,
            {k.decode(): v.decode() for k, v in scope["headers"]},
            orjson.loads(message["body"]) if message.get("body") else None,
            scope["extensions"]["tls"]["client_cert_subject"],
        )
        self.seen.append(seen)
        status, chunks = self.script(seen)
        headers = [(b"content-type", b"application/json")]
        if status == 429:
            headers.append((b"retry-after", b"0"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if query.get("watch") == "true" and query.get("stay") == "open":
            while (await receive())["type"] != "http.disconnect":
                pass
            self.disconnected.set()
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def ok(body: Any = None, status: int = 200) -> Reply:
    return status, [orjson.dumps(body if body is not None else {})]


def status_body(code: int, reason: str, message: str, **details: Any) -> bytes:
    return orjson.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                         "reason": reason, "message": message, "details": details})  # fmt: skip


@pytest.fixture
def app() -> ScriptedApp:
    return ScriptedApp(lambda seen: ok({"kind": "Thing", "seen": seen.path}))


@pytest.fixture
async def client(app: ScriptedApp) -> AsyncIterator[api.ApiClient]:
    async with api.ApiClient(app=app, user="system:kube-scheduler", groups=["g1"]) as made:
        yield made


def test_resource_paths() -> None:
    assert resources.PODS.path(namespace="ns") == "/api/v1/namespaces/ns/pods"
    assert resources.PODS.path() == "/api/v1/pods"
    assert (
        resources.PODS.path(namespace="ns", name="p", subresource="binding")
        == "/api/v1/namespaces/ns/pods/p/binding"
    )
    assert resources.NODES.path(namespace="ignored", name="n1") == "/api/v1/nodes/n1"
    assert resources.DEPLOYMENTS.path(namespace="a", name="d") == "/apis/apps/v1/namespaces/a/deployments/d"
    assert resources.LEASES.api_version == "coordination.k8s.io/v1"
    assert str(resources.LEASES) == "leases.coordination.k8s.io" and str(resources.PODS) == "pods"
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError):
            resources.PODS.path(namespace="ns", name=bad)
    with pytest.raises(ValueError):
        resources.PODS.path(namespace="ns", subresource="status")
    assert resources.ADDONS in resources.ALL and len(set(resources.ALL)) == len(resources.ALL)


def test_a_client_needs_one_way_to_the_api() -> None:
    with pytest.raises(ValueError):
        api.ApiClient()
    with pytest.raises(ValueError):
        api.ApiClient(app=lambda *a: None)  # type: ignore[arg-type,return-value]


async def test_requests_carry_the_in_process_identity(app: ScriptedApp, client: api.ApiClient) -> None:
    got = await client.get(resources.NODES, "n1")
    assert got == {"kind": "Thing", "seen": "/api/v1/nodes/n1"}
    assert app.seen[0].user == {"cn": "system:kube-scheduler", "o": ["g1"]}
    assert app.seen[0].headers["accept"] == "application/json"


async def test_writes_send_the_right_verb_path_and_body(app: ScriptedApp, client: api.ApiClient) -> None:
    cm = {"metadata": {"name": "c", "namespace": "ns"}, "data": {"a": "1"}}
    await client.create(resources.CONFIGMAPS, cm, field_manager="me")
    await client.update(resources.CONFIGMAPS, cm)
    await client.update_status(resources.DEPLOYMENTS, {"metadata": {"name": "d"}}, namespace="apps")
    await client.patch(
        resources.CONFIGMAPS, "c", [{"op": "remove", "path": "/data/a"}], namespace="ns", patch_type="json"
    )
    await client.patch(
        resources.CONFIGMAPS,
        "c",
        {"data": {}},
        namespace="ns",
        patch_type="apply",
        field_manager="m",
        force=True,
    )
    await client.delete(resources.PODS, "p", namespace="ns", propagation_policy="Foreground", grace_period_seconds=0,
                        preconditions={"uid": "u"})  # fmt: skip
    await client.bind("ns", "p", "node-1", uid="u")
    got = [(s.method, s.path, s.query, s.headers.get("content-type")) for s in app.seen]
    assert got == [
        ("POST", "/api/v1/namespaces/ns/configmaps", {"fieldManager": "me"}, "application/json"),
        ("PUT", "/api/v1/namespaces/ns/configmaps/c", {}, "application/json"),
        ("PUT", "/apis/apps/v1/namespaces/apps/deployments/d/status", {}, "application/json"),
        ("PATCH", "/api/v1/namespaces/ns/configmaps/c", {}, "application/json-patch+json"),
        ("PATCH", "/api/v1/namespaces/ns/configmaps/c", {"fieldManager": "m", "force": "true"}, "application/apply-patch+yaml"),
        ("DELETE", "/api/v1/namespaces/ns/pods/p", {}, "application/json"),
        ("POST", "/api/v1/namespaces/ns/pods/p/binding", {}, "application/json"),
    ]  # fmt: skip
    assert app.seen[0].body == cm
    assert app.seen[5].body == {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground",
                                "gracePeriodSeconds": 0, "preconditions": {"uid": "u"}}  # fmt: skip
    assert app.seen[6].body == {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
                                "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}}  # fmt: skip


async def test_misuse_is_refused_before_any_request(app: ScriptedApp, client: api.ApiClient) -> None:
    with pytest.raises(ValueError):
        await client.create(resources.PODS, {"metadata": {"name": "p"}})  # no namespace
    with pytest.raises(ValueError):
        await client.patch(resources.PODS, "p", {}, namespace="ns", patch_type="apply")  # no field manager
    with pytest.raises(ValueError):
        await client.update(resources.NODES, {"metadata": {}})  # no name
    assert app.seen == []


async def test_a_status_error_becomes_an_api_error() -> None:
    body = status_body(409, "Conflict", 'Operation cannot be fulfilled on pods "p"', name="p", kind="pods",
                       causes=[{"reason": "FieldManagerConflict", "message": "x", "field": ".spec"}])  # fmt: skip
    app = ScriptedApp(lambda seen: (409, [body]))
    async with api.ApiClient(app=app, user="u") as client:
        with pytest.raises(errors.ApiError) as caught:
            await client.get(resources.PODS, "p", namespace="ns")
    exc = caught.value
    assert (exc.code, exc.reason, exc.name, exc.kind) == (409, "Conflict", "p", "pods")
    assert exc.causes[0].field == ".spec"
    assert errors.is_conflict(exc) and not errors.is_not_found(exc)


async def test_a_non_status_error_body_still_gives_code_and_reason() -> None:
    app = ScriptedApp(lambda seen: (503, [b"<html>bad gateway</html>"]))
    async with api.ApiClient(app=app, user="u") as client:
        with pytest.raises(errors.ApiError) as caught:
            await client.get(resources.PODS, "p", namespace="ns")
    assert (caught.value.code, caught.value.reason) == (503, "ServiceUnavailable")
    assert "bad gateway" in caught.value.message


async def test_throttled_requests_are_retried_but_evictions_are_not() -> None:
    replies = iter([(429, [status_body(429, "TooManyRequests", "slow down")]), ok({"done": True})])
    app = ScriptedApp(
        lambda seen: (
            next(replies) if seen.path.endswith("/p") else (429, [status_body(429, "TooManyRequests", "pdb")])
        )
    )
    async with api.ApiClient(app=app, user="u") as client:
        assert await client.get(resources.PODS, "p", namespace="ns") == {"done": True}
        with pytest.raises(errors.ApiError) as caught:
            await client.evict("ns", "q")
    assert caught.value.code == 429
    assert [s.method for s in app.seen] == ["GET", "GET", "POST"]
    assert app.seen[2].body["kind"] == "Eviction"


async def test_list_joins_pages_into_one_list() -> None:
    def script(seen: Seen) -> Reply:
        token = seen.query.get("continue", "")
        page = {"": (["a", "b"], "t1"), "t1": (["c", "d"], "t2"), "t2": (["e"], "")}[token]
        meta: dict[str, Any] = {"resourceVersion": "41"}
        if page[1]:
            meta.update({"continue": page[1], "remainingItemCount": 3})
        return ok({"kind": "PodList", "apiVersion": "v1", "metadata": meta,
                   "items": [{"metadata": {"name": n}} for n in page[0]]})  # fmt: skip

    app = ScriptedApp(script)
    async with api.ApiClient(app=app, user="u", page_size=2) as client:
        listed = await client.list(
            resources.PODS, namespace="ns", label_selector="app=x", resource_version="0"
        )
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a", "b", "c", "d", "e"]
    assert listed["metadata"] == {"resourceVersion": "41"}
    assert listed["items"][0]["kind"] == "Pod" and listed["items"][0]["apiVersion"] == "v1"
    assert app.seen[0].query == {"labelSelector": "app=x", "resourceVersion": "0", "limit": "2"}
    assert app.seen[1].query == {"labelSelector": "app=x", "limit": "2", "continue": "t1"}


async def test_an_expired_continue_token_reads_the_list_again_at_once() -> None:
    def script(seen: Seen) -> Reply:
        if seen.query.get("continue"):
            return 410, [status_body(410, "Expired", "too old")]
        if seen.query.get("limit"):
            return ok(
                {
                    "metadata": {"resourceVersion": "5", "continue": "t"},
                    "items": [{"metadata": {"name": "a"}}],
                }
            )
        return ok({"metadata": {"resourceVersion": "9"}, "items": [{"metadata": {"name": n}} for n in "abc"]})

    app = ScriptedApp(script)
    async with api.ApiClient(app=app, user="u", page_size=1) as client:
        listed = await client.list(resources.PODS)
    assert len(listed["items"]) == 3 and listed["metadata"]["resourceVersion"] == "9"
    assert "limit" not in app.seen[-1].query


def event(kind: str, name: str, rv: str) -> bytes:
    return orjson.dumps(
        {"type": kind, "object": {"kind": "Pod", "metadata": {"name": name, "resourceVersion": rv}}}
    )


async def test_watch_splits_events_on_newlines_whatever_the_chunking() -> None:
    stream = (
        event("ADDED", "a", "5")
        + b"\n"
        + event("MODIFIED", "a", "6")
        + b"\n"
        + event("BOOKMARK", "", "9")
        + b"\n"
    )
    chunks = [stream[:7], stream[7:60], stream[60:61], stream[61:]]
    app = ScriptedApp(lambda seen: (200, chunks))
    async with api.ApiClient(app=app, user="u") as client:
        watch = client.watch(resources.PODS, namespace="ns", resource_version="4", timeout_seconds=30)
        async with watch:
            got = [(t, o["metadata"]["resourceVersion"]) async for t, o in watch]
    assert got == [("ADDED", "5"), ("MODIFIED", "6"), ("BOOKMARK", "9")]
    assert watch.resource_version == "9"
    assert app.seen[0].query == {"watch": "true", "resourceVersion": "4", "allowWatchBookmarks": "true",
                                 "timeoutSeconds": "30"}  # fmt: skip


async def test_watch_raises_an_error_event_as_api_error() -> None:
    gone = orjson.dumps(
        {
            "type": "ERROR",
            "object": orjson.loads(status_body(410, "Expired", "too old resource version: 1 (5)")),
        }
    )
    app = ScriptedApp(lambda seen: (200, [gone + b"\n"]))
    async with api.ApiClient(app=app, user="u") as client:
        with pytest.raises(errors.ApiError) as caught:
            async with client.watch(resources.PODS, resource_version="1") as watch:
                async for _ in watch:
                    pass
    assert errors.is_gone(caught.value)


async def test_a_refused_watch_raises_before_iterating() -> None:
    app = ScriptedApp(lambda seen: (422, [status_body(422, "Invalid", "bad options")]))
    async with api.ApiClient(app=app, user="u") as client:
        with pytest.raises(errors.ApiError) as caught:
            async with client.watch(resources.PODS, send_initial_events=True):
                pass
    assert caught.value.code == 422
    assert app.seen[0].query["sendInitialEvents"] == "true"
    assert app.seen[0].query["resourceVersionMatch"] == "NotOlderThan"


async def test_leaving_a_watch_early_disconnects_the_app() -> None:
    app = ScriptedApp(lambda seen: (200, [event("ADDED", "a", "1") + b"\n"]))
    async with api.ApiClient(app=app, user="u") as client:
        watch = client.watch(resources.PODS)
        watch._request.url = watch._request.url.copy_merge_params({"stay": "open"})
        async with watch:
            async for kind, _ in watch:
                assert kind == "ADDED"
                break
        await asyncio.wait_for(app.disconnected.wait(), 2)
