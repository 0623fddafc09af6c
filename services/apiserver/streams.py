"""pods/log, exec, attach and portforward: answered by the node that runs the pod, through the tunnel.

What the API server checks itself, before the node is asked, as kube-apiserver does: the pod exists
(404), it is bound to a node (400), the container is one of the pod's (400 ``container x is not
valid for pod y``), and the options make sense (400, or 422 for pods/log options as
``PodLogOptions`` validation words them). Then it opens a stream to the node's agent over the bus
(``tunnel``); 503 when no agent serves the node.

pods/log streams as chunked ``text/plain``. exec, attach and portforward need an upgraded
connection: WebSocket (``websocket``) or kubectl's ``Upgrade: SPDY/3.1`` (``spdyupgrade``), served
by ``remotecommand`` and ``portforward`` over either (``Upgraded``); a plain request to them gets 400
``Upgrade request required``, as upstream answers one.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from services.apiserver import context, request, responses, tunnel
from services.bus import streams
from services.machinery import errors


class Upgraded(Protocol):
    """An upgraded connection, as exec, attach and port-forward use it: a WebSocket or kubectl's SPDY."""

    subprotocols: list[str]  # what the client offered (WebSocket subprotocols, X-Stream-Protocol-Version)

    async def accept(self, subprotocol: str | None) -> None: ...

    async def receive(self) -> bytes | str | None: ...

    async def send(self, payload: bytes) -> None: ...

    async def close(self) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """The pod a stream request is about, and where it runs."""

    pod: dict[str, Any]
    node: str
    container: str

    @property
    def header(self) -> dict[str, Any]:
        md = self.pod.get("metadata") or {}
        return {"namespace": md.get("namespace", ""), "pod": md.get("name", ""), "uid": md.get("uid", ""),
                "container": self.container}  # fmt: skip


async def handle(ctx: context.Request) -> responses.Response | responses.Stream:
    sub, verb = ctx.info.subresource, ctx.info.verb
    if sub == "log" and verb == "get":
        return await logs(ctx)
    if sub in ("exec", "attach", "portforward") and verb in ("get", "create"):
        await target(ctx, container=sub != "portforward")
        raise errors.bad_request("Upgrade request required")
    if sub == "proxy":
        found = await target(ctx, container=False)
        raise errors.service_unavailable(
            f'pods/proxy is not served: the agent of node "{found.node}" has no proxy'
        )
    raise errors.method_not_allowed(f"{verb} is not supported on pods/{sub}")


async def target(ctx: context.Request, *, container: bool = True) -> Target:
    """The pod, its node and (when ``container``) the container the request names or implies."""
    pod = await ctx.api.store.get(ctx.resource.key(ctx.info.namespace, ctx.info.name))
    if pod is None:
        raise errors.not_found("pods", ctx.info.name)
    node = (pod.obj.get("spec") or {}).get("nodeName")
    if not node:
        raise errors.bad_request(f"pod {ctx.info.name} does not have a host assigned")
    name = choose_container(pod.obj, request.param(ctx.query, "container")) if container else ""
    return Target(pod.obj, node, name)


def choose_container(pod: dict[str, Any], name: str) -> str:
    spec = pod.get("spec") or {}
    pod_name = (pod.get("metadata") or {}).get("name", "")
    regular = [c.get("name", "") for c in spec.get("containers") or ()]
    init = [c.get("name", "") for c in spec.get("initContainers") or ()]
    ephemeral = [c.get("name", "") for c in spec.get("ephemeralContainers") or ()]
    if not name:
        if len(regular) == 1:
            return regular[0]
        message = (
            f"a container name must be specified for pod {pod_name}, choose one of: [{' '.join(regular)}]"
        )
        if init:
            message += f" or one of the init containers: [{' '.join(init)}]"
        raise errors.bad_request(message)
    if name not in (*regular, *init, *ephemeral):
        raise errors.bad_request(f"container {name} is not valid for pod {pod_name}")
    return name


# -- pods/log -----------------------------------------------------------------------------------------


def log_options(ctx: context.Request) -> dict[str, Any]:
    """The tunnel header's log options from the query, validated as PodLogOptions."""
    query = ctx.query
    tail = request.int_param(query, "tailLines")
    limit = request.int_param(query, "limitBytes")
    since_seconds = request.int_param(query, "sinceSeconds")
    since_time = request.param(query, "sinceTime")
    causes = []
    if tail is not None and tail < 0:
        causes.append(
            errors.Cause(
                "FieldValueInvalid", f"Invalid value: {tail}: must be greater than or equal to 0", "tailLines"
            )
        )
    if limit is not None and limit < 1:
        causes.append(
            errors.Cause("FieldValueInvalid", f"Invalid value: {limit}: must be greater than 0", "limitBytes")
        )
    if since_seconds is not None and since_seconds < 1:
        causes.append(
            errors.Cause(
                "FieldValueInvalid", f"Invalid value: {since_seconds}: must be greater than 0", "sinceSeconds"
            )
        )
    if since_seconds is not None and since_time:
        causes.append(
            errors.Cause(
                "FieldValueForbidden", "at most one of `sinceTime` or `sinceSeconds` may be specified", ""
            )
        )
    if causes:
        raise errors.invalid("PodLogOptions", ctx.info.name, causes)
    since = time.time() - since_seconds if since_seconds is not None else None
    if since_time:
        since = parse_since_time(since_time)
    return {
        "follow": request.flag(query, "follow"),
        "previous": request.flag(query, "previous"),
        "timestamps": request.flag(query, "timestamps"),
        "tail_lines": tail,
        "limit_bytes": limit,
        "since": since,
    }


def parse_since_time(text: str) -> float:
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise errors.bad_request(f'invalid value for sinceTime: "{text}" is not an RFC 3339 time') from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


async def logs(ctx: context.Request) -> responses.Stream:
    options = log_options(ctx)
    found = await target(ctx)
    stream = await tunnel.for_api(ctx.api).open(
        found.node, {"op": "log", **found.header, **options}, what="pods/log"
    )
    return responses.Stream(200, _log_chunks(stream), content_type="text/plain")


async def _log_chunks(stream: streams.Stream) -> AsyncIterator[bytes]:
    try:
        async for frame in stream:
            if frame.data:
                yield frame.data
    finally:
        await stream.close()
