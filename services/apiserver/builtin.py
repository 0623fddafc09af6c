"""The built-in resources the API server serves, as one table of Kubernetes 1.37 facts.

Each row states what discovery and the handlers need to know about a kind: plural, scope,
verbs, short names, categories, subresources and the field selectors it accepts beyond
``metadata.name`` / ``metadata.namespace``. Plural, scope and verbs agree with the
resource metadata shipped in ``lightkube-models`` (a unit test holds the two together);
short names, categories and field selectors are not in that metadata and are stated here.

The table is plain data so that building the registry costs nothing at startup.
"""

from __future__ import annotations

from services.apiserver import registry

# Verb sets as Kubernetes advertises them (sorted, as discovery lists them).
CRUD = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
# Namespaces have no deletecollection: deleting every namespace at once is not offered.
CRUD_NO_COLLECTION = ("create", "delete", "get", "list", "patch", "update", "watch")
CREATE_ONLY = ("create",)

# Field selectors beyond metadata.name/metadata.namespace (kubernetes pkg/apis/*/v1/conversion.go).
POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
)
EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)

# Addon is a CRD in K3s; here it is built in, with the schema K3s's CRD publishes.
ADDON_SCHEMA: dict = {
    "type": "object",
    "description": "Addon is a manifest file in the server's manifests directory, applied by the "
    "deploy controller; its checksum records the content last applied.",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "description": "Where the manifest came from and what was applied.",
            "properties": {
                "source": {"type": "string", "description": "Path of the manifest file."},
                "checksum": {
                    "type": "string",
                    "description": "SHA-256 of the manifest content last applied.",
                },
            },
        },
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}


def _r(
    group: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    verbs: tuple[str, ...] = CRUD,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    sub: tuple[str, ...] = (),
    fields: tuple[str, ...] = (),
    virtual: bool = False,
    version: str = "v1",
    schema: dict | None = None,
) -> registry.ResourceInfo:
    return registry.ResourceInfo(
        group=group,
        version=version,
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        namespaced=namespaced,
        verbs=verbs,
        short_names=short,
        categories=categories,
        subresources=sub,
        field_selectors=fields,
        virtual=virtual,
        schema=schema,
    )


ALL = ("all",)
CLUSTER = False

# Pods' subresources; log, exec, attach and portforward are "connect" subresources.
POD_SUBRESOURCES = ("status", "binding", "eviction", "log", "exec", "attach", "portforward")


