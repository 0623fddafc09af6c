"""K3s auto-deploy: every manifest under ``<data-dir>/server/manifests`` is applied as an Addon.

What K3s's deploy controller does (``k3s:pkg/deploy/controller.go``), followed rule by rule:

- **Which files.** Every ``.yaml``, ``.yml`` or ``.json`` file under the directory, in
  subdirectories too; files whose name starts with a dot are ignored, and so is ``x.yaml``
  when a file ``x.yaml.skip`` exists (anywhere: upstream matches skips by file name).
- **The Addon.** Each file is an ``Addon`` (``k3s.cattle.io/v1``) in ``kube-system`` named
  after the file's name up to its first dot (``apps/web.v2.yaml`` -> ``web``; upstream ignores
  the subdirectory, so equal names in two directories share one Addon). ``spec.source`` is the
  path, ``spec.checksum`` the SHA-256 of the content last applied, and annotation
  ``addon.k3s.cattle.io/gvks`` the kinds it applied.
- **Applying.** At start every file is applied; afterwards the directory is polled every
  ``interval`` seconds (5 s here, 15 s upstream, so a change lands well within 15 s), a file
  whose mtime moved is read, and it is applied when its checksum differs from the Addon's.
  Each object is applied by server-side apply with field manager ``k3s`` and ``force`` (the
  file is the source of truth, as wrangler's apply makes it), CRDs and namespaces first; a
  namespaced object without a namespace goes to ``default``, as ``kubectl apply`` puts it.
  Objects that were applied from the file before but are no longer in it are deleted.
  Events ``ApplyingManifest``, ``AppliedManifest``, ``ApplyManifestFailed`` (and
  ``ParseManifestFailed``) go on the Addon; a failed file is retried at the next poll.
- **Ownership.** As wrangler's apply marks them, every object carries the label
  ``objectset.rio.cattle.io/hash`` (a digest of the Addon's identity) and the annotations
  ``objectset.rio.cattle.io/owner-gvk``, ``-owner-name`` and ``-owner-namespace``: that is how
  the objects of an Addon are found for pruning and removal, whatever their namespace or
  scope. Objects in ``kube-system`` also get an ownerReference to the Addon, so the garbage
  collector removes them with it; elsewhere an ownerReference is not allowed (an owner must
  be in the dependent's namespace, and a cluster-scoped object cannot have a namespaced owner)
  and the labels do the job.
- **Removal.** ``--disable NAME`` (``disabled_addons``): a file of that name (or under a
  directory of that name) is deleted, with its Addon and every object it applied. A file that
  simply disappears leaves its Addon and objects alone, as upstream (``delete_removed=True``
  deletes them instead). ``disable(data_dir, names)`` removes such files without an API, for
  the supervisor to call before the controllers start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from services.client import clock as clock_
from services.client import errors, resources, store, types
from services.client.resources import Resource
from services.controllers import base
from services.machinery import meta

log = logging.getLogger(__name__)

NAMESPACE = "kube-system"
MANIFESTS = Path("server") / "manifests"
FIELD_MANAGER = "k3s"
POLL_INTERVAL = 5.0  # seconds between scans of the directory
EXTENSIONS = (".yaml", ".yml", ".json")
GVK_ANNOTATION = "addon.k3s.cattle.io/gvks"
HASH_LABEL = "objectset.rio.cattle.io/hash"
OWNER_GVK = "objectset.rio.cattle.io/owner-gvk"
OWNER_NAME = "objectset.rio.cattle.io/owner-name"
OWNER_NAMESPACE = "objectset.rio.cattle.io/owner-namespace"
ADDON_GVK = "k3s.cattle.io/v1, Kind=Addon"
# Applied first: what later objects need to exist (kinds, namespaces, identities).
APPLY_ORDER = {"Namespace": 0, "CustomResourceDefinition": 1, "ServiceAccount": 2, "ClusterRole": 3, "Role": 3,
               "ClusterRoleBinding": 4, "RoleBinding": 4, "ConfigMap": 5, "Secret": 5}  # fmt: skip


class ManifestError(Exception):
    """A manifest that cannot be parsed or applied (recorded as an event on its Addon)."""


# -- files -------------------------------------------------------------------------------------


def manifests_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / MANIFESTS


def addon_name(path: str | os.PathLike[str]) -> str:
    """The Addon a file becomes: its name up to the first dot (upstream's ``basename``)."""
    return Path(path).name.split(".", 1)[0]


def _is_manifest(name: str) -> bool:
    return name.lower().endswith(EXTENSIONS)


def should_skip(name: str, skips: set[str]) -> bool:
    return name.startswith(".") or name in skips or not _is_manifest(name)


def should_disable(base_dir: Path, path: Path, disabled: Iterable[str]) -> bool:
    """Whether ``--disable`` names this file: by a directory on its way, or by its name
    without the extension (upstream's ``shouldDisableFile``)."""
    names = set(disabled)
    if not names:
        return False
    parts = path.relative_to(base_dir).parts
    if any(str(Path(*parts[:i])) in names for i in range(1, len(parts))):
        return True
    return _is_manifest(path.name) and path.name.rsplit(".", 1)[0] in names


@dataclasses.dataclass
class Scan:
    apply: list[Path]  # manifests to (maybe) apply, sorted
    disable: list[Path]  # manifests that ``--disable`` names


def scan(base_dir: Path, disabled: Iterable[str] = ()) -> Scan:
    files: list[Path] = []
    for root, _dirs, names in os.walk(base_dir, followlinks=True):
        files += [Path(root) / n for n in names]
    files.sort()
    skips = {f.name.removesuffix(".skip") for f in files if f.name.endswith(".skip")}
    disabled = list(disabled)
    found = Scan([], [])
    for path in files:
        if not path.is_file():
            continue
        if should_disable(base_dir, path, disabled):
            found.disable.append(path)
        elif not should_skip(path.name, skips):
            found.apply.append(path)
    return found


def disable(data_dir: str | os.PathLike[str], names: Iterable[str]) -> list[Path]:
    """Remove the manifests ``--disable`` names (the controller then deletes their Addons and
    objects); returns the files removed. Safe to call before anything else runs."""
    base_dir = manifests_dir(data_dir)
    if not base_dir.is_dir():
        return []
    removed = []
    for path in scan(base_dir, names).disable:
        path.unlink(missing_ok=True)
        removed.append(path)
        log.info("removed disabled manifest %s", path)
    return removed


def checksum(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def parse(content: bytes) -> list[dict[str, Any]]:
    """The objects of a YAML (multi-document) or JSON manifest; ``List`` kinds are expanded."""
    try:
        documents = list(yaml.safe_load_all(content))
    except yaml.YAMLError as exc:
        raise ManifestError(f"error parsing YAML: {exc}") from exc
    objects: list[dict[str, Any]] = []
    for doc in documents:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(f"expected an object, found {type(doc).__name__}")
        items = doc.get("items") if str(doc.get("kind", "")).endswith("List") else [doc]
        for obj in items or ():
            if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind"):
                raise ManifestError("Object 'Kind' is missing in an object of the manifest")
            if not (obj.get("metadata") or {}).get("name"):
                raise ManifestError(f"a {obj['kind']} in the manifest has no metadata.name")
            objects.append(obj)
    return objects


def set_hash(addon: dict[str, Any]) -> str:
    """The value of ``objectset.rio.cattle.io/hash`` for the objects of ``addon``."""
    md = addon["metadata"]
    return hashlib.sha1(
        f"{ADDON_GVK}/{md['namespace']}/{md['name']}".encode(), usedforsecurity=False
    ).hexdigest()


def gvk_string(api_version: str, kind: str) -> str:
    """``group/version, Kind=K`` (``v1, Kind=K`` for the core group), as upstream writes GVKs."""
    return f"{api_version}, Kind={kind}"


def parse_gvks(text: str | None) -> set[tuple[str, str]]:
    found = set()
    for part in (text or "").split(";"):
        api_version, sep, kind = part.strip().partition(", Kind=")
        if sep and api_version and kind:
            found.add((api_version, kind))
    return found


# -- the controller ----------------------------------------------------------------------------


class AddonController:
    """Polls the manifests directory; not a key queue: the files are the work list."""

    name = "addons"

    def __init__(
        self,
        *,
        clock: types.Clock | None = None,
        interval: float = POLL_INTERVAL,
        disabled: Iterable[str] = (),
        delete_removed: bool = False,
        directory: str | os.PathLike[str] | None = None,
    ) -> None:
        self.clock = clock or clock_.RealClock()
        self.interval = interval
        self.disabled = set(disabled)
        self.delete_removed = delete_removed
        self.directory = Path(directory) if directory is not None else None
        self.ctx: base.ControllerContext | None = None
        self._mtimes: dict[Path, int] = {}
        self._kinds: dict[tuple[str, str], Resource] = {(r.api_version, r.kind): r for r in resources.ALL}

    def setup(self, ctx: base.ControllerContext) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.disabled |= set(getattr(settings, "disabled_addons", None) or ())
        self.delete_removed = self.delete_removed or bool(getattr(settings, "addons_delete_removed", False))
        data_dir = getattr(settings, "data_dir", None)
        if self.directory is None and data_dir is not None:
            self.directory = manifests_dir(data_dir)
        self.addons = ctx.informers.informer(resources.ADDONS, namespace=NAMESPACE)

    async def run(self) -> None:
        if self.directory is None:
            log.info("addons: no data dir, so no manifests directory to watch")
            await asyncio.Event().wait()
            return
        log.info("addons: watching %s every %.0fs", self.directory, self.interval)
        force = True
        while True:
            try:
                await self.sync(force=force)
                force = False
            except (errors.ApiError, errors.ClientError, OSError) as exc:
                log.warning("addons: scanning %s failed: %s", self.directory, exc)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Python 3.11's wait_for may swallow a cancellation inside a request (gh-86296).
                raise asyncio.CancelledError
            await self.clock.sleep(self.interval)

    async def sync(self, *, force: bool = False) -> None:
        """One scan: remove what is disabled, apply what changed (every file when ``force``)."""
        assert self.directory is not None
        found = (
            await asyncio.to_thread(scan, self.directory, self.disabled)
            if self.directory.is_dir()
            else Scan([], [])
        )
        for path in found.disable:
            await self.remove(addon_name(path), path=path)
        for addon in list(self.addons.store.list()):
            name = addon["metadata"]["name"]
            if name in self.disabled:
                await self.remove(name)
            elif self.delete_removed and self._orphaned(addon, found):
                await self.remove(name)
        for path in found.apply:
            try:
                mtime = path.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            if not force and mtime != 0 and self._mtimes.get(path) == mtime:
                continue
            try:
                await self.deploy(path, compare=not force)
            except (ManifestError, errors.ApiError, errors.ClientError, OSError) as exc:
                log.warning("addons: applying %s failed: %s", path, exc)
                continue
            self._mtimes[path] = mtime

    def _orphaned(self, addon: dict[str, Any], found: Scan) -> bool:
        source = (addon.get("spec") or {}).get("source") or ""
        assert self.directory is not None
        mine = source.startswith(str(self.directory) + os.sep)
        return mine and not any(str(p) == source for p in found.apply)

    # -- apply ---------------------------------------------------------------------------------

    async def deploy(self, path: Path, *, compare: bool = True) -> None:
        """Apply one manifest file through its Addon (``compare``: only if its checksum moved)."""
        assert self.ctx is not None
        name = addon_name(path)
        if not meta.is_dns1123_subdomain(name):
            raise ManifestError(
                f"{path}: {name!r} is not a valid Addon name (a lowercase RFC 1123 subdomain)"
            )
        addon = await self._addon(name, path)
        content = await asyncio.to_thread(path.read_bytes)
        digest = checksum(content)
        if compare and digest == (addon.get("spec") or {}).get("checksum"):
            return
        recorder = self.ctx.recorder
        try:
            objects = parse(content)
        except ManifestError as exc:
            recorder.warning(addon, "ParseManifestFailed", f'Parse manifest at "{path}" failed: {exc}')
            raise
        recorder.normal(addon, "ApplyingManifest", f'Applying manifest at "{path}"')
        previous = parse_gvks((addon["metadata"].get("annotations") or {}).get(GVK_ANNOTATION))
        try:
            gvks = await self.apply(addon, objects, previous=previous)
        except (ManifestError, errors.ApiError) as exc:
            recorder.warning(addon, "ApplyManifestFailed", f'Applying manifest at "{path}" failed: {exc}')
            raise
        recorder.normal(addon, "AppliedManifest", f'Applied manifest at "{path}"')
        log.info("addons: applied %s (%d objects)", path, len(objects))
        changed = store.copy(addon)
        changed.setdefault("spec", {}).update(source=str(path), checksum=digest)
        changed["metadata"].setdefault("annotations", {})[GVK_ANNOTATION] = ";".join(
            gvk_string(*g) for g in gvks
        )
        await self.ctx.api.update(resources.ADDONS, changed)

    async def _addon(self, name: str, path: Path) -> dict[str, Any]:
        """The Addon from the API (not the cache: it may lag behind our own last update)."""
        assert self.ctx is not None
        try:
            return await self.ctx.api.get(resources.ADDONS, name, namespace=NAMESPACE)
        except errors.ApiError as exc:
            if not errors.is_not_found(exc):
                raise
        body = {"apiVersion": resources.ADDONS.api_version, "kind": "Addon",
                "metadata": {"name": name, "namespace": NAMESPACE}, "spec": {"source": str(path)}}  # fmt: skip
        return await self.ctx.api.create(resources.ADDONS, body)

    async def apply(
        self,
        addon: dict[str, Any],
        objects: list[dict[str, Any]],
        *,
        previous: set[tuple[str, str]] = frozenset(),
    ) -> list[tuple[str, str]]:
        """Apply ``objects`` as ``addon``'s set, delete what the set held before but no more;
        returns the kinds applied, in order."""
        assert self.ctx is not None
        desired: set[tuple[Resource, str, str]] = set()
        gvks: list[tuple[str, str]] = []
        for obj in sorted(objects, key=lambda o: APPLY_ORDER.get(o["kind"], 9)):
            resource = await self.resolve(obj["apiVersion"], obj["kind"])
            body = self._owned(addon, obj, resource)
            md = body["metadata"]
            await self.ctx.api.patch(resource, md["name"], body, namespace=md.get("namespace"),
                                     patch_type="apply", field_manager=FIELD_MANAGER, force=True)  # fmt: skip
            desired.add((resource, md.get("namespace", ""), md["name"]))
            if (obj["apiVersion"], obj["kind"]) not in gvks:
                gvks.append((obj["apiVersion"], obj["kind"]))
        await self.prune(addon, {*previous, *gvks}, keep=desired)
        return gvks

    def _owned(self, addon: dict[str, Any], obj: dict[str, Any], resource: Resource) -> dict[str, Any]:
        body = store.copy(obj)
        md = body.setdefault("metadata", {})
        if resource.namespaced:
            md["namespace"] = md.get("namespace") or "default"
        else:
            md.pop("namespace", None)
        md.setdefault("labels", {})[HASH_LABEL] = set_hash(addon)
        annotations = md.setdefault("annotations", {})
        annotations.update(
            {OWNER_GVK: ADDON_GVK, OWNER_NAME: addon["metadata"]["name"], OWNER_NAMESPACE: NAMESPACE}
        )
        if resource.namespaced and md["namespace"] == NAMESPACE:
            ref = {"apiVersion": resources.ADDONS.api_version, "kind": "Addon",
                   "name": addon["metadata"]["name"], "uid": addon["metadata"]["uid"]}  # fmt: skip
            refs = [r for r in md.get("ownerReferences") or () if r.get("uid") != ref["uid"]]
            md["ownerReferences"] = [*refs, ref]
        return body

    async def prune(
        self, addon: dict[str, Any], gvks: Iterable[tuple[str, str]], *, keep: set[tuple[Resource, str, str]]
    ) -> None:
        """Delete the objects of ``addon``'s set (by label, in every namespace) not in ``keep``."""
        assert self.ctx is not None
        selector = f"{HASH_LABEL}={set_hash(addon)}"
        for api_version, kind in sorted(set(gvks)):
            try:
                resource = await self.resolve(api_version, kind)
            except ManifestError:
                continue  # the kind is gone (a CRD removed): nothing of it to delete
            listed = await self.ctx.api.list(resource, label_selector=selector)
            for obj in listed.get("items") or ():
                md = obj["metadata"]
                if (resource, md.get("namespace", ""), md["name"]) in keep:
                    continue
                if (md.get("annotations") or {}).get(OWNER_NAME) != addon["metadata"]["name"]:
                    continue
                log.info("addons: deleting %s %s/%s, no longer in %s", kind, md.get("namespace", ""),
                         md["name"], addon["metadata"]["name"])  # fmt: skip
                try:
                    await self.ctx.api.delete(resource, md["name"], namespace=md.get("namespace"),
                                              propagation_policy="Background")  # fmt: skip
                except errors.ApiError as exc:
                    if not errors.is_not_found(exc):
                        raise

    async def remove(self, name: str, *, path: Path | None = None) -> None:
        """Delete an Addon's objects, its file (if given) and the Addon itself."""
        assert self.ctx is not None
        try:
            addon = await self.ctx.api.get(resources.ADDONS, name, namespace=NAMESPACE)
        except errors.ApiError as exc:
            if not errors.is_not_found(exc):
                raise
            addon = None
        gvks = set()
        if path is not None:
            try:
                gvks |= {
                    (o["apiVersion"], o["kind"]) for o in parse(await asyncio.to_thread(path.read_bytes))
                }
            except (ManifestError, OSError) as exc:
                log.warning("addons: reading %s before removing it failed: %s", path, exc)
        if addon is not None:
            gvks |= parse_gvks((addon["metadata"].get("annotations") or {}).get(GVK_ANNOTATION))
            await self.prune(addon, gvks, keep=set())
        if path is not None:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        if addon is None:
            return
        log.info("addons: removing addon %s", name)
        source = (addon.get("spec") or {}).get("source") or path
        self.ctx.recorder.normal(addon, "DeletingManifest", f'Deleting manifest at "{source}"')
        try:
            await self.ctx.api.delete(resources.ADDONS, name, namespace=NAMESPACE)
        except errors.ApiError as exc:
            if not errors.is_not_found(exc):
                raise

    # -- kinds ---------------------------------------------------------------------------------

    async def resolve(self, api_version: str, kind: str) -> Resource:
        """The resource serving ``kind``: built-in, or found by API discovery (custom resources)."""
        found = self._kinds.get((api_version, kind))
        if found is not None:
            return found
        assert self.ctx is not None
        request = getattr(self.ctx.api, "request", None)
        if request is not None:
            path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            try:
                listing = await request("GET", path)
            except errors.ApiError as exc:
                if exc.code != 404:
                    raise
                listing = {}
            group, _, version = api_version.rpartition("/")
            for entry in listing.get("resources") or ():
                if entry.get("kind") == kind and "/" not in entry.get("name", ""):
                    found = Resource(group, version, entry["name"], bool(entry.get("namespaced")), kind)
                    self._kinds[(api_version, kind)] = found
                    return found
        raise ManifestError(f'no matches for kind "{kind}" in version "{api_version}"')


def new() -> base.Controller:
    return AddonController()
