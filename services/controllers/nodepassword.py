"""Deleting a Node deletes its node-password Secret, so that its name can join again.

The API server records each joining node's password hash in the immutable Secret
``kube-system/<node>.node-password.k3s`` and refuses the name to any other password
(``services/apiserver/nodeauth.py``). As K3s's node controller does, this one removes the Secret
when the Node goes away: a replaced host with a new password can then take the name.

Only deletions count, and the Node is checked once more in the API before the Secret goes: a
Secret whose Node was never registered belongs to an agent that is joining right now (the Secret
comes first, the Node a moment later), so Secrets are never collected just for lacking a Node.
"""

from __future__ import annotations

import logging

from services.client import errors, resources
from services.controllers import base

log = logging.getLogger(__name__)

NAMESPACE = "kube-system"
SUFFIX = ".node-password.k3s"


def secret_name(node_name: str) -> str:
    return f"{node_name}{SUFFIX}".lower()


class NodePasswordController(base.QueueController):
    name = "nodepassword"
    workers = 2

    def setup(self, ctx: base.ControllerContext) -> None:
        super().setup(ctx)
        self.nodes = ctx.informers.informer(resources.NODES)
        self.nodes.add_handlers(on_delete=self.enqueue)

    async def reconcile(self, key: str) -> None:
        assert self.ctx is not None
        if self.nodes.store.get(key) is not None:
            return  # registered again meanwhile
        try:
            await self.ctx.api.get(resources.NODES, key)
            return  # the cache lags: the Node exists
        except errors.ApiError as exc:
            if exc.code != 404:
                raise
        try:
            await self.ctx.api.delete(resources.SECRETS, secret_name(key), namespace=NAMESPACE)
        except errors.ApiError as exc:
            if exc.code == 404:
                return
            raise
        log.info("node %s is gone: deleted its node password secret", key)


def new() -> base.Controller:
    return NodePasswordController()
