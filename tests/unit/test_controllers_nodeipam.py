"""Node IPAM: podCIDRs from the cluster CIDR, never twice, remembered from the nodes themselves."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from services.client import events, fake, informer, resources
from services.controllers import base, nodeipam
from services.controllers import settings as settings_

NODES = resources.NODES


def test_cidr_set_allocates_in_order_skips_taken_and_rotates() -> None:
    cidrs = nodeipam.CidrSet("10.42.0.0/22", 24)
    assert cidrs.size == 4
    assert cidrs.occupy("10.42.1.0/24")
    assert not cidrs.occupy("10.43.0.0/24") and not cidrs.occupy("10.42.0.0/25")
    assert [str(cidrs.allocate()) for _ in range(3)] == ["10.42.0.0/24", "10.42.2.0/24", "10.42.3.0/24"]
    assert cidrs.allocate() is None and cidrs.free == 0
    cidrs.release("10.42.0.0/24")
    assert str(cidrs.allocate()) == "10.42.0.0/24"


def test_dual_stack_has_one_set_per_family() -> None:
    sets = nodeipam.cidr_sets("10.42.0.0/16,2001:cafe:42::/56", mask_v4=24, mask_v6=64)
    assert [(s.family, s.mask, s.size) for s in sets] == [(4, 24, 256), (6, 64, 256)]
    assert str(sets[1].allocate()) == "2001:cafe:42::/64"
    with pytest.raises(ValueError):
        nodeipam.CidrSet("10.42.0.0/24", 16)


@contextlib.asynccontextmanager
async def running(api: fake.FakeApi, **settings: Any) -> AsyncIterator[nodeipam.NodeIpamController]:
    factory = informer.InformerFactory(api)
    recorder = events.EventRecorder(api, component="node-controller")
    controller = nodeipam.NodeIpamController()
    controller.setup(base.ControllerContext(api=api, informers=factory, recorder=recorder,
                                            settings=settings_.ControllersSettings(**settings)))  # fmt: skip
    await recorder.start()
    await factory.start()
    task = asyncio.create_task(controller.run())
    try:
        yield controller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await factory.stop()
        await recorder.stop()


async def eventually(check: Callable[[], Any], *, within: float = 3.0) -> Any:
    deadline = time.monotonic() + within
    while not (result := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)
    return result


def cidr_of(api: fake.FakeApi, name: str) -> str | None:
    return (api.objects[(NODES, "", name)].get("spec") or {}).get("podCIDR")


async def test_existing_assignments_are_respected_and_new_nodes_get_free_ones() -> None:
    api = fake.FakeApi()
    await api.create(
        NODES,
        {"metadata": {"name": "old"}, "spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"]}},
    )
    async with running(api):
        for name in ("a", "b"):
            await api.create(NODES, {"metadata": {"name": name}})
        await eventually(lambda: cidr_of(api, "a") and cidr_of(api, "b"))
        assert {cidr_of(api, "a"), cidr_of(api, "b")} == {"10.42.1.0/24", "10.42.2.0/24"}
        assert api.objects[(NODES, "", "a")]["spec"]["podCIDRs"] == [cidr_of(api, "a")]


async def test_a_full_range_is_reported_and_a_deleted_node_frees_its_cidr() -> None:
    api = fake.FakeApi()
    async with running(api, cluster_cidr="10.42.0.0/24", node_cidr_mask=25):
        for name in ("a", "b"):
            await api.create(NODES, {"metadata": {"name": name}})
        await eventually(lambda: cidr_of(api, "a") and cidr_of(api, "b"))
        await api.create(NODES, {"metadata": {"name": "c"}})

        def reasons() -> set[str]:
            return {o["reason"] for (r, _, _), o in api.objects.items() if r == resources.EVENTS}

        await eventually(lambda: "CIDRNotAvailable" in reasons())
        freed = cidr_of(api, "a")
        await api.delete(NODES, "a")
        await eventually(lambda: cidr_of(api, "c") == freed, within=5)
        assert ipaddress.ip_network(freed).prefixlen == 25


async def test_allocation_can_be_turned_off() -> None:
    api = fake.FakeApi()
    async with running(api, allocate_node_cidrs=False):
        await api.create(NODES, {"metadata": {"name": "a"}})
        await asyncio.sleep(0.05)
        assert cidr_of(api, "a") is None
