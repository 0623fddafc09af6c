"""The contract every controller follows, and the common key-queue shape most share.

A controller registers informers and handlers in ``setup`` (through the shared
``InformerFactory``, so every controller of the process shares one watch per
resource), and ``run`` works until cancelled. ``QueueController`` is the usual
form: handlers put ``namespace/name`` keys on a rate-limited work queue and
``workers`` tasks call ``reconcile(key)``; an exception re-queues the key with
backoff, success forgets its failures.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from typing import Any, Protocol

from services.client import api as api_
from services.client import events as events_
from services.client import informer as informer_
from services.client import workqueue
from services.machinery import tasks


@dataclasses.dataclass
class ControllerContext:
    api: api_.ApiClient
    informers: informer_.InformerFactory
    recorder: events_.EventRecorder
    # The controllers' settings group (services/controllers/settings.py), e.g. cluster_cidr.
    settings: Any


class Controller(Protocol):
    name: str

    def setup(self, ctx: ControllerContext) -> None:
        """Create informers and register handlers (before the factory starts)."""
        ...

    async def run(self) -> None:
        """Work until cancelled (called once every informer has synced)."""
        ...


def key_of(obj: dict[str, Any]) -> str:
    md = obj.get("metadata") or {}
    ns = md.get("namespace")
    return f"{ns}/{md.get('name', '')}" if ns else md.get("name", "")


def split_key(key: str) -> tuple[str, str]:
    namespace, _, name = key.rpartition("/")
    return namespace, name


class QueueController(abc.ABC):
    """Keys in, ``reconcile(key)`` out, with ``workers`` parallel workers."""

    name = "controller"
    workers = 2

    def __init__(self) -> None:
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(name=self.name)
        self.ctx: ControllerContext | None = None

    def setup(self, ctx: ControllerContext) -> None:
        self.ctx = ctx

    def enqueue(self, obj: dict[str, Any]) -> None:
        self.queue.add(key_of(obj))

    @abc.abstractmethod
    async def reconcile(self, key: str) -> None:
        """Make the world match the object named by ``key`` (it may be gone)."""

    async def run(self) -> None:
        workers = [
            tasks.guarded(workqueue.run_worker(self.queue, self.reconcile), name=f"{self.name} worker {i}")
            for i in range(self.workers)
        ]
        try:
            await asyncio.Event().wait()
        finally:
            self.queue.shutdown()
            await tasks.cancel_all(workers)
