"""The start/stop life of a long-running component (the scheduler, the node agent).

``State`` is every component's (the API server, kine, the controllers, NATS and the leader
elector use it without the ``Component`` base).

A component starts once: ``start()`` moves it from NEW through STARTING to RUNNING around its own
``_start()``, and a ``_start()`` that fails stops what it had begun before the error goes on, so a
caller never holds a half-started component. ``stop()`` is the component's own and idempotent. As
``async with``, a component starts on entry and stops on exit.
"""

from __future__ import annotations

import abc
import enum
from typing import Self


class State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"  # ended by an error of its own, not by stop()


class Component(abc.ABC):
    state: State = State.NEW

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self.state is not State.NEW:
            return
        self.state = State.STARTING
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        self.state = State.RUNNING
        self._started()

    @abc.abstractmethod
    async def _start(self) -> None:
        """Bring the component up (its state is STARTING meanwhile)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Bring it down; idempotent, and safe after a failed start."""

    @abc.abstractmethod
    def _started(self) -> None:
        """Called once RUNNING: say so in the log."""
