"""K3s auto-deploy manifests: which files, Addon naming, apply, prune, disable, events."""

from __future__ import annotations

import asyncio
import os
import types
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from services.client import errors, events, fake, informer, resources
from services.controllers import addons, base

CM, ADDONS = resources.CONFIGMAPS, resources.ADDONS
ROLES = resources.Resource("rbac.authorization.k8s.io", "v1", "clusterroles", False, "ClusterRole")

MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config}
data: {greeting: hello}
---
# a comment-only document is skipped
---
apiVersion: v1
kind: ConfigMap
metadata: {name: system-config, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: web-reader}
rules: []
"""


class ApplyingFakeApi(fake.FakeApi):
    """The in-memory API, with server-side apply creating what is missing (as the server does)."""

    async def patch(self, resource: resources.Resource, name: str, body: Mapping[str, Any] | Sequence[Any], *,
                    namespace: str | None = None, patch_type: str = "merge", **kwargs: Any) -> dict[str, Any]:  # fmt: skip
        if patch_type == "apply":
            try:
                await self.get(resource, name, namespace=namespace)
            except errors.ApiError as exc:
                if not errors.is_not_found(exc):
                    raise
                return await self.create(resource, body, namespace=namespace)  # type: ignore[arg-type]
        return await super().patch(resource, name, body, namespace=namespace, patch_type=patch_type, **kwargs)

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Discovery of the one group the tests use beyond the client's built-in kinds."""
        if (method, path) == ("GET", "/apis/rbac.authorization.k8s.io/v1"):
            return {"kind": "APIResourceList", "groupVersion": "rbac.authorization.k8s.io/v1", "resources": [
                {"name": "clusterroles", "kind": "ClusterRole", "namespaced": False},
                {"name": "clusterroles/status", "kind": "ClusterRole", "namespaced": False}]}  # fmt: skip
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")


