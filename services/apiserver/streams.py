"""pods/log, exec, attach, portforward and proxy: answered by the node that runs the pod.

The API server forwards these to the pod's node over the bus (the agent tunnel);
until a node agent answers on the bus, the request gets 503 with the reason.
"""

from __future__ import annotations

from services.apiserver import context, responses
from services.machinery import errors


async def handle(ctx: context.Request) -> responses.Response:
    pod = await ctx.api.store.get(ctx.resource.key(ctx.info.namespace, ctx.info.name))
    if pod is None:
        raise errors.not_found("pods", ctx.info.name)
    node = (pod.obj.get("spec") or {}).get("nodeName")
    if not node:
        raise errors.bad_request(f"pod {ctx.info.name} does not have a host assigned")
    raise errors.service_unavailable(f'no agent of node "{node}" is connected to serve pods/{ctx.info.subresource}')
