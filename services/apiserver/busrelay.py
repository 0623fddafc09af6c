"""``/v1-k3s/bus``: the bus relay for agents on other machines (see ``services/bus/relay.py``).

Only a node may connect, with its client certificate (user ``system:node:<name>`` in group
``system:nodes``), and it may use only its own tunnel subjects, ``k3s.tunnel.<node>.``. The relay
runs on the API server's bus (NATS, or the in-memory bus of the edge profile).
"""

from __future__ import annotations

import logging
from typing import Any

from services.apiserver import tunnel, websocket
from services.bus import relay
from services.bus import types as bus_types
from services.machinery import errors

log = logging.getLogger(__name__)

PATH = "/v1-k3s/bus"


async def handle(app: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    connection = websocket.Connection(scope, receive, send)
    if not await connection.wait_connect():
        return
    try:
        node = await _node_of(app, scope)
        bus = await tunnel.for_api(app.api).bus(node, "the bus relay")
    except errors.ApiError as exc:
        await connection.deny(exc)
        return
    await connection.accept(relay.SUBPROTOCOL if relay.SUBPROTOCOL in connection.subprotocols else None)
    session = relay.RelayServer(bus, prefix=f"k3s.tunnel.{tunnel.node_token(node)}.", send=connection.send)
    log.info("bus relay: node %s connected", node)
    try:
        while (frame := await connection.receive()) is not None:
            if isinstance(frame, bytes):
                await session.handle(frame)
    except (relay.RelayError, bus_types.BusError) as exc:
        log.warning("bus relay: node %s: %s", node, exc)
        await connection.send(relay.encode({"op": "err", "message": str(exc)}))
        await connection.close(1008)
    finally:
        await session.close()
        log.info("bus relay: node %s disconnected", node)


async def _node_of(app: Any, scope: dict[str, Any]) -> str:
    user = await app.authenticator.authenticate(app.credentials(scope))
    if user is None:
        raise errors.unauthorized()
    if not user.name.startswith("system:node:") or "system:nodes" not in user.groups:
        raise errors.forbidden(f'user "{user.name}" is not a node: only nodes may use the bus relay')
    return user.name.removeprefix("system:node:")
