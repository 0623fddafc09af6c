"""Kubernetes' per-controller ClusterRoles, ``system:controller:<name>``, and their bindings.

Upstream's kube-controller-manager runs each controller under its own service account in
kube-system, and the bootstrap policy grants each one only what that controller needs:
``system:controller:deployment-controller`` is bound to ServiceAccount
``kube-system/deployment-controller``. Our controllers still share one identity,
``system:kube-controller-manager`` (its rules in ``rbac`` cover all of them), so nothing here is
what they run as; the objects exist so that the cluster holds the same policy a Kubernetes cluster
does, for ``kubectl auth can-i --as=system:serviceaccount:kube-system:<controller>``, for
tools that copy or bind these roles, and for the day the controllers get their own accounts.

The set is what a fresh cluster with default feature gates has (upstream's
``bootstrappolicy/testdata/controller-roles.yaml``), including controllers this project lacks:
a cluster's RBAC objects do not depend on which controllers run. Rules are in upstream's order;
``rbac.rule`` sorts each list as upstream's ``RuleOrDie`` does, so the stored objects read as a
real cluster's.
"""

from __future__ import annotations

from typing import Any

from services.apiserver.auth import rbac

PREFIX = "system:controller:"
NAMESPACE = "kube-system"  # where upstream's controller service accounts live

_R = rbac.READ
_EVENTS = rbac.EVENT_WRITES[0]
_APPS = ["apps", "extensions"]
_CERTS = "certificates.k8s.io"
_STORAGE = "storage.k8s.io"
_RESOURCE = "resource.k8s.io"
_NETWORKING = "networking.k8s.io"
_ADMISSION = "admissionregistration.k8s.io"
_SIGNERS = ["kubernetes.io/kube-apiserver-client", "kubernetes.io/kube-apiserver-client-kubelet",
            "kubernetes.io/kubelet-serving", "kubernetes.io/legacy-unknown"]  # fmt: skip
_RW_ALL = ["create", "delete", "get", "list", "patch", "update", "watch"]

rule = rbac.rule

