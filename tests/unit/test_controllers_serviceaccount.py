"""The default ServiceAccount and the kube-root-ca.crt ConfigMap in every namespace."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import yaml

from services.client import events, fake, informer, resources
from services.controllers import base, podutil, serviceaccount
from services.controllers import settings as settings_

NSR, SA, CM = resources.NAMESPACES, resources.SERVICEACCOUNTS, resources.CONFIGMAPS
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@contextlib.asynccontextmanager
async def running(api: fake.FakeApi, **kwargs: Any) -> AsyncIterator[serviceaccount.ServiceAccountController]:
    factory = informer.InformerFactory(api)
    recorder = events.EventRecorder(api, component="service-account-controller")
    controller = serviceaccount.ServiceAccountController(**kwargs)
    controller.setup(base.ControllerContext(api=api, informers=factory, recorder=recorder, settings=None))
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


async def test_every_namespace_gets_the_account_and_the_ca() -> None:
    api = fake.FakeApi()
    await api.create(NSR, {"metadata": {"name": "old"}})
    async with running(api, ca_bundle=CA):
        await api.create(NSR, {"metadata": {"name": "new"}})
        for ns in ("old", "new"):
            await eventually(
                lambda ns=ns: (
                    (SA, ns, "default") in api.objects and (CM, ns, "kube-root-ca.crt") in api.objects
                )
            )
        cm = api.objects[(CM, "new", "kube-root-ca.crt")]
        assert cm["data"] == {"ca.crt": CA}
        assert cm["metadata"]["annotations"][serviceaccount.DESCRIPTION].startswith("Contains a CA bundle")


async def test_deleted_or_edited_objects_are_put_back() -> None:
    api = fake.FakeApi()
    await api.create(NSR, {"metadata": {"name": "ns"}})
    async with running(api, ca_bundle=CA):
        await eventually(
            lambda: (CM, "ns", "kube-root-ca.crt") in api.objects and (SA, "ns", "default") in api.objects
        )
        await api.delete(SA, "default", namespace="ns")
        await api.patch(CM, "kube-root-ca.crt", {"data": {"ca.crt": "nope"}}, namespace="ns")
        await eventually(lambda: (SA, "ns", "default") in api.objects)
        await eventually(lambda: api.objects[(CM, "ns", "kube-root-ca.crt")]["data"] == {"ca.crt": CA})


async def test_terminating_namespaces_are_left_alone() -> None:
    api = fake.FakeApi()
    await api.create(NSR, {"metadata": {"name": "going", "deletionTimestamp": podutil.format_time(podutil.now())},
                           "status": {"phase": "Terminating"}})  # fmt: skip
    async with running(api, ca_bundle=CA):
        await asyncio.sleep(0.1)
        assert (SA, "going", "default") not in api.objects


def test_root_ca_comes_from_the_file_the_data_dir_or_the_kubeconfig(tmp_path: Path) -> None:
    explicit = tmp_path / "ca.pem"
    explicit.write_text("explicit")
    assert serviceaccount.root_ca(settings_.ControllersSettings(root_ca_file=explicit)) == "explicit"
    tls = tmp_path / "data" / "server" / "tls"
    tls.mkdir(parents=True)
    (tls / "server-ca.crt").write_text("from data dir")
    assert (
        serviceaccount.root_ca(settings_.ControllersSettings(data_dir=tmp_path / "data")) == "from data dir"
    )
    kubeconfig = tmp_path / "kubeconfig"
    config = {"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k"}}],
              "clusters": [{"name": "k", "cluster": {"server": "https://x", "certificate-authority-data": base64.b64encode(CA.encode()).decode()}}]}  # fmt: skip
    kubeconfig.write_text(yaml.safe_dump(config))
    assert serviceaccount.root_ca(settings_.ControllersSettings(kubeconfig=kubeconfig)) == CA
    config["clusters"][0]["cluster"] = {"server": "https://x", "certificate-authority": "ca.pem"}
    kubeconfig.write_text(yaml.safe_dump(config))
    assert serviceaccount.ca_from_kubeconfig(kubeconfig) == "explicit"  # relative to the kubeconfig
    assert serviceaccount.root_ca(None) is None
