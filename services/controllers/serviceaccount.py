"""Every namespace gets ServiceAccount ``default`` and ConfigMap ``kube-root-ca.crt``.

Both are what pods take for granted: admission names the ``default`` account when a pod names
none, and the projected service account volume mounts ``ca.crt`` from the ConfigMap to verify
the API server. Upstream splits this into the serviceaccount and root-ca-cert-publisher
controllers; here one controller keyed by namespace does both. A namespace being deleted is
left alone (the namespace controller is emptying it). A missing or edited object is put back:
the two informers watch only objects of these two names, so they cost a few entries per
namespace.

The CA bundle is the API server's serving CA: ``--root-ca-file`` when given, else
``<data-dir>/server/tls/server-ca.crt``, else the certificate authority of the manager's own
kubeconfig, which is the same file under the supervisor.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import yaml

from services.client import errors, resources, store
from services.controllers import base, podutil

log = logging.getLogger(__name__)

DEFAULT_ACCOUNT = "default"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
ROOT_CA_KEY = "ca.crt"
DESCRIPTION = "kubernetes.io/description"
DESCRIPTION_TEXT = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints "
    "such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across "
    "distributions of Kubernetes clusters."
)
Obj = dict[str, Any]


def root_ca(settings: Any) -> str | None:
    """The CA bundle to publish, from the settings (see the module docstring), or None."""
    if settings is None:
        return None
    candidates: list[Path] = []
    if getattr(settings, "root_ca_file", None):
        candidates.append(Path(settings.root_ca_file))
    if getattr(settings, "data_dir", None):
        candidates.append(Path(settings.data_dir) / "server" / "tls" / "server-ca.crt")
    for path in candidates:
        try:
            return path.read_text()
        except OSError as exc:
            log.warning("cannot read the root CA %s: %s", path, exc.strerror)
    if getattr(settings, "kubeconfig", None):
        return ca_from_kubeconfig(Path(settings.kubeconfig))
    return None


def ca_from_kubeconfig(path: Path) -> str | None:
    """The current context's cluster CA of a kubeconfig (embedded data or a file), or None."""
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        log.warning("cannot read the kubeconfig %s for its CA: %s", path, exc)
        return None
    contexts = {c.get("name"): c.get("context") or {} for c in config.get("contexts") or ()}
    cluster_name = contexts.get(config.get("current-context"), {}).get("cluster")
    clusters = {c.get("name"): c.get("cluster") or {} for c in config.get("clusters") or ()}
    cluster = clusters.get(cluster_name) or {}
    try:
        if cluster.get("certificate-authority-data"):
            return base64.b64decode(cluster["certificate-authority-data"]).decode()
        if cluster.get("certificate-authority"):
            ca = Path(cluster["certificate-authority"])
            return (ca if ca.is_absolute() else path.parent / ca).read_text()
    except (OSError, ValueError) as exc:
        log.warning("cannot read the CA named by %s: %s", path, exc)
    return None


class ServiceAccountController(base.QueueController):
    name = "serviceaccount"
    workers = 5

    def __init__(self, *, ca_bundle: str | None = None) -> None:
        super().__init__()
        self.ca_bundle = ca_bundle

    def setup(self, ctx: base.ControllerContext) -> None:
        super().setup(ctx)
        if self.ca_bundle is None:
            self.ca_bundle = root_ca(ctx.settings)
            if self.ca_bundle is None:
                log.warning("no root CA found: ConfigMap %s will not be published", ROOT_CA_CONFIGMAP)
        self.namespaces = ctx.informers.informer(resources.NAMESPACES)
        self.accounts = ctx.informers.informer(
            resources.SERVICEACCOUNTS, field_selector=f"metadata.name={DEFAULT_ACCOUNT}"
        )
        self.configmaps = ctx.informers.informer(
            resources.CONFIGMAPS, field_selector=f"metadata.name={ROOT_CA_CONFIGMAP}"
        )
        self.namespaces.add_handlers(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new))
        self.accounts.add_handlers(on_delete=self._by_namespace)
        self.configmaps.add_handlers(
            on_update=lambda old, new: self._by_namespace(new), on_delete=self._by_namespace
        )

    def _by_namespace(self, obj: Obj) -> None:
        namespace = (obj.get("metadata") or {}).get("namespace")
        if namespace:
            self.queue.add(namespace)

    async def reconcile(self, key: str) -> None:
        ns = self.namespaces.store.get(key)
        if ns is None or podutil.is_deleting(ns) or (ns.get("status") or {}).get("phase") == "Terminating":
            return
        if self.accounts.store.get_by(key, DEFAULT_ACCOUNT) is None:
            account = {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": DEFAULT_ACCOUNT, "namespace": key},
            }
            await self._create(resources.SERVICEACCOUNTS, account)
        if self.ca_bundle is not None:
            await self._publish_ca(key)

    async def _publish_ca(self, namespace: str) -> None:
        data = {ROOT_CA_KEY: self.ca_bundle}
        current = self.configmaps.store.get_by(namespace, ROOT_CA_CONFIGMAP)
        if current is None:
            configmap = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": ROOT_CA_CONFIGMAP,
                    "namespace": namespace,
                    "annotations": {DESCRIPTION: DESCRIPTION_TEXT},
                },
                "data": data,
            }
            await self._create(resources.CONFIGMAPS, configmap)
            return
        annotations = (current["metadata"].get("annotations") or {}).get(DESCRIPTION)
        if current.get("data") == data and annotations == DESCRIPTION_TEXT:
            return
        updated = store.copy(current)
        updated["data"] = data
        updated.pop("binaryData", None)
        updated["metadata"].setdefault("annotations", {})[DESCRIPTION] = DESCRIPTION_TEXT
        try:
            await self.ctx.api.update(resources.CONFIGMAPS, updated)
        except errors.ApiError as exc:
            if exc.code != 404:
                raise

    async def _create(self, resource: Any, obj: Obj) -> None:
        try:
            await self.ctx.api.create(resource, obj)
        except errors.ApiError as exc:
            # Already there (the cache lags), or the namespace is gone or going: nothing to do.
            terminating = exc.code == 403 and "being terminated" in exc.message
            if errors.is_already_exists(exc) or exc.code == 404 or terminating:
                return
            raise


def new() -> base.Controller:
    return ServiceAccountController()
