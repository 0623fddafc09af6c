"""The bus over NATS (nats-py).

Connecting is bounded: the first connection is retried until ``connect_timeout`` (the server may be
starting), but a refusal of our credentials fails at once. Once connected, nats-py reconnects for
ever in the background (a restarted nats-server comes back on the same port), buffering what is
published meanwhile up to its pending limit; past that, notices are dropped, which the bus contract
allows (subscribers fall back to polling).

Requests use nats-py's shared response inbox; a request nobody serves fails at once with
``NoResponders`` (the server's "no responders" status, which needs headers, on since NATS 2.2).

nats-py reports asynchronous errors through callbacks; ours log one line each, with any password or
token scrubbed, instead of the library's default traceback.
"""

from __future__ import annotations

import asyncio
import logging

import nats
import nats.aio.client
import nats.aio.msg
import nats.aio.subscription
import nats.errors

import services.bus
from services.bus import types

logger = logging.getLogger(__name__)

RECONNECT_WAIT = 1.0  # seconds between reconnect attempts to the same server
ATTEMPT_TIMEOUT = 2.0  # seconds for one TCP connect + handshake


async def connect(
    url: str,
    *,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    name: str = "k3s",
    connect_timeout: float = 10.0,
) -> NatsBus:
    bus = NatsBus(url, secrets=[s for s in (password, token) if s])
    await bus.connect(user=user, password=password, token=token, name=name, connect_timeout=connect_timeout)
    return bus


def is_auth_error(exc: BaseException) -> bool:
    return isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in str(exc).lower()


class NatsSubscription:
    def __init__(self, subscription: nats.aio.subscription.Subscription) -> None:
        self._subscription = subscription

    async def unsubscribe(self) -> None:
        try:
            await self._subscription.unsubscribe()
        except nats.errors.Error as exc:
            # Already gone with its connection: nothing left to undo.
            logger.debug("bus unsubscribe ignored: %s", exc)


class NatsBus:
    def __init__(self, url: str, *, secrets: list[str]) -> None:
        self.url = url
        self._shown_url = services.bus.redact_url(url)
        self._secrets = secrets
        self._client = nats.aio.client.Client()
        self._connected_once = False
        self._last_error = ""
        self._refused: asyncio.Future[BaseException] | None = None

    async def connect(
        self, *, user: str | None, password: str | None, token: str | None, name: str, connect_timeout: float
    ) -> None:
        self._refused = asyncio.get_running_loop().create_future()
        attempt = asyncio.create_task(
            self._client.connect(
                servers=[self.url],
                user=user,
                password=password,
                token=token,
                name=name,
                connect_timeout=ATTEMPT_TIMEOUT,
                reconnect_time_wait=RECONNECT_WAIT,
                max_reconnect_attempts=-1,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            ),
            name=f"bus connect {self._shown_url}",
        )
        try:
            done, _ = await asyncio.wait(
                {attempt, self._refused}, timeout=connect_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if attempt in done:
                attempt.result()
                self._connected_once = True
                logger.info("bus connected to %s", self._shown_url)
                return
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise types.BusError(f"cannot connect to NATS at {self._shown_url}: {self._scrub(exc)}") from None
        finally:
            if not self._connected_once:
                await self._abandon(attempt)
        if self._refused.done():
            raise types.BusError(f"NATS at {self._shown_url} refused our credentials")
        last = f" (last error: {self._last_error})" if self._last_error else ""
        raise types.BusError(f"cannot connect to NATS at {self._shown_url} within {connect_timeout:g}s{last}")

    async def publish(self, subject: str, payload: bytes) -> None:
        try:
            await self._client.publish(subject, payload)
        except nats.errors.OutboundBufferLimitError:
            # Disconnected for long enough to fill the reconnect buffer: drop, as the contract allows.
            logger.debug("bus dropped a notice on %s while disconnected", subject)
        except nats.errors.Error as exc:
            raise types.BusError(f"cannot publish on {subject!r}: {self._scrub(exc)}") from None

    async def subscribe(self, subject: str, handler: types.Handler) -> NatsSubscription:
        async def deliver(msg: nats.aio.msg.Msg) -> None:
            try:
                await handler(msg.subject, msg.data)
            except Exception:
                logger.exception("bus handler for %s failed on %s", subject, msg.subject)

        try:
            subscription = await self._client.subscribe(subject, cb=deliver)
        except nats.errors.Error as exc:
            raise types.BusError(f"cannot subscribe to {subject!r}: {self._scrub(exc)}") from None
        return NatsSubscription(subscription)

    async def request(self, subject: str, payload: bytes, *, within: float) -> bytes:
        try:
            reply = await self._client.request(subject, payload, timeout=within)
        except nats.errors.NoRespondersError:
            raise types.NoResponders(f"no responders on {subject!r}") from None
        except nats.errors.TimeoutError:
            raise types.RequestTimeout(f"no reply on {subject!r} within {within:g}s") from None
        except nats.errors.Error as exc:
            raise types.BusError(f"request on {subject!r} failed: {self._scrub(exc)}") from None
        return reply.data

    async def serve(self, subject: str, responder: types.Responder) -> NatsSubscription:
        async def answer(msg: nats.aio.msg.Msg) -> None:
            try:
                data = await responder(msg.subject, msg.data)
                if msg.reply:
                    await self._client.publish(msg.reply, data)
            except Exception:
                logger.exception("bus responder for %s failed on %s", subject, msg.subject)

        try:
            subscription = await self._client.subscribe(subject, cb=answer)
        except nats.errors.Error as exc:
            raise types.BusError(f"cannot serve {subject!r}: {self._scrub(exc)}") from None
        return NatsSubscription(subscription)

    def new_inbox(self) -> str:
        return self._client.new_inbox()

    async def close(self) -> None:
        if not self._client.is_closed:
            await self._client.close()
            logger.info("bus disconnected from %s", self._shown_url)

    async def _abandon(self, attempt: asyncio.Task[None]) -> None:
        attempt.cancel()
        try:
            await attempt
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except Exception as exc:
            logger.debug("abandoned NATS connect attempt failed: %s", self._scrub(exc))
        await self._client.close()

    async def _on_error(self, exc: Exception) -> None:
        if not self._connected_once:
            if is_auth_error(exc) and self._refused is not None and not self._refused.done():
                self._refused.set_result(exc)
            self._last_error = self._scrub(exc) or type(exc).__name__
            logger.debug("bus connect attempt to %s failed: %s", self._shown_url, self._scrub(exc))
            return
        logger.warning("bus error on %s: %s", self._shown_url, self._scrub(exc) or type(exc).__name__)

    async def _on_disconnected(self) -> None:
        if self._connected_once and not self._client.is_closed:
            logger.warning("bus lost its connection to %s; reconnecting", self._shown_url)

    async def _on_reconnected(self) -> None:
        logger.info("bus reconnected to %s", self._shown_url)

    def _scrub(self, exc: BaseException) -> str:
        text = services.bus.redact_url(str(exc))
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
