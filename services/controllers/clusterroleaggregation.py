"""ClusterRoles with an ``aggregationRule`` get, as their ``rules``, those of the roles they select.

As upstream's clusterrole-aggregation controller: for every ClusterRole whose ``aggregationRule``
has ``clusterRoleSelectors``, the stored ``rules`` become the union, in name order and without
duplicates, of the rules of every other ClusterRole whose labels match one of the selectors. So
``kubectl get clusterrole admin -o yaml`` shows what ``admin`` grants, and a new role labelled
``rbac.authorization.k8s.io/aggregate-to-edit: "true"`` extends ``edit`` (and, through it,
``admin``) within moments. The authorizer does not wait for this: it evaluates aggregation itself
(``services/apiserver/auth/rbac.py``).

Any ClusterRole change re-queues every aggregating role (there are a handful), and a role whose
union did not change is not written.
"""

from __future__ import annotations

import logging
from typing import Any

from services.client import errors, resources
from services.controllers import base
from services.machinery import selectors

log = logging.getLogger(__name__)

Obj = dict[str, Any]


def aggregated_rules(role: Obj, roles: list[Obj]) -> list[Obj]:
    """The union of the rules of the roles ``role``'s selectors match (``role`` itself excluded)."""
    terms = ((role.get("aggregationRule") or {}).get("clusterRoleSelectors")) or []
    matchers = [selectors.from_label_selector_dict(term) for term in terms]
    name = role["metadata"]["name"]
    rules: list[Obj] = []
    for other in sorted(roles, key=lambda r: r["metadata"]["name"]):
        labels = other["metadata"].get("labels") or {}
        if other["metadata"]["name"] == name or not any(m.matches(labels) for m in matchers):
            continue
        for rule in other.get("rules") or ():
            if rule not in rules:
                rules.append(rule)
    return rules


class ClusterRoleAggregationController(base.QueueController):
    name = "clusterroleaggregation"
    workers = 1

    def setup(self, ctx: base.ControllerContext) -> None:
        super().setup(ctx)
        self.roles = ctx.informers.informer(resources.CLUSTERROLES)
        self.roles.add_handlers(
            on_add=self._changed, on_update=lambda _old, new: self._changed(new), on_delete=self._changed
        )

    def _changed(self, _role: Obj) -> None:
        for role in self.roles.store.list():
            if (role.get("aggregationRule") or {}).get("clusterRoleSelectors"):
                self.enqueue(role)

    async def reconcile(self, key: str) -> None:
        assert self.ctx is not None
        role = self.roles.store.get(key)
        if role is None or not (role.get("aggregationRule") or {}).get("clusterRoleSelectors"):
            return
        rules = aggregated_rules(role, self.roles.store.list())
        if rules == (role.get("rules") or []):
            return
        try:
            await self.ctx.api.patch(resources.CLUSTERROLES, key, {"rules": rules})
        except errors.ApiError as exc:
            if exc.code != 404:
                raise
            return
        log.info("clusterrole %s: %d aggregated rules", key, len(rules))


def new() -> base.Controller:
    return ClusterRoleAggregationController()
