"""The controller manager: registry and --controllers, settings, lifecycle, leadership, health."""

from __future__ import annotations

import asyncio
from typing import Any

import pydantic
import pytest

from services.client import fake, resources
from services.controllers import base, component
from services.controllers import settings as settings_


def settings(**overrides: Any) -> settings_.ControllersSettings:
    values: dict[str, Any] = {"leader_elect_retry_period": 0.2, "leader_elect_renew_deadline": 1.0,
                              "leader_elect_lease_duration": 2.0}  # fmt: skip
    values.update(overrides)
    return settings_.ControllersSettings(**values)


class Probe:
    """A controller that records its life and watches config maps."""

    name = "probe"
    workers = 2

    def __init__(self, log: list[str], *, crash: bool = False) -> None:
        self.log = log
        self.crash = crash
        self.ctx: base.ControllerContext | None = None

    def setup(self, ctx: base.ControllerContext) -> None:
        self.ctx = ctx
        ctx.informers.informer(resources.CONFIGMAPS)
        self.log.append(f"setup workers={self.workers}")

    async def run(self) -> None:
        self.log.append("run")
        if self.crash:
            raise RuntimeError("boom")
        try:
            await asyncio.Event().wait()
        finally:
            self.log.append("stopped")


# -- registry and selection ---------------------------------------------------------------------------


def test_registry_has_the_builtins_and_skips_missing_modules() -> None:
    assert set(component.BUILTIN) <= set(component.CONTROLLERS)
    assert component._optional("no_such_controller_module") is None
    for name, factory in component.CONTROLLERS.items():
        assert callable(factory), name


@pytest.mark.parametrize(
    "selection,name,expected",
    [
        (["*"], "deployment", True),
        (["*", "-deployment"], "deployment", False),
        (["-deployment", "*"], "deployment", False),
        (["deployment"], "replicaset", False),
        (["deployment-controller"], "deployment", True),
        (["*,-endpoint"], "endpoints", False),
        (["garbage-collector"], "garbagecollector", True),
        ([], "deployment", False),
    ],
)
def test_controllers_flag_follows_kube_controller_manager(
    selection: list[str], name: str, expected: bool
) -> None:
    assert component.is_enabled(name, selection) is expected


def test_enabled_keeps_registry_order() -> None:
    available = {"a": Probe, "b": Probe, "c": Probe}
    assert component.enabled(["*", "-b"], available) == ["a", "c"]  # type: ignore[arg-type]


# -- settings ---------------------------------------------------------------------------------------------


def test_settings_defaults_and_checks() -> None:
    made = settings_.ControllersSettings()
    assert (made.cluster_cidr, made.node_cidr_mask, made.node_monitor_grace_period) == (
        "10.42.0.0/16",
        24,
        50.0,
    )
    assert made.pod_eviction_timeout == 300.0 and made.leader_elect and made.controllers == ["*"]
    assert made.workers_for("deployment", 1) == 5 and made.workers_for("unknown", 3) == 3
    assert (made.health_host, made.health_port) == ("127.0.0.1", 0)
    for bad in ({"health_address": "0.0.0.0:10257"}, {"health_address": "nope"}, {"cluster_cidr": "10.42.0.0/33"},
                {"unknown_field": 1}):  # fmt: skip
        with pytest.raises(pydantic.ValidationError):
            settings_.ControllersSettings(**bad)


# -- lifecycle -----------------------------------------------------------------------------------------------


async def test_leads_runs_and_releases_the_lease_on_stop() -> None:
    api = fake.FakeApi()
    log: list[str] = []
    manager = component.ControllerManager(
        settings(workers={"probe": 7}),
        api=api,
        controllers={"probe": lambda: Probe(log)},
        identity="me",  # type: ignore[arg-type]
    )
    async with manager:
        await asyncio.wait_for(manager.wait_active(), 5)
        assert manager.is_leader and list(manager.controllers) == ["probe"]
        lease = api.objects[(resources.LEASES, "kube-system", "kube-controller-manager")]
        assert lease["spec"]["holderIdentity"] == "me"
        assert log == ["setup workers=7", "run"]
    assert log[-1] == "stopped"
    assert (
        api.objects[(resources.LEASES, "kube-system", "kube-controller-manager")]["spec"]["holderIdentity"]
        == ""
    )
    assert manager.state is component.State.STOPPED


async def test_a_standby_takes_over_when_the_leader_stops() -> None:
    api = fake.FakeApi()
    first_log: list[str] = []
    second_log: list[str] = []
    first = component.ControllerManager(
        settings(), api=api, controllers={"probe": lambda: Probe(first_log)}, identity="one"
    )  # type: ignore[arg-type]
    second = component.ControllerManager(
        settings(), api=api, controllers={"probe": lambda: Probe(second_log)}, identity="two"
    )  # type: ignore[arg-type]
    await first.start()
    await asyncio.wait_for(first.wait_active(), 5)
    await second.start()
    try:
        await asyncio.sleep(0.5)
        assert not second.is_leader and second_log == []
        await first.stop()
        await asyncio.wait_for(second.wait_active(), 5)
        assert second_log[:2] == ["setup workers=2", "run"]
    finally:
        await second.stop()
        await first.stop()


async def test_a_crashing_controller_fails_the_manager() -> None:
    api = fake.FakeApi()
    manager = component.ControllerManager(
        settings(leader_elect=False),
        api=api,
        controllers={"probe": lambda: Probe([], crash=True)},  # type: ignore[arg-type]
    )
    await manager.start()
    try:
        await asyncio.wait_for(manager.wait(), 5)
        assert manager.state is component.State.FAILED
        assert manager._health.respond("GET", "/healthz").code == 500
    finally:
        await manager.stop()


async def test_health_and_metrics_answer_on_loopback() -> None:
    api = fake.FakeApi()
    manager = component.ControllerManager(
        settings(leader_elect=False), api=api, controllers={"probe": lambda: Probe([])}
    )  # type: ignore[arg-type]
    async with manager:
        await asyncio.wait_for(manager.wait_active(), 5)

        async def get(request: bytes) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", manager.health_port)
            writer.write(request)
            answer = await reader.read()
            writer.close()
            await writer.wait_closed()
            return answer

        assert (await get(b"GET /healthz HTTP/1.1\r\n\r\n")).endswith(b"\r\n\r\nok")
        metrics = (await get(b"GET /metrics HTTP/1.1\r\n\r\n")).decode()
        assert 'controller_manager_informer_objects{resource="configmaps"} 0.0' in metrics
        assert (await get(b"POST /healthz HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
        assert (await get(b"GET /nothing HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
        assert (await get(b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")


async def test_without_kubeconfig_or_client_start_fails_cleanly() -> None:
    manager = component.ControllerManager(settings(), controllers={})
    with pytest.raises(ValueError):
        await manager.start()
    assert manager.state is component.State.STOPPED