def builtin_resources() -> list[registry.ResourceInfo]:
    """Every built-in resource, core group first, in discovery order."""
    authn, authz = "authentication.k8s.io", "authorization.k8s.io"
    return [
        # -- core/v1 --
        _r("", "Binding", "bindings", verbs=CREATE_ONLY, virtual=True),
        _r("", "ConfigMap", "configmaps", short=("cm",)),
        _r("", "Endpoints", "endpoints", short=("ep",)),
        _r("", "Event", "events", short=("ev",), fields=EVENT_FIELDS),
        _r("", "LimitRange", "limitranges", short=("limits",)),
        _r(
            "",
            "Namespace",
            "namespaces",
            namespaced=CLUSTER,
            verbs=CRUD_NO_COLLECTION,
            short=("ns",),
            sub=("status", "finalize"),
            fields=("status.phase",),
        ),
        _r(
            "",
            "Node",
            "nodes",
            namespaced=CLUSTER,
            short=("no",),
            sub=("status",),
            fields=("spec.unschedulable",),
        ),
        _r("", "PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",), sub=("status",)),
        _r("", "PersistentVolume", "persistentvolumes", namespaced=CLUSTER, short=("pv",), sub=("status",)),
        _r("", "Pod", "pods", short=("po",), categories=ALL, sub=POD_SUBRESOURCES, fields=POD_FIELDS),
        _r("", "PodTemplate", "podtemplates"),
        _r(
            "",
            "ReplicationController",
            "replicationcontrollers",
            short=("rc",),
            categories=ALL,
            sub=("status", "scale"),
            fields=("status.replicas",),
        ),
        _r("", "ResourceQuota", "resourcequotas", short=("quota",), sub=("status",)),
        _r("", "Secret", "secrets", fields=("type",)),
        _r("", "ServiceAccount", "serviceaccounts", short=("sa",), sub=("token",)),
        _r(
            "",
            "Service",
            "services",
            short=("svc",),
            categories=ALL,
            sub=("status",),
            fields=("spec.clusterIP", "spec.type"),
        ),
        # -- apps/v1 --
        _r("apps", "ControllerRevision", "controllerrevisions"),
        _r("apps", "DaemonSet", "daemonsets", short=("ds",), categories=ALL, sub=("status",)),
        _r("apps", "Deployment", "deployments", short=("deploy",), categories=ALL, sub=("status", "scale")),
        _r(
            "apps",
            "ReplicaSet",
            "replicasets",
            short=("rs",),
            categories=ALL,
            sub=("status", "scale"),
            fields=("status.replicas",),
        ),
        _r("apps", "StatefulSet", "statefulsets", short=("sts",), categories=ALL, sub=("status", "scale")),
        # -- batch/v1 --
        _r("batch", "CronJob", "cronjobs", short=("cj",), categories=ALL, sub=("status",)),
        _r("batch", "Job", "jobs", categories=ALL, sub=("status",), fields=("status.successful",)),
        # -- the other groups, alphabetically --
        _r(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            namespaced=CLUSTER,
            short=("crd", "crds"),
            categories=("api-extensions",),
            sub=("status",),
        ),
        _r(
            authn,
            "SelfSubjectReview",
            "selfsubjectreviews",
            namespaced=CLUSTER,
            verbs=CREATE_ONLY,
            virtual=True,
        ),
        _r(authn, "TokenReview", "tokenreviews", namespaced=CLUSTER, verbs=CREATE_ONLY, virtual=True),
        _r(authz, "LocalSubjectAccessReview", "localsubjectaccessreviews", verbs=CREATE_ONLY, virtual=True),
        _r(
            authz,
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            namespaced=CLUSTER,
            verbs=CREATE_ONLY,
            virtual=True,
        ),
        _r(
            authz,
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            namespaced=CLUSTER,
            verbs=CREATE_ONLY,
            virtual=True,
        ),
        _r(
            authz,
            "SubjectAccessReview",
            "subjectaccessreviews",
            namespaced=CLUSTER,
            verbs=CREATE_ONLY,
            virtual=True,
        ),
        _r(
            "certificates.k8s.io",
            "CertificateSigningRequest",
            "certificatesigningrequests",
            namespaced=CLUSTER,
            short=("csr",),
            sub=("status", "approval"),
            fields=("spec.signerName",),
        ),
        _r("coordination.k8s.io", "Lease", "leases"),
        _r("discovery.k8s.io", "EndpointSlice", "endpointslices"),
        _r("events.k8s.io", "Event", "events", short=("ev",)),
        _r("networking.k8s.io", "IngressClass", "ingressclasses", namespaced=CLUSTER),
        _r("networking.k8s.io", "Ingress", "ingresses", short=("ing",), sub=("status",)),
        _r("networking.k8s.io", "NetworkPolicy", "networkpolicies", short=("netpol",)),
        _r("policy", "PodDisruptionBudget", "poddisruptionbudgets", short=("pdb",), sub=("status",)),
        _r("rbac.authorization.k8s.io", "ClusterRoleBinding", "clusterrolebindings", namespaced=CLUSTER),
        _r("rbac.authorization.k8s.io", "ClusterRole", "clusterroles", namespaced=CLUSTER),
        _r("rbac.authorization.k8s.io", "RoleBinding", "rolebindings"),
        _r("rbac.authorization.k8s.io", "Role", "roles"),
        _r("scheduling.k8s.io", "PriorityClass", "priorityclasses", namespaced=CLUSTER, short=("pc",)),
        _r("storage.k8s.io", "StorageClass", "storageclasses", namespaced=CLUSTER, short=("sc",)),
        # -- K3s --
        _r("k3s.cattle.io", "Addon", "addons", schema=ADDON_SCHEMA),
    ]


# What each subresource is, for discovery and OpenAPI: (group, version, kind) of the body it
# takes and returns ("" kind: the parent's own), and its verbs.
SUBRESOURCES: dict[str, tuple[tuple[str, str, str], tuple[str, ...]]] = {
    "status": (("", "", ""), ("get", "patch", "update")),
    "scale": (("autoscaling", "v1", "Scale"), ("get", "patch", "update")),
    "binding": (("", "v1", "Binding"), ("create",)),
    "eviction": (("policy", "v1", "Eviction"), ("create",)),
    "log": (("", "", ""), ("get",)),
    "exec": (("", "v1", "PodExecOptions"), ("create", "get")),
    "attach": (("", "v1", "PodAttachOptions"), ("create", "get")),
    "portforward": (("", "v1", "PodPortForwardOptions"), ("create", "get")),
    "finalize": (("", "", ""), ("update",)),
    "approval": (("", "", ""), ("get", "patch", "update")),
    "token": (("authentication.k8s.io", "v1", "TokenRequest"), ("create",)),
}
# Subresources that upgrade the connection or stream (OpenAPI action "connect").
CONNECT_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})


def subresource_gvk(info: registry.ResourceInfo, sub: str) -> tuple[str, str, str]:
    """(group, version, kind) of a subresource's body; the parent's for status, log, finalize."""
    (group, version, kind), _ = SUBRESOURCES[sub]
    if not kind:
        return info.group, info.version, info.kind
    return group, version, kind


def subresource_verbs(sub: str) -> tuple[str, ...]:
    return SUBRESOURCES[sub][1]
