# fmt: off
"""Protobuf field tables for networking.k8s.io/v1 (package k8s.io.api.networking.v1)."""

from services.machinery.k8sproto.schema import F

_P = "k8s.io.api.networking.v1."
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_CORE = "k8s.io.api.core.v1."
_INTSTR = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"

MESSAGES: dict[str, tuple[F, ...]] = {
    _P + "HTTPIngressPath": (
        F(1, "path", "string"),
        F(3, "pathType", "string"),
        F(2, "backend", _P + "IngressBackend"),
    ),
    _P + "HTTPIngressRuleValue": (
        F(1, "paths", _P + "HTTPIngressPath", repeated=True),
    ),
    _P + "IPAddress": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "IPAddressSpec"),
    ),
    _P + "IPAddressList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "IPAddress", repeated=True),
    ),
    _P + "IPAddressSpec": (
        F(1, "parentRef", _P + "ParentReference"),
    ),
    _P + "IPBlock": (
        F(1, "cidr", "string"),
        F(2, "except", "string", repeated=True),
    ),
    _P + "Ingress": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "IngressSpec"),
        F(3, "status", _P + "IngressStatus"),
    ),
    _P + "IngressBackend": (
        F(4, "service", _P + "IngressServiceBackend"),
        F(3, "resource", _CORE + "TypedLocalObjectReference"),
    ),
    _P + "IngressClass": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "IngressClassSpec"),
    ),
    _P + "IngressClassList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "IngressClass", repeated=True),
    ),
    _P + "IngressClassParametersReference": (
        # proto field name is "aPIGroup"; the JSON name is "apiGroup"
        F(1, "apiGroup", "string"),
        F(2, "kind", "string"),
        F(3, "name", "string"),
        F(4, "scope", "string"),
        F(5, "namespace", "string"),
    ),
    _P + "IngressClassSpec": (
        F(1, "controller", "string"),
        F(2, "parameters", _P + "IngressClassParametersReference"),
    ),
    _P + "IngressList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "Ingress", repeated=True),
    ),
    _P + "IngressLoadBalancerIngress": (
        F(1, "ip", "string"),
        F(2, "hostname", "string"),
        F(4, "ports", _P + "IngressPortStatus", repeated=True),
    ),
    _P + "IngressLoadBalancerStatus": (
        F(1, "ingress", _P + "IngressLoadBalancerIngress", repeated=True),
    ),
    _P + "IngressPortStatus": (
        F(1, "port", "int32"),
        F(2, "protocol", "string"),
        F(3, "error", "string"),
    ),
    _P + "IngressRule": (
        F(1, "host", "string"),
        # embedded struct, inlined in JSON (see INLINE_FIELDS)
        F(2, "ingressRuleValue", _P + "IngressRuleValue"),
    ),
    _P + "IngressRuleValue": (
        F(1, "http", _P + "HTTPIngressRuleValue"),
    ),
    _P + "IngressServiceBackend": (
        F(1, "name", "string"),
        F(2, "port", _P + "ServiceBackendPort"),
    ),
    _P + "IngressSpec": (
        F(4, "ingressClassName", "string"),
        F(1, "defaultBackend", _P + "IngressBackend"),
        F(2, "tls", _P + "IngressTLS", repeated=True),
        F(3, "rules", _P + "IngressRule", repeated=True),
    ),
    _P + "IngressStatus": (
        F(1, "loadBalancer", _P + "IngressLoadBalancerStatus"),
    ),
    _P + "IngressTLS": (
        F(1, "hosts", "string", repeated=True),
        F(2, "secretName", "string"),
    ),
    _P + "NetworkPolicy": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "NetworkPolicySpec"),
    ),
    _P + "NetworkPolicyEgressRule": (
        F(1, "ports", _P + "NetworkPolicyPort", repeated=True),
        F(2, "to", _P + "NetworkPolicyPeer", repeated=True),
    ),
    _P + "NetworkPolicyIngressRule": (
        F(1, "ports", _P + "NetworkPolicyPort", repeated=True),
        F(2, "from", _P + "NetworkPolicyPeer", repeated=True),
    ),
    _P + "NetworkPolicyList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "NetworkPolicy", repeated=True),
    ),
    _P + "NetworkPolicyPeer": (
        F(1, "podSelector", _META + "LabelSelector"),
        F(2, "namespaceSelector", _META + "LabelSelector"),
        F(3, "ipBlock", _P + "IPBlock"),
    ),
    _P + "NetworkPolicyPort": (
        F(1, "protocol", "string"),
        F(2, "port", _INTSTR),
        F(3, "endPort", "int32"),
    ),
    _P + "NetworkPolicySpec": (
        F(1, "podSelector", _META + "LabelSelector"),
        F(2, "ingress", _P + "NetworkPolicyIngressRule", repeated=True),
        F(3, "egress", _P + "NetworkPolicyEgressRule", repeated=True),
        F(4, "policyTypes", "string", repeated=True),
    ),
    _P + "ParentReference": (
        F(1, "group", "string"),
        F(2, "resource", "string"),
        F(3, "namespace", "string"),
        F(4, "name", "string"),
    ),
    _P + "ServiceBackendPort": (
        F(1, "name", "string"),
        F(2, "number", "int32"),
    ),
    _P + "ServiceCIDR": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "ServiceCIDRSpec"),
        F(3, "status", _P + "ServiceCIDRStatus"),
    ),
    _P + "ServiceCIDRList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "ServiceCIDR", repeated=True),
    ),
    _P + "ServiceCIDRSpec": (
        F(1, "cidrs", "string", repeated=True),
    ),
    _P + "ServiceCIDRStatus": (
        F(1, "conditions", _META + "Condition", repeated=True),
    ),
}

# Fields that hold a Go embedded struct marshalled inline in JSON: the decoder
# merges the decoded sub-object's keys into the parent instead of nesting it
# under the field's name.
INLINE_FIELDS: frozenset[tuple[str, int]] = frozenset({
    (_P + "IngressRule", 2),
})

# Scalars that are Go pointers, so a zero on the wire is an explicit value (see schema).
NULLABLE_FIELDS: frozenset[tuple[str, int]] = frozenset({
    (_P + "HTTPIngressPath", 3),
    (_P + "IngressClassParametersReference", 1),
    (_P + "IngressClassParametersReference", 4),
    (_P + "IngressClassParametersReference", 5),
    (_P + "IngressPortStatus", 3),
    (_P + "IngressSpec", 4),
    (_P + "NetworkPolicyPort", 1),
    (_P + "NetworkPolicyPort", 3),
})
