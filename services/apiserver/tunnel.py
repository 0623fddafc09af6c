"""The API server's end of the agent tunnel: open a stream to the agent of a node over the bus.

The subject layout belongs to the agent (``services/agent/tunnel.py`` documents it); the API server
only opens streams and translates what can go wrong into ``Status`` errors: nobody serving the node
is 503 with the node's name, a refusal keeps the agent's code and message.

The bus connection is made on first use from the API server's ``nats_url`` and kept, one per
``Api``; ``close`` lets it go when the API server stops.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from services.apiserver import context
from services.bus import streams
from services.bus import types as bus_types
from services.machinery import errors

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 10.0  # seconds for the agent to accept a stream


def node_token(node_name: str) -> str:
    return node_name.replace(".", "_")


class TunnelClient:
    def __init__(self, url: str, *, bus: bus_types.Bus | None = None) -> None:
        self.url = url
        self._bus = bus
        self._own_bus = bus is None
        self._lock = asyncio.Lock()

    async def bus(self, node: str, what: str) -> bus_types.Bus:
        async with self._lock:
            if self._bus is None:
                if not self.url:
                    raise errors.service_unavailable(
                        f'no agent of node "{node}" can be reached to serve {what}: the API server has no bus'
                    )
                from services import bus as bus_

                try:
                    self._bus = await bus_.connect(self.url, name="apiserver-tunnel")
                except bus_types.BusError as exc:
                    raise errors.service_unavailable(
                        f'cannot reach the agent of node "{node}": {exc}'
                    ) from None
            return self._bus

    async def open(self, node: str, header: dict[str, Any], *, what: str) -> streams.Stream:
        """A stream to the agent of ``node``; ``what`` names the request in error messages."""
        bus = await self.bus(node, what)
        token = node_token(node)
        try:
            return await streams.open_stream(
                bus, f"k3s.tunnel.{token}.open", header, prefix=f"k3s.tunnel.{token}.s", within=OPEN_TIMEOUT
            )
        except streams.Refused as exc:
            raise errors.ApiError(exc.code, exc.reason or "BadRequest", exc.message) from None
        except bus_types.NoResponders:
            raise errors.service_unavailable(
                f'no agent of node "{node}" is connected to serve {what}'
            ) from None
        except bus_types.RequestTimeout:
            raise errors.service_unavailable(
                f'the agent of node "{node}" did not answer within {OPEN_TIMEOUT:g}s to serve {what}'
            ) from None
        except bus_types.BusError as exc:
            raise errors.service_unavailable(f'cannot reach the agent of node "{node}": {exc}') from None

    async def close(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None and self._own_bus:
            await bus.close()


_clients: weakref.WeakKeyDictionary[context.Api, TunnelClient] = weakref.WeakKeyDictionary()


def for_api(api: context.Api) -> TunnelClient:
    client = _clients.get(api)
    if client is None:
        client = _clients[api] = TunnelClient(getattr(api.settings, "nats_url", "") or "")
    return client


def use_bus(api: context.Api, bus: bus_types.Bus) -> None:
    """Serve the tunnel over ``bus`` (owned by the caller) instead of connecting to ``nats_url``."""
    _clients[api] = TunnelClient("", bus=bus)


async def close(api: context.Api) -> None:
    client = _clients.pop(api, None)
    if client is not None:
        await client.close()
