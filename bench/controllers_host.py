"""The controller manager for benches: in the bench's process (edge shape) or in its own (server shape).

A bench that times what the controllers do must not time their start: the first lists of every
resource, the garbage collector's graph, node IPAM handing a podCIDR to each of a thousand nodes.
So the manager is started, then *settled*: it leads, its informers have synced, and every
controller's work queue has stayed empty, with nothing in progress, for ``QUIET`` seconds.

Every controller runs (``--controllers '*'``, as the supervisor runs them), with two settings
fitted to a thousand virtual nodes. The node lifecycle's grace periods are lengthened: the nodes
are Node objects with no kubelet behind them, so they never renew a Lease, and after the default
50 s the controller would rightly taint them unreachable and the scheduler refuse them (its
periodic monitoring still runs). And the cluster CIDR is wider than K3s' default 10.42.0.0/16,
which holds only 256 node /24s, as a cluster of that size would need: node IPAM would otherwise
retry the other nodes with backoff through the timed cells.

In the server shape the manager runs in a child process started with ``spawn``, as the supervisor
runs it apart from the API server and the scheduler: it connects with ``controller.kubeconfig``
(user ``system:kube-controller-manager``) over HTTPS and tells the parent over a pipe when it has
settled. In the edge shape the caller hands in an in-process client, as the edge profile does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench import http_load
from services.client import api
from services.controllers import component
from services.controllers import settings as settings_

log = logging.getLogger(__name__)

QUIET = 1.0  # seconds every work queue must stay empty for the manager to count as settled
SETTLE_DEADLINE = 120.0  # seconds to wait for that before timing anyway (with a warning)
STOP_DEADLINE = 30.0  # seconds the child process gets to stop before it is killed
NO_HEARTBEAT_GRACE = 3600.0  # seconds: virtual nodes never heartbeat; keep them Ready for the run
CLUSTER_CIDR = "10.64.0.0/10"  # 16,384 node /24s, clear of K3s' 10.42.0.0/16 and 10.43.0.0/16


def settings(data_dir: Path, *, kubeconfig: Path | None = None) -> settings_.ControllersSettings:
    return settings_.ControllersSettings(
        kubeconfig=kubeconfig,
        data_dir=data_dir,
        controllers=["*"],
        node_monitor_grace_period=NO_HEARTBEAT_GRACE,
        node_startup_grace_period=NO_HEARTBEAT_GRACE,
        cluster_cidr=CLUSTER_CIDR,
    )


def busy(manager: component.ControllerManager) -> int:
    """Keys queued or being processed across every controller of the current term."""
    term = manager.term
    if term is None:
        return 1  # not leading yet: not settled
    return sum(len(queue) + queue.processing for queue in term.queues().values())


async def settle(manager: component.ControllerManager) -> tuple[float, float]:
    """Wait until the manager leads, then until its queues are quiet. Returns the seconds each took."""
    started = time.monotonic()
    await manager.wait_active()
    active = time.monotonic() - started
    deadline = started + SETTLE_DEADLINE
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < QUIET:
        if time.monotonic() > deadline:
            log.warning("controllers: %d keys still queued after %.0fs; timing anyway", busy(manager),
                        SETTLE_DEADLINE)  # fmt: skip
            break
        if busy(manager):
            quiet_since = time.monotonic()
        await asyncio.sleep(0.05)
    return active, time.monotonic() - started


async def start(options: settings_.ControllersSettings, *, client: api.ApiClient | None = None
                ) -> tuple[component.ControllerManager, float, float]:  # fmt: skip
    """Start a manager (on ``client`` if given) and settle it: (manager, seconds to lead, to settle)."""
    manager = component.ControllerManager(options, api=client)
    await manager.start()
    try:
        active, settled = await settle(manager)
    except BaseException:
        await manager.stop()
        raise
    return manager, active, settled


# -- the server shape: a process of its own ----------------------------------------------------------


def serve(data_dir: str, kubeconfig: str, conn: Connection) -> None:
    """Child process: the settled manager, until the parent says stop."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with asyncio.Runner(loop_factory=http_load.loop_factory()) as runner:
        runner.run(_serve(Path(data_dir), Path(kubeconfig), conn))


async def _serve(data_dir: Path, kubeconfig: Path, conn: Connection) -> None:
    try:
        manager, active, settled = await start(settings(data_dir, kubeconfig=kubeconfig))
    except Exception as exc:
        conn.send(("failed", repr(exc)))
        raise
    try:
        conn.send(("settled", active, settled))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    finally:
        await manager.stop()


class ChildManager:
    """The parent's handle on the child process: its pid (for CPU accounting), start and stop."""

    def __init__(self, ctx: Any, data_dir: Path, kubeconfig: Path) -> None:
        self._conn, self._child_conn = ctx.Pipe()
        self.process = ctx.Process(
            target=serve, args=(str(data_dir), str(kubeconfig), self._child_conn), daemon=True
        )

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    async def start(self) -> tuple[float, float]:
        """Start the child and wait until its manager has settled: (seconds to lead, to settle)."""
        self.process.start()
        self._child_conn.close()  # the child holds it now; a child that dies makes recv raise EOFError
        reply = await asyncio.get_running_loop().run_in_executor(None, self._conn.recv)
        if reply[0] != "settled":
            raise RuntimeError(f"the controller manager process failed to start: {reply[1]}")
        return reply[1], reply[2]

    async def stop(self) -> None:
        if self.process.pid is None:
            return
        loop = asyncio.get_running_loop()
        if self.process.is_alive():
            self._conn.send("stop")
            await loop.run_in_executor(None, self.process.join, STOP_DEADLINE)
        if self.process.is_alive():
            self.process.kill()
            await loop.run_in_executor(None, self.process.join)