def write(path: Path, text: str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- files -------------------------------------------------------------------------------------


def test_which_files_are_manifests(tmp_path: Path) -> None:
    for name in ("a.yaml", "b.yml", "c.JSON", ".hidden.yaml", "notes.txt", "sub/deeper/e.yaml", "x.yaml",
                 "x.yaml.skip", "traefik.yaml", "off/f.yaml"):  # fmt: skip
        write(tmp_path / name)
    found = addons.scan(tmp_path, ["traefik", "off"])
    assert [p.relative_to(tmp_path).as_posix() for p in found.apply] == [
        "a.yaml",
        "b.yml",
        "c.JSON",
        "sub/deeper/e.yaml",
    ]
    assert [p.relative_to(tmp_path).as_posix() for p in found.disable] == ["off/f.yaml", "traefik.yaml"]


def test_addon_names_stop_at_the_first_dot() -> None:
    assert addons.addon_name("/m/apps/web.v2.yaml") == "web"
    assert addons.addon_name("coredns.yaml") == "coredns"


def test_disable_removes_the_files(tmp_path: Path) -> None:
    base_dir = addons.manifests_dir(tmp_path)
    keep, gone = write(base_dir / "coredns.yaml"), write(base_dir / "traefik.yaml")
    assert addons.disable(tmp_path, ["traefik"]) == [gone]
    assert keep.exists() and not gone.exists()
    assert addons.disable(tmp_path / "nowhere", ["traefik"]) == []


def test_parse_manifests() -> None:
    objects = addons.parse(MANIFEST.encode())
    assert [o["metadata"]["name"] for o in objects] == ["web-config", "system-config", "web-reader"]
    listed = addons.parse(b'{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Secret", '
                          b'"metadata": {"name": "s"}}]}')  # fmt: skip
    assert listed[0]["kind"] == "Secret"
    for bad in (
        b"a: [",
        b"- 1\n- 2\n",
        b"kind: ConfigMap\nmetadata: {name: x}\n",
        b"apiVersion: v1\nkind: ConfigMap\n",
    ):
        with pytest.raises(addons.ManifestError):
            addons.parse(bad)


# -- the controller ----------------------------------------------------------------------------


class Env:
    def __init__(self, data_dir: Path, **options: Any) -> None:
        self.api = ApplyingFakeApi()
        self.factory = informer.InformerFactory(self.api)
        self.recorder = events.EventRecorder(self.api, component="test")
        self.controller = addons.AddonController(**options)
        settings = types.SimpleNamespace(data_dir=data_dir, disabled_addons=["traefik"])
        self.controller.setup(base.ControllerContext(self.api, self.factory, self.recorder, settings))
        self.dir = addons.manifests_dir(data_dir)

    async def sync(self, *, force: bool = False) -> None:
        for _ in range(30):
            await asyncio.sleep(0)
        await self.controller.sync(force=force)
        for _ in range(30):
            await asyncio.sleep(0)

    def get(self, resource: resources.Resource, name: str, namespace: str = "") -> dict[str, Any] | None:
        return self.api.objects.get((resource, namespace, name))

    def reasons(self) -> list[tuple[str, int]]:
        """Events in order, with their counts (the recorder folds repeats into one Event)."""
        found = [o for (r, _ns, _n), o in self.api.objects.items() if r == resources.EVENTS]
        return [(e["reason"], e["count"]) for e in sorted(found, key=lambda e: e["metadata"]["name"])]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    made = Env(tmp_path)
    await made.recorder.start()
    await made.factory.start()
    try:
        yield made
    finally:
        await made.recorder.stop()
        await made.factory.stop()


async def test_a_manifest_becomes_an_addon_and_its_objects(env: Env) -> None:
    path = write(env.dir / "web.yaml", MANIFEST)
    await env.sync(force=True)
    addon = env.get(ADDONS, "web", "kube-system")
    assert addon is not None
    assert addon["spec"] == {"source": str(path), "checksum": addons.checksum(MANIFEST.encode())}
    assert addon["metadata"]["annotations"][addons.GVK_ANNOTATION] == (
        "rbac.authorization.k8s.io/v1, Kind=ClusterRole;v1, Kind=ConfigMap"
    )  # in apply order
    config = env.get(CM, "web-config", "default")
    assert config is not None and config["data"] == {"greeting": "hello"}
    md = config["metadata"]
    assert md["labels"][addons.HASH_LABEL] == addons.set_hash(addon)
    assert md["annotations"][addons.OWNER_NAME] == "web"
    assert md["annotations"][addons.OWNER_GVK] == "k3s.cattle.io/v1, Kind=Addon"
    assert "ownerReferences" not in md  # another namespace: no owner reference
    system = env.get(CM, "system-config", "kube-system")
    assert system is not None and system["metadata"]["ownerReferences"][0]["uid"] == addon["metadata"]["uid"]
    role = env.get(ROLES, "web-reader")
    assert role is not None and "ownerReferences" not in role["metadata"]
    await env.recorder.stop()
    assert env.reasons() == [("ApplyingManifest", 1), ("AppliedManifest", 1)]


async def test_unchanged_files_are_not_applied_again(env: Env) -> None:
    write(env.dir / "web.yaml", MANIFEST)
    await env.sync(force=True)
    patches = env.api.requests.count(("patch", "configmaps"))
    await env.sync()
    assert env.api.requests.count(("patch", "configmaps")) == patches
    os.utime(env.dir / "web.yaml", ns=(1, 1))  # mtime moved, content the same: checksum says no
    await env.sync()
    assert env.api.requests.count(("patch", "configmaps")) == patches


async def test_a_changed_file_is_applied_and_dropped_objects_pruned(env: Env) -> None:
    path = write(env.dir / "web.yaml", MANIFEST)
    await env.sync(force=True)
    changed = MANIFEST.replace("greeting: hello", "greeting: bonjour").split("---\n# a comment")[0]
    path.write_text(changed)
    os.utime(path, ns=(10**18, 10**18))
    await env.sync()
    config = env.get(CM, "web-config", "default")
    assert config is not None and config["data"] == {"greeting": "bonjour"}
    assert env.get(CM, "system-config", "kube-system") is None
    assert env.get(ROLES, "web-reader") is None
    addon = env.get(ADDONS, "web", "kube-system")
    assert addon is not None and addon["spec"]["checksum"] == addons.checksum(changed.encode())


async def test_a_broken_manifest_is_reported_and_retried(env: Env) -> None:
    path = write(env.dir / "bad.yaml", "apiVersion: v1\nkind: Gizmo\nmetadata: {name: g}\n")
    await env.sync(force=True)
    addon = env.get(ADDONS, "bad", "kube-system")
    assert addon is not None and "checksum" not in addon["spec"]
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: g}\n")
    await env.sync()
    assert env.get(CM, "g", "default") is not None
    await env.recorder.stop()
    assert env.reasons() == [("ApplyingManifest", 2), ("ApplyManifestFailed", 1), ("AppliedManifest", 1)]


async def test_skip_files_and_disabled_addons(env: Env) -> None:
    write(env.dir / "web.yaml", MANIFEST)
    write(env.dir / "web.yaml.skip", "")
    traefik = write(env.dir / "traefik.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: t}\n")
    await env.sync(force=True)
    assert env.get(ADDONS, "web", "kube-system") is None
    assert env.get(ADDONS, "traefik", "kube-system") is None and not traefik.exists()


async def test_disabling_an_applied_addon_removes_everything(tmp_path: Path) -> None:
    first = Env(tmp_path)
    await first.factory.start()
    path = write(first.dir / "traefik.yaml", MANIFEST)
    first.controller.disabled.clear()
    await first.sync(force=True)
    assert first.get(ADDONS, "traefik", "kube-system") is not None
    first.controller.disabled.add("traefik")
    await first.sync()
    assert not path.exists()
    assert first.get(ADDONS, "traefik", "kube-system") is None
    assert first.get(CM, "web-config", "default") is None and first.get(ROLES, "web-reader") is None
    await first.factory.stop()


async def test_a_removed_file_keeps_its_objects_unless_asked(tmp_path: Path) -> None:
    for delete_removed in (False, True):
        env = Env(tmp_path / str(delete_removed), delete_removed=delete_removed)
        await env.factory.start()
        path = write(env.dir / "web.yaml", MANIFEST)
        await env.sync(force=True)
        path.unlink()
        await env.sync()
        assert (env.get(ADDONS, "web", "kube-system") is None) is delete_removed
        assert (env.get(CM, "web-config", "default") is None) is delete_removed
        await env.factory.stop()