# fmt: off
# Controller name (without the prefix) -> rules.
CONTROLLER_ROLES: dict[str, list[dict[str, Any]]] = {
    "attachdetach-controller": [
        rule([""], ["persistentvolumes", "persistentvolumeclaims"], ["list", "watch"]),
        rule([""], ["nodes"], _R),
        rule([""], ["nodes/status"], ["patch", "update"]),
        rule([""], ["pods"], ["list", "watch"]),
        _EVENTS,
        rule([_STORAGE], ["volumeattachments"], ["get", "create", "delete", "list", "watch"]),
        rule([_STORAGE], ["csidrivers"], _R),
        rule([_STORAGE], ["csinodes"], _R),
    ],
    "certificate-controller": [
        rule([_CERTS], ["certificatesigningrequests"], ["get", "list", "watch", "delete"]),
        rule([_CERTS], ["certificatesigningrequests/status", "certificatesigningrequests/approval"], ["update"]),
        rule([_CERTS], ["signers"], ["approve"], ["kubernetes.io/kube-apiserver-client-kubelet"]),
        rule([_CERTS], ["signers"], ["sign"], _SIGNERS),
        rule(["authorization.k8s.io"], ["subjectaccessreviews"], ["create"]),
        _EVENTS,
    ],
    "clusterrole-aggregation-controller": [
        # it must be able to write any rule into an aggregated role, hence escalate
        rule([rbac.GROUP], ["clusterroles"], ["escalate", "get", "list", "watch", "update", "patch"]),
    ],
    "cronjob-controller": [
        rule(["batch"], ["cronjobs"], ["get", "list", "watch", "update"]),
        rule(["batch"], ["jobs"], _RW_ALL),
        rule(["batch"], ["cronjobs/status"], ["update"]),
        rule(["batch"], ["cronjobs/finalizers"], ["update"]),
        rule([""], ["pods"], ["list", "watch", "delete"]),
        _EVENTS,
    ],
    "daemon-set-controller": [
        rule(_APPS, ["daemonsets"], _R),
        rule(_APPS, ["daemonsets/status"], ["update"]),
        rule(_APPS, ["daemonsets/finalizers"], ["update"]),
        rule([""], ["nodes"], ["list", "watch"]),
        rule([""], ["pods"], ["list", "watch", "create", "delete", "patch"]),
        rule([""], ["pods/binding"], ["create"]),
        rule(["apps"], ["controllerrevisions"], _RW_ALL),
        _EVENTS,
    ],
    "deployment-controller": [
        rule(_APPS, ["deployments"], ["get", "list", "watch", "update"]),
        rule(_APPS, ["deployments/status"], ["update"]),
        rule(_APPS, ["deployments/finalizers"], ["update"]),
        rule(_APPS, ["replicasets"], _RW_ALL),
        rule([""], ["pods"], ["get", "list", "watch", "update"]),
        _EVENTS,
    ],
    "device-taint-eviction-controller": [
        rule([""], ["pods"], ["get", "list", "watch", "delete"]),
        rule([""], ["pods/status"], ["update", "patch"]),
        rule([_RESOURCE], ["resourceclaims"], _R),
        rule([_RESOURCE], ["resourceslices"], _R),
        rule([_RESOURCE], ["deviceclasses"], _R),
        _EVENTS,
    ],
    "disruption-controller": [
        rule(_APPS, ["deployments"], _R),
        rule(_APPS, ["replicasets"], _R),
        rule([""], ["replicationcontrollers"], _R),
        rule(["policy"], ["poddisruptionbudgets"], _R),
        rule(["apps"], ["statefulsets"], _R),
        rule(["policy"], ["poddisruptionbudgets/status"], ["update"]),
        rule([""], ["pods/status"], ["patch", "update"]),
        rule(["*"], ["*/scale"], ["get"]),
        _EVENTS,
    ],
    "endpoint-controller": [
        rule([""], ["services", "pods"], _R),
        rule([""], ["endpoints"], ["get", "list", "watch", "create", "update", "delete"]),
        rule([""], ["endpoints/restricted"], ["create"]),
        _EVENTS,
    ],
    "endpointslice-controller": [
        rule([""], ["services", "pods", "nodes"], _R),
        # to own its EndpointSlices with blockOwnerDeletion, it must be able to set the service's finalizers
        rule([""], ["services/finalizers"], ["update"]),
        rule(["discovery.k8s.io"], ["endpointslices"], ["get", "list", "watch", "create", "update", "delete"]),
        _EVENTS,
    ],
    "endpointslicemirroring-controller": [
        rule([""], ["services", "endpoints"], _R),
        rule([""], ["services/finalizers"], ["update"]),
        rule([""], ["endpoints/finalizers"], ["update"]),
        rule(["discovery.k8s.io"], ["endpointslices"], ["get", "list", "watch", "create", "update", "delete"]),
        _EVENTS,
    ],
    "ephemeral-volume-controller": [
        rule([""], ["pods"], _R),
        rule([""], ["pods/finalizers"], ["update"]),
        rule([""], ["persistentvolumeclaims"], ["get", "list", "watch", "create"]),
        _EVENTS,
    ],
    "expand-controller": [
        rule([""], ["persistentvolumes"], ["get", "list", "watch", "update", "patch"]),
        rule([""], ["persistentvolumeclaims/status"], ["update", "patch"]),
        rule([""], ["persistentvolumeclaims"], _R),
        _EVENTS,
    ],
    "generic-garbage-collector": [
        # list/watch everything, read owners, and patch or delete dependents of any kind
        rule(["*"], ["*"], ["get", "list", "watch", "patch", "update", "delete"]),
        _EVENTS,
    ],
    "horizontal-pod-autoscaler": [
        rule(["autoscaling"], ["horizontalpodautoscalers"], _R),
        rule(["autoscaling"], ["horizontalpodautoscalers/status"], ["update"]),
        rule(["*"], ["*/scale"], ["get", "update"]),
        rule([""], ["pods"], ["list", "watch"]),
        rule(["metrics.k8s.io"], ["pods"], ["list", "watch"]),
        rule(["custom.metrics.k8s.io"], ["*"], _R),
        rule(["external.metrics.k8s.io"], ["*"], _R),
        _EVENTS,
    ],
    "job-controller": [
        rule(["batch"], ["jobs"], ["get", "list", "watch", "update", "patch"]),
        rule(["batch"], ["jobs/status"], ["update"]),
        rule(["batch"], ["jobs/finalizers"], ["update"]),
        rule([""], ["pods"], ["list", "watch", "create", "delete", "patch"]),
        _EVENTS,
    ],
    "legacy-service-account-token-cleaner": [
        rule([""], ["configmaps"], ["get"], ["kube-apiserver-legacy-service-account-token-tracking"]),
        rule([""], ["secrets"], ["patch", "delete"]),
    ],
    "namespace-controller": [
        rule([""], ["namespaces"], ["get", "list", "watch", "delete"]),
        rule([""], ["namespaces/finalize", "namespaces/status"], ["update"]),
        rule(["*"], ["*"], ["get", "list", "watch", "delete", "deletecollection"]),
    ],
    "node-controller": [
        rule([""], ["nodes"], ["get", "list", "watch", "update", "delete", "patch"]),
        rule([""], ["nodes/status"], ["patch", "update"]),
        rule([""], ["pods/status"], ["patch", "update"]),  # marks pods on lost nodes not ready
        rule([""], ["pods"], ["list", "watch", "get", "delete"]),
        _EVENTS,
    ],
    "persistent-volume-binder": [
        rule([""], ["persistentvolumes"], ["get", "list", "watch", "update", "create", "delete"]),
        rule([""], ["persistentvolumes/status"], ["update"]),
        rule([""], ["persistentvolumeclaims"], ["get", "list", "watch", "update"]),
        rule([""], ["persistentvolumeclaims/status"], ["update"]),
        rule([""], ["pods"], ["list", "watch", "get", "create", "delete"]),
        rule([_STORAGE], ["storageclasses"], _R),
        rule([""], ["nodes"], ["list", "watch"]),
        _EVENTS,
        rule([""], ["events"], ["watch"]),  # the recycler watches its pod's events
    ],
    "pod-garbage-collector": [
        rule([""], ["pods"], ["list", "watch", "delete"]),
        rule([""], ["nodes"], _R),
        rule([""], ["pods/status"], ["patch"]),
    ],
    "pv-protection-controller": [
        rule([""], ["persistentvolumes"], ["get", "list", "watch", "update"]),
        _EVENTS,
    ],
    "pvc-protection-controller": [
        rule([""], ["persistentvolumeclaims"], ["get", "list", "watch", "update"]),
        rule([""], ["persistentvolumeclaims/status"], ["update"]),
        rule([""], ["pods"], ["list", "watch", "get"]),
        _EVENTS,
    ],
    "replicaset-controller": [
        rule(_APPS, ["replicasets"], ["get", "list", "watch", "update"]),
        rule(_APPS, ["replicasets/status"], ["update"]),
        rule(_APPS, ["replicasets/finalizers"], ["update"]),
        rule([""], ["pods"], ["list", "watch", "patch", "create", "delete"]),
        _EVENTS,
    ],
    "replication-controller": [
        rule([""], ["replicationcontrollers"], ["get", "list", "watch", "update"]),
        rule([""], ["replicationcontrollers/status"], ["update"]),
        rule([""], ["replicationcontrollers/finalizers"], ["update"]),
        rule([""], ["pods"], ["list", "watch", "patch", "create", "delete"]),
        _EVENTS,
    ],
    "resource-claim-controller": [
        rule([""], ["pods"], _R),
        rule([""], ["pods/finalizers"], ["update"]),
        rule([_RESOURCE], ["resourceclaims"], ["get", "list", "watch", "create", "delete"]),
        rule([_RESOURCE], ["resourceclaims", "resourceclaims/status"], ["update", "patch"]),
        rule([""], ["pods/status"], ["update", "patch"]),
        _EVENTS,
        rule([_RESOURCE], ["resourceclaims/binding"], ["update", "patch"]),
    ],
    "resourcequota-controller": [
        # quota may count any kind, so it must be able to list them all
        rule(["*"], ["*"], ["list", "watch"]),
        rule([""], ["resourcequotas/status"], ["update"]),
        _EVENTS,
    ],
    "root-ca-cert-publisher": [
        rule([""], ["configmaps"], ["create", "update"]),
        _EVENTS,
    ],
    "route-controller": [
        rule([""], ["nodes"], ["list", "watch"]),
        rule([""], ["nodes/status"], ["patch"]),
        _EVENTS,
    ],
    "selinux-warning-controller": [
        _EVENTS,
        rule([""], ["persistentvolumes"], _R),
        rule([""], ["persistentvolumeclaims"], _R),
        rule([""], ["pods"], _R),
        rule([_STORAGE], ["csidrivers"], _R),
    ],
    "service-account-controller": [
        rule([""], ["serviceaccounts"], ["create"]),
        _EVENTS,
    ],
    "service-cidrs-controller": [
        rule([_NETWORKING], ["servicecidrs"], ["get", "list", "watch", "patch", "update"]),
        rule([_NETWORKING], ["servicecidrs/finalizers"], ["patch", "update"]),
        rule([_NETWORKING], ["servicecidrs/status"], ["patch", "update"]),
        rule([_NETWORKING], ["ipaddresses"], _R),
        _EVENTS,
    ],
    "service-controller": [
        rule([""], ["services"], _R),
        rule([""], ["services/status"], ["patch", "update"]),
        rule([""], ["nodes"], ["list", "watch"]),
        _EVENTS,
    ],
    "statefulset-controller": [
        rule([""], ["pods"], ["list", "watch"]),
        rule(["apps"], ["statefulsets"], _R),
        rule(["apps"], ["statefulsets/status"], ["update"]),
        rule(["apps"], ["statefulsets/finalizers"], ["update"]),
        rule([""], ["pods"], ["get", "create", "delete", "update", "patch"]),
        rule(["apps"], ["controllerrevisions"], _RW_ALL),
        rule([""], ["persistentvolumeclaims"], ["get", "create", "list", "watch"]),
        rule([""], ["persistentvolumeclaims"], ["update", "delete"]),
        rule([""], ["pods/finalizers"], ["update"]),
        _EVENTS,
    ],
    "ttl-after-finished-controller": [
        rule(["batch"], ["jobs"], ["get", "list", "watch", "delete"]),
        _EVENTS,
    ],
    "ttl-controller": [
        rule([""], ["nodes"], ["update", "patch", "list", "watch"]),
        _EVENTS,
    ],
    "validatingadmissionpolicy-status-controller": [
        rule([_ADMISSION], ["validatingadmissionpolicies"], _R),
        rule([_ADMISSION], ["validatingadmissionpolicies/status"], ["get", "patch", "update"]),
        _EVENTS,
    ],
    "volumeattributesclass-protection-controller": [
        rule([""], ["persistentvolumeclaims"], _R),
        rule([""], ["persistentvolumes"], _R),
        rule([_STORAGE], ["volumeattributesclasses"], ["get", "list", "watch", "update"]),
        _EVENTS,
    ],
}
# fmt: on


def service_account(controller: str) -> str:
    """The user name upstream's controller runs as, e.g. ``system:serviceaccount:kube-system:job-controller``."""
    return f"{rbac.SA_PREFIX}{NAMESPACE}:{controller}"


def objects() -> list[dict[str, Any]]:
    """Each controller's ClusterRole and the ClusterRoleBinding of it to the controller's account."""
    roles = [rbac.cluster_role(PREFIX + name, rules) for name, rules in CONTROLLER_ROLES.items()]
    bindings = [
        rbac.cluster_role_binding(PREFIX + name, PREFIX + name, rbac.service_accounts(NAMESPACE, name))
        for name in CONTROLLER_ROLES
    ]
    return [*roles, *bindings]
