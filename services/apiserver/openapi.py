"""OpenAPI documents (v3 per group/version, v2 whole) generated from the Kubernetes type data.

Where the schemas come from: ``lightkube-models`` ships every Kubernetes 1.37 type as a
dataclass with field names, JSON names, types, required fields and descriptions. Its
modules are read here as source with ``ast``, never imported: importing them needs the
``lightkube`` client and its HTTP stack, and parsing is faster than importing anyway.
What the dataclasses do not carry (patch merge keys and strategies, list types, map value
types, the named scalar types) is stated in the tables below. Custom resources (and K3s's
Addon) are described by their own OpenAPI v3 schema instead.

Cost: nothing at startup. A group/version document is built on first request (api/v1,
the largest, in roughly 100 ms) and cached under a hash of its inputs, so a registry
change rebuilds only the group/versions whose resources changed. The hash of the inputs
(not of the output) is what the index advertises, so the index never builds documents.

OpenAPI v2 protobuf (what kubectl 1.20 asks for, for explain, client-side validation and
dry-run detection): the JSON v2 document, generated in full from the v3 documents, encoded as a
gnostic ``openapi_v2.Document`` by ``openapi_v2_proto``.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import importlib.metadata
import re
import weakref
from collections.abc import Iterable

import orjson

from services.apiserver import builtin, discovery, registry, responses
from services.machinery import errors

# Bump when the generated output changes shape, so hashes (and client caches) move on.
GENERATOR_VERSION = "1"

REF_PREFIX = "#/components/schemas/"
JSON_TYPES = ("application/json", "application/yaml")
WATCH_TYPES = ("application/json", "application/yaml", "application/json;stream=watch")
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)
# Upstream answers with "." where the request's Accept had "@": Go's media type parser rejects "@".
PROTOBUF_V2 = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"

# -- reading lightkube-models ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    name: str  # the JSON name
    type: str  # the annotation, e.g. "Optional[List[Container]]"
    required: bool
    description: str


@dataclasses.dataclass(frozen=True, slots=True)
class Model:
    module: str  # lightkube module, e.g. "core_v1"
    name: str
    description: str
    fields: tuple[Field, ...]
    gvk: tuple[str, str, str] | None  # set on top-level kinds (those with fixed apiVersion/kind)


@dataclasses.dataclass(frozen=True, slots=True)
class ModelModule:
    classes: dict[str, ast.ClassDef]
    aliases: dict[str, str]  # module-level aliases: name -> "Dict", "str", "datetime", "Any", ...
    module: str = ""
    _models: dict[str, Model] = dataclasses.field(default_factory=dict)

    def model(self, name: str) -> Model | None:
        """One type, read on first use (a document needs only some of a module's types)."""
        model = self._models.get(name)
        if model is None and name in self.classes:
            model = self._models[name] = _read_class(self.module, self.classes[name])
        return model


@functools.cache
def models_version() -> str:
    try:
        return importlib.metadata.version("lightkube-models")
    except importlib.metadata.PackageNotFoundError:
        return ""


@functools.cache
def load_module(module: str) -> ModelModule:
    """The types of one lightkube-models module (``core_v1``, ``meta_v1``...); empty if absent."""
    try:
        dist = importlib.metadata.distribution("lightkube-models")
        source = dist.locate_file(f"lightkube/models/{module}.py").read_text()
    except (importlib.metadata.PackageNotFoundError, FileNotFoundError):
        return ModelModule({}, {}, module)
    classes: dict[str, ast.ClassDef] = {}
    aliases: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            classes[node.name] = node
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            aliases[node.targets[0].id] = ast.unparse(node.value)
    return ModelModule(classes, aliases, module)


def _docstring(node: ast.ClassDef) -> str:
    """The class docstring, dedented (``ast.get_docstring`` is several times slower)."""
    first = node.body[0] if node.body else None
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)):
        return ""
    lines = str(first.value.value).splitlines()
    rest = [line for line in lines[1:] if line.strip()]
    indent = min((len(line) - len(line.lstrip()) for line in rest), default=0)
    return "\n".join([lines[0].strip(), *(line[indent:].rstrip() for line in lines[1:])]).strip()


def _read_class(module: str, node: ast.ClassDef) -> Model:
    description, docs = _parse_docstring(_docstring(node))
    fields: list[Field] = []
    fixed: dict[str, str] = {}
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            py_name = stmt.target.id
            ann = stmt.annotation
            ann_text = ann.value if isinstance(ann, ast.Constant) else ast.unparse(ann)
            name = _json_name(stmt.value) or py_name
            required = not ann_text.startswith("Optional[")
            fields.append(Field(name, ann_text, required, docs.get(py_name, "")))
        elif isinstance(stmt, ast.FunctionDef) and stmt.name == "__post_init__":
            for assign in stmt.body:
                if isinstance(assign, ast.Assign) and isinstance(assign.value, ast.Constant):
                    target = assign.targets[0]
                    if isinstance(target, ast.Attribute):
                        fixed[target.attr] = assign.value.value
    gvk = None
    if "apiVersion" in fixed and "kind" in fixed:
        group, _, version = fixed["apiVersion"].rpartition("/")
        gvk = (group, version, fixed["kind"])
    return Model(module, node.name, description, tuple(fields), gvk)


def _json_name(value: ast.expr | None) -> str:
    """The JSON name from ``field(metadata={"json": "..."})``, if the field is renamed."""
    if isinstance(value, ast.Call):
        for kw in value.keywords:
            if kw.arg == "metadata" and isinstance(kw.value, ast.Dict):
                for k, v in zip(kw.value.keys, kw.value.values, strict=True):
                    if isinstance(k, ast.Constant) and k.value == "json" and isinstance(v, ast.Constant):
                        return v.value
    return ""


_FIELD_LINE = re.compile(r"^\* \*\*(?P<name>[^*]+)\*\* ``[^`]*`` -(?P<text>.*)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(class description, python field name -> description) from a lightkube docstring."""
    head, _, params = doc.partition("**parameters**")
    fields: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in params.splitlines():
        match = _FIELD_LINE.match(line)
        if match:
            current = fields.setdefault(match["name"], [])
            current.append(match["text"].strip())
        elif current is not None:
            current.append(line[2:] if line.startswith("  ") else line)
    return _unwrap(head.splitlines()), {k: _unwrap(v) for k, v in fields.items()}


def _unwrap(lines: list[str]) -> str:
    """Undo the docstring's line wrapping; deeper-indented lines were line breaks upstream."""
    out = ""
    for line in lines:
        text = line.strip()
        if not text:
            out += "\n\n"
        elif line.startswith(" "):
            out += "\n" + line.rstrip()
        elif out and not out.endswith("\n"):
            out += " " + text
        else:
            out += text
    return re.sub(r"\n{3,}", "\n\n", out).strip()


# -- names ---------------------------------------------------------------------------------

# lightkube module -> upstream Go package prefix, where it is not io.k8s.api.<group>.<version>.
_PACKAGES = {
    "meta_v1": "io.k8s.apimachinery.pkg.apis.meta.v1",
    "apiextensions_v1": "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1",
    "apiregistration_v1": "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1",
    "version": "io.k8s.apimachinery.pkg.version",
    "runtime": "io.k8s.apimachinery.pkg.runtime",
    "resource": "io.k8s.apimachinery.pkg.api.resource",
    "util_intstr": "io.k8s.apimachinery.pkg.util.intstr",
}
# API group -> lightkube module stem, where it is not the group's first label.
_GROUP_MODULES = {"": "core", "internal.apiserver.k8s.io": "apiserverinternal"}


def schema_name(module: str, name: str) -> str:
    if module in _PACKAGES:
        return f"{_PACKAGES[module]}.{name}"
    group, _, version = module.rpartition("_")
    return f"io.k8s.api.{group}.{version}.{name}"


def module_for(group: str, version: str) -> str:
    stem = _GROUP_MODULES.get(group, group.split(".")[0])
    return f"{stem}_{version}"


def custom_schema_name(group: str, version: str, kind: str) -> str:
    """Upstream's name for a custom resource's schema: the reversed group, version, kind."""
    return ".".join([*reversed(group.split(".")), version, kind])


def _ref(name: str) -> dict:
    return {"$ref": REF_PREFIX + name}


# -- facts the dataclasses do not carry -------------------------------------------------------

# Scalar types that the dataclasses reduce to Python aliases (or leave undefined).
_ALIASES: dict[tuple[str, str], dict] = {
    ("meta_v1", "Time"): {
        "description": "Time is a wrapper around time.Time which supports correct marshaling to YAML and "
        "JSON. It is serialized as an RFC 3339 date and time in UTC, to the second.",
        "type": "string",
        "format": "date-time",
    },
    ("meta_v1", "MicroTime"): {
        "description": "MicroTime is version of Time with microsecond level precision.",
        "type": "string",
        "format": "date-time",
    },
    ("meta_v1", "FieldsV1"): {
        "description": "FieldsV1 stores a set of fields in a data structure like a Trie, in JSON format.",
        "type": "object",
    },
    ("meta_v1", "Patch"): {
        "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
        "type": "object",
    },
    ("runtime", "RawExtension"): {
        "description": "RawExtension is used to hold extensions in external versions: any embedded object.",
        "type": "object",
    },
    ("resource", "Quantity"): {
        "description": "Quantity is a fixed-point representation of a number, serialized as a string such as "
        '"100m", "1.5Gi" or "2", or as a plain JSON number.',
        "oneOf": [{"type": "string"}, {"type": "number"}],
    },
    ("util_intstr", "IntOrString"): {
        "description": "IntOrString is a type that can hold an int32 or a string.",
        "format": "int-or-string",
        "oneOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": True,
    },
    ("apiextensions_v1", "JSON"): {
        "description": "JSON represents any valid JSON value: bool, int64, float64, string, array, object or null.",
    },
    ("apiextensions_v1", "JSONSchemaPropsOrArray"): {
        "description": "JSONSchemaPropsOrArray represents a value that can either be a JSONSchemaProps or "
        "an array of JSONSchemaProps.",
    },
    ("apiextensions_v1", "JSONSchemaPropsOrBool"): {
        "description": "JSONSchemaPropsOrBool represents JSONSchemaProps or a boolean value.",
    },
    ("apiextensions_v1", "JSONSchemaPropsOrStringArray"): {
        "description": "JSONSchemaPropsOrStringArray represents a JSONSchemaProps or a string array.",
    },
}
_ALIAS_FALLBACK = {"Dict": {"type": "object"}, "datetime": {"type": "string", "format": "date-time"}}

_QUANTITY = ("resource", "Quantity")
# Map-valued fields whose values are not strings ("module.Class.field" -> value type).
_MAP_VALUES: dict[str, tuple[str, str] | dict] = {
    "apiextensions_v1.JSONSchemaProps.definitions": ("apiextensions_v1", "JSONSchemaProps"),
    "apiextensions_v1.JSONSchemaProps.properties": ("apiextensions_v1", "JSONSchemaProps"),
    "apiextensions_v1.JSONSchemaProps.patternProperties": ("apiextensions_v1", "JSONSchemaProps"),
    "apiextensions_v1.JSONSchemaProps.dependencies": ("apiextensions_v1", "JSONSchemaPropsOrStringArray"),
    "authentication_v1.UserInfo.extra": {"type": "array", "items": {"type": "string"}},
    "authorization_v1.SubjectAccessReviewSpec.extra": {"type": "array", "items": {"type": "string"}},
    "certificates_v1.CertificateSigningRequestSpec.extra": {"type": "array", "items": {"type": "string"}},
    "core_v1.ConfigMap.binaryData": {"type": "string", "format": "byte"},
    "core_v1.Secret.data": {"type": "string", "format": "byte"},
    "policy_v1.PodDisruptionBudgetStatus.disruptedPods": ("meta_v1", "Time"),
    **{
        f"core_v1.{path}": _QUANTITY
        for path in (
            "ContainerStatus.allocatedResources",
            "LimitRangeItem.default",
            "LimitRangeItem.defaultRequest",
            "LimitRangeItem.max",
            "LimitRangeItem.maxLimitRequestRatio",
            "LimitRangeItem.min",
            "NodeStatus.allocatable",
            "NodeStatus.capacity",
            "PersistentVolumeClaimStatus.allocatedResources",
            "PersistentVolumeClaimStatus.capacity",
            "PersistentVolumeSpec.capacity",
            "PodSpec.overhead",
            "PodStatus.allocatedResources",
            "ResourceQuotaSpec.hard",
            "ResourceQuotaStatus.hard",
            "ResourceQuotaStatus.used",
            "ResourceRequirements.limits",
            "ResourceRequirements.requests",
            "VolumeResourceRequirements.limits",
            "VolumeResourceRequirements.requests",
        )
    },
    "node_v1.Overhead.podFixed": _QUANTITY,
}


def _keyed(*keys: str, strategy: str = "merge") -> dict:
    """A list merged by key: strategic merge patch and server-side apply both."""
    return {
        "x-kubernetes-patch-merge-key": keys[0],
        "x-kubernetes-patch-strategy": strategy,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": list(keys),
    }


_MERGED_SET = {"x-kubernetes-patch-strategy": "merge", "x-kubernetes-list-type": "set"}
_SET = {"x-kubernetes-list-type": "set"}
_CONDITIONS = _keyed("type")

# Per-field list and patch semantics ("module.Class" -> field -> extensions), as the Go struct
# tags of the Kubernetes API types declare them.
_FIELD_EXTENSIONS: dict[str, dict[str, dict]] = {
    "meta_v1.ObjectMeta": {"finalizers": _MERGED_SET, "ownerReferences": _keyed("uid")},
    "core_v1.PodSpec": {
        "containers": _keyed("name"),
        "initContainers": _keyed("name"),
        "ephemeralContainers": _keyed("name"),
        "imagePullSecrets": _keyed("name"),
        "schedulingGates": _keyed("name"),
        "volumes": _keyed("name", strategy="merge,retainKeys"),
        "resourceClaims": _keyed("name", strategy="merge,retainKeys"),
        "hostAliases": _keyed("ip"),
        "topologySpreadConstraints": _keyed("topologyKey", "whenUnsatisfiable"),
        "evictionResponders": _keyed("name"),
    },
    "core_v1.PodStatus": {
        "conditions": _CONDITIONS,
        "podIPs": _keyed("ip"),
        "hostIPs": {"x-kubernetes-patch-merge-key": "ip", "x-kubernetes-patch-strategy": "merge"},
        "resourceClaimStatuses": _keyed("name", strategy="merge,retainKeys"),
        "nodeAllocatableResourceClaimStatuses": _keyed("resourceClaimName"),
        "volumeHealth": {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    },
    "core_v1.PodVolumeHealth": {"healthConditions": _keyed("status", "reason")},
    "core_v1.VolumeHealthStatus": {"healthConditions": _keyed("status", "reason")},
    "core_v1.ResourceStatus": {
        "resources": {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["resourceID"]}
    },
    "core_v1.NodeAllocatableResourceClaimStatus": {
        "containers": _SET,
        "overhead": _keyed("name"),
        "mapping": _keyed("name"),
    },
    "core_v1.NodePodPreemptionPolicy": {"disableResizePreemption": _SET},
    "core_v1.ContainerRestartRuleOnExitCodes": {"values": _SET},
    "core_v1.Container": {
        "env": _keyed("name"),
        "ports": _keyed("containerPort", "protocol"),
        "volumeMounts": _keyed("mountPath"),
        "volumeDevices": _keyed("devicePath"),
    },
    "core_v1.EphemeralContainer": {
        "env": _keyed("name"),
        "ports": _keyed("containerPort", "protocol"),
        "volumeMounts": _keyed("mountPath"),
        "volumeDevices": _keyed("devicePath"),
    },
    "core_v1.ContainerStatus": {
        "volumeMounts": _keyed("mountPath"),
        "allocatedResourcesStatus": _keyed("name"),
    },
    "core_v1.ResourceRequirements": {
        "claims": {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}
    },
    "core_v1.VolumeMount": {"bindMountOptions": _SET},
    "core_v1.NodeSpec": {"podCIDRs": _MERGED_SET},
    "core_v1.NodeStatus": {"addresses": _keyed("type"), "conditions": _CONDITIONS},
    "core_v1.NamespaceStatus": {"conditions": _CONDITIONS},
    "core_v1.PersistentVolumeClaimStatus": {"conditions": _CONDITIONS},
    "core_v1.ReplicationControllerStatus": {"conditions": _CONDITIONS},
    "core_v1.ServiceStatus": {"conditions": _CONDITIONS},
    "core_v1.ComponentStatus": {"conditions": _CONDITIONS},
    "core_v1.ServiceSpec": {"ports": _keyed("port", "protocol")},
    "core_v1.ServiceAccount": {"secrets": _keyed("name")},
    "apps_v1.DeploymentSpec": {"strategy": {"x-kubernetes-patch-strategy": "retainKeys"}},
    "apps_v1.DeploymentStatus": {"conditions": _CONDITIONS},
    "apps_v1.ReplicaSetStatus": {"conditions": _CONDITIONS},
    "apps_v1.StatefulSetStatus": {"conditions": _CONDITIONS},
    "apps_v1.DaemonSetStatus": {"conditions": _CONDITIONS},
    "batch_v1.JobStatus": {
        "conditions": {
            "x-kubernetes-patch-merge-key": "type",
            "x-kubernetes-patch-strategy": "merge",
            "x-kubernetes-list-type": "atomic",
        }
    },
    "batch_v1.JobSchedulingConfiguration": {"resourceClaims": _keyed("name")},
    "batch_v1.UncountedTerminatedPods": {"succeeded": _SET, "failed": _SET},
    "batch_v1.PodFailurePolicyOnExitCodesRequirement": {"values": _SET},
    "policy_v1.PodDisruptionBudgetSpec": {"selector": {"x-kubernetes-patch-strategy": "replace"}},
    "policy_v1.PodDisruptionBudgetStatus": {"conditions": _CONDITIONS},
    "discovery_v1.Endpoint": {"addresses": _SET},
    "certificates_v1.CertificateSigningRequestStatus": {
        "conditions": {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
    },
    "apiextensions_v1.CustomResourceDefinitionStatus": {
        "conditions": {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
    },
    "apiextensions_v1.JSONSchemaProps": {"x-kubernetes-validations": _keyed("rule")},
    "storage_v1.CSIDriverSpec": {"volumeLifecycleModes": _SET},
    "storage_v1.CSINodeSpec": {"drivers": _keyed("name")},
}
# Structs that server-side apply replaces whole (x-kubernetes-map-type: atomic).
_ATOMIC_STRUCTS = frozenset(
    {
        "meta_v1.LabelSelector",
        "meta_v1.OwnerReference",
        "core_v1.ObjectReference",
        "core_v1.LocalObjectReference",
        "core_v1.TypedLocalObjectReference",
        "core_v1.SecretReference",
        "core_v1.NodeSelector",
        "core_v1.NodeSelectorTerm",
        "core_v1.TopologySelectorTerm",
        "core_v1.ConfigMapKeySelector",
        "core_v1.SecretKeySelector",
        "core_v1.FileKeySelector",
        "core_v1.ObjectFieldSelector",
        "core_v1.ResourceFieldSelector",
        "core_v1.ScopeSelector",
        "core_v1.EndpointAddress",
        "core_v1.EvictionResponder",
        "core_v1.EndpointPort",
        "discovery_v1.EndpointPort",
        "networking_v1.ServiceBackendPort",
        "rbac_v1.RoleRef",
        "rbac_v1.Subject",
        "autoscaling_v1.CrossVersionObjectReference",
    }
)

# -- schemas ---------------------------------------------------------------------------------

TypeKey = tuple[str, str]  # (lightkube module, type name)


@functools.cache
def model_schema(module: str, name: str) -> tuple[dict, frozenset[TypeKey]]:
    """The components schema of one type and the types it refers to. Shared: never mutate."""
    alias = _ALIASES.get((module, name))
    if alias is not None:
        return alias, frozenset()
    mod = load_module(module)
    model = mod.model(name)
    if model is None:
        return dict(_ALIAS_FALLBACK.get(mod.aliases.get(name, ""), {})), frozenset()
    deps: set[TypeKey] = set()
    properties: dict[str, dict] = {}
    extensions = _FIELD_EXTENSIONS.get(f"{module}.{name}", {})
    for field in model.fields:
        prop = _type_schema(field.type, module, deps, map_key=f"{module}.{name}.{field.name}")
        if "$ref" in prop:
            prop = {"allOf": [prop]}
        if field.description:
            prop["description"] = field.description
        prop.update(extensions.get(field.name, {}))
        properties[field.name] = prop
    schema: dict = {"description": model.description, "type": "object", "properties": properties}
    required = [f.name for f in model.fields if f.required]
    if required:
        schema["required"] = required
    if model.gvk:
        group, version, kind = model.gvk
        schema["x-kubernetes-group-version-kind"] = [{"group": group, "kind": kind, "version": version}]
    if f"{module}.{name}" in _ATOMIC_STRUCTS:
        schema["x-kubernetes-map-type"] = "atomic"
    return schema, frozenset(deps)


def _type_schema(ann: str, module: str, deps: set[TypeKey], *, map_key: str = "") -> dict:
    if ann.startswith("Optional[") and ann.endswith("]"):
        ann = ann[len("Optional[") : -1]
    if ann.startswith("List[") and ann.endswith("]"):
        return {"type": "array", "items": _type_schema(ann[len("List[") : -1], module, deps)}
    scalar = {"str": "string", "int": "integer", "bool": "boolean", "float": "number"}.get(ann)
    if scalar:
        return {"type": scalar, "format": "double"} if scalar == "number" else {"type": scalar}
    if ann in ("dict", "Dict"):
        value = _MAP_VALUES.get(map_key, {"type": "string"})
        if isinstance(value, tuple):
            deps.add(value)
            value = _ref(schema_name(*value))
        return {"type": "object", "additionalProperties": value}
    if ann == "Any":
        return {}
    target_module, _, target = ann.rpartition(".")
    key = (target_module or module, target)
    deps.add(key)
    return _ref(schema_name(*key))


def closure(roots: Iterable[TypeKey]) -> dict[str, dict]:
    """Schemas of the given types and everything they refer to, by upstream name."""
    out: dict[str, dict] = {}
    pending = list(roots)
    seen: set[TypeKey] = set()
    while pending:
        key = pending.pop()
        if key in seen:
            continue
        seen.add(key)
        schema, deps = model_schema(*key)
        out[schema_name(*key)] = schema
        pending.extend(deps - seen)
    return dict(sorted(out.items()))


def _kind_key(group: str, version: str, kind: str) -> TypeKey | None:
    module = module_for(group, version)
    return (module, kind) if kind in load_module(module).classes else None


# -- custom resources --------------------------------------------------------------------------

_META_ROOTS: tuple[TypeKey, ...] = (
    ("meta_v1", "ObjectMeta"),
    ("meta_v1", "ListMeta"),
    ("meta_v1", "Status"),
    ("meta_v1", "DeleteOptions"),
    ("meta_v1", "WatchEvent"),
    ("meta_v1", "Patch"),
)


def _custom_schemas(info: registry.ResourceInfo) -> dict[str, dict]:
    """The schema of a resource described by its own OpenAPI v3 schema, and of its list."""
    gvk = {"group": info.group, "kind": info.kind, "version": info.version}
    schema = dict(info.schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    properties = dict(schema.get("properties") or {})
    if properties or not schema.get("x-kubernetes-preserve-unknown-fields"):
        properties["apiVersion"] = {"type": "string", "description": _API_VERSION_DOC}
        properties["kind"] = {"type": "string", "description": _KIND_DOC}
        properties["metadata"] = {
            "allOf": [_ref(schema_name("meta_v1", "ObjectMeta"))],
            "description": "Standard object's metadata.",
        }
        schema["properties"] = properties
    schema.setdefault("type", "object")
    schema["x-kubernetes-group-version-kind"] = [gvk]
    name = custom_schema_name(info.group, info.version, info.kind)
    list_schema = {
        "description": f"{info.kind}List is a list of {info.kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": _API_VERSION_DOC},
            "items": {
                "type": "array",
                "description": f"List of {info.plural.lower()}.",
                "items": _ref(name),
            },
            "kind": {"type": "string", "description": _KIND_DOC},
            "metadata": {
                "allOf": [_ref(schema_name("meta_v1", "ListMeta"))],
                "description": "Standard list metadata.",
            },
        },
        "x-kubernetes-group-version-kind": [{**gvk, "kind": info.list_kind}],
    }
    return {name: schema, custom_schema_name(info.group, info.version, info.list_kind): list_schema}


_API_VERSION_DOC = (
    "APIVersion defines the versioned schema of this representation of an object. Servers should "
    "convert recognized schemas to the latest internal value, and may reject unrecognized values."
)
_KIND_DOC = (
    "Kind is a string value representing the REST resource this object represents. Servers may "
    "infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase."
)

# -- operations --------------------------------------------------------------------------------


def _param(name: str, where: str, description: str, type_: str = "string") -> dict:
    return {
        "name": name,
        "in": where,
        "description": description,
        **({"required": True} if where == "path" else {}),
        "schema": {"type": type_},
    }


P_NAME = _param("name", "path", "name of the object")
P_NAMESPACE = _param("namespace", "path", "object name and auth scope, such as for teams and projects")
P_PRETTY = _param("pretty", "query", "If 'true', then the output is pretty printed.")
P_DRY_RUN = _param("dryRun", "query", "When present (All), modifications are not persisted.")
P_FIELD_MANAGER = _param("fieldManager", "query", "A name associated with the actor making these changes.")
P_FIELD_VALIDATION = _param(
    "fieldValidation",
    "query",
    "How the server handles unknown or duplicate fields in the object: Ignore, Warn or Strict.",
)
P_FORCE = _param(
    "force", "query", "Force an apply request to take fields owned by other managers.", "boolean"
)
LIST_PARAMS = [
    _param("allowWatchBookmarks", "query", "Request watch events of type BOOKMARK.", "boolean"),
    _param("continue", "query", "The continue token of the previous page of a paginated list."),
    _param("fieldSelector", "query", "A selector restricting the returned objects by their fields."),
    _param("labelSelector", "query", "A selector restricting the returned objects by their labels."),
    _param("limit", "query", "The maximum number of objects to return in one page.", "integer"),
    _param("resourceVersion", "query", "Which resource versions a request may be served from."),
    _param("resourceVersionMatch", "query", "How resourceVersion applies: Exact or NotOlderThan."),
    _param("sendInitialEvents", "query", "Begin a watch with the current objects and a bookmark.", "boolean"),
    _param("timeoutSeconds", "query", "Timeout for the list or watch call.", "integer"),
    _param("watch", "query", "Watch for changes instead of listing.", "boolean"),
]
DELETE_PARAMS = [
    P_DRY_RUN,
    _param("gracePeriodSeconds", "query", "Seconds before the object is deleted.", "integer"),
    _param("orphanDependents", "query", "Deprecated: use propagationPolicy.", "boolean"),
    _param(
        "propagationPolicy", "query", "Garbage collection of dependents: Orphan, Background or Foreground."
    ),
]
WRITE_PARAMS = [P_DRY_RUN, P_FIELD_MANAGER, P_FIELD_VALIDATION]
PATCH_PARAMS = [*WRITE_PARAMS, P_FORCE]
CONNECT_PARAMS = {
    "exec": ["command", "container", "stderr", "stdin", "stdout", "tty"],
    "attach": ["container", "stderr", "stdin", "stdout", "tty"],
    "portforward": ["ports"],
}
LOG_PARAMS = [
    _param("container", "query", "The container for which to stream logs."),
    _param("follow", "query", "Follow the log stream of the pod.", "boolean"),
    _param(
        "limitBytes", "query", "Bytes to read from the server before terminating the log output.", "integer"
    ),
    _param("previous", "query", "Return the logs of the previous, terminated container.", "boolean"),
    _param("sinceSeconds", "query", "Relative time in seconds before now to show logs from.", "integer"),
    _param("tailLines", "query", "Number of lines from the end of the logs to show.", "integer"),
    _param("timestamps", "query", "Prefix every line with an RFC 3339 timestamp.", "boolean"),
]


def _group_part(group: str) -> str:
    if not group:
        return "Core"
    stem = group.removesuffix(".k8s.io")
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[.-]", stem))


def _content(schema: dict, types: Iterable[str] = JSON_TYPES) -> dict:
    return {t: {"schema": schema} for t in types}


@dataclasses.dataclass(frozen=True, slots=True)
class _Target:
    """The resource an operation acts on, with the names operation ids and schemas use."""

    info: registry.ResourceInfo
    schema: str  # components name of the kind
    list_schema: str

    @property
    def gvk(self) -> dict:
        return {"group": self.info.group, "kind": self.info.kind, "version": self.info.version}

    @property
    def id_part(self) -> str:
        return _group_part(self.info.group) + self.info.version.capitalize()

    @property
    def tag(self) -> str:
        part = _group_part(self.info.group)
        return f"{part[:1].lower()}{part[1:]}_{self.info.version}"


def _op(
    target: _Target,
    action: str,
    op_id: str,
    description: str,
    *,
    gvk: dict | None = None,
    params: list[dict] | None = None,
    body: dict | None = None,
    body_types: Iterable[str] = ("*/*",),
    responses: dict | None = None,
) -> dict:
    op: dict = {"tags": [target.tag], "description": description, "operationId": op_id}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"content": _content(body, body_types), "required": True}
    op["responses"] = {**(responses or {}), "401": {"description": "Unauthorized"}}
    op["x-kubernetes-action"] = action
    op["x-kubernetes-group-version-kind"] = gvk or target.gvk
    return op


def _ok(schema: dict, *codes: str, types: Iterable[str] = JSON_TYPES) -> dict:
    return {code: {"description": _STATUS_TEXT[code], "content": _content(schema, types)} for code in codes}


_STATUS_TEXT = {"200": "OK", "201": "Created", "202": "Accepted"}


def resource_paths(target: _Target, paths: dict[str, dict]) -> None:
    """Add the operations of one resource (and its subresources) to ``paths``."""
    info = target.info
    base = f"/apis/{info.api_version}" if info.group else "/api/v1"
    scope = "Namespaced" if info.namespaced else ""
    ns_params = [P_NAMESPACE] if info.namespaced else []
    coll = f"{base}/namespaces/{{namespace}}/{info.plural}" if info.namespaced else f"{base}/{info.plural}"
    item = f"{coll}/{{name}}"
    obj, lst, kind, idp = _ref(target.schema), _ref(target.list_schema), info.kind, target.id_part
    status, delete_options = (
        _ref(schema_name("meta_v1", "Status")),
        _ref(schema_name("meta_v1", "DeleteOptions")),
    )
    verbs = set(info.verbs)

    collection: dict = {}
    if "list" in verbs:
        collection["get"] = _op(
            target,
            "list",
            f"list{idp}{scope}{kind}",
            f"list or watch objects of kind {kind}",
            params=LIST_PARAMS,
            responses=_ok(lst, "200", types=WATCH_TYPES),
        )
    if "create" in verbs:
        collection["post"] = _op(
            target,
            "post",
            f"create{idp}{scope}{kind}",
            f"create a {kind}",
            params=WRITE_PARAMS,
            body=obj,
            responses=_ok(obj, "200", "201", "202"),
        )
    if "deletecollection" in verbs:
        collection["delete"] = _op(
            target,
            "deletecollection",
            f"delete{idp}Collection{scope}{kind}",
            f"delete collection of {kind}",
            params=[*DELETE_PARAMS, *LIST_PARAMS[1:9]],
            body=delete_options,
            responses=_ok(status, "200"),
        )
    if collection:
        paths[coll] = {**collection, "parameters": [*ns_params, P_PRETTY]}

    single: dict = {}
    if "get" in verbs:
        single["get"] = _op(
            target, "get", f"read{idp}{scope}{kind}", f"read the specified {kind}", responses=_ok(obj, "200")
        )
    if "update" in verbs:
        single["put"] = _op(
            target,
            "put",
            f"replace{idp}{scope}{kind}",
            f"replace the specified {kind}",
            params=WRITE_PARAMS,
            body=obj,
            responses=_ok(obj, "200", "201"),
        )
    if "patch" in verbs:
        single["patch"] = _patch_op(
            target, f"patch{idp}{scope}{kind}", f"partially update the specified {kind}", obj
        )
    if "delete" in verbs:
        single["delete"] = _op(
            target,
            "delete",
            f"delete{idp}{scope}{kind}",
            f"delete a {kind}",
            params=DELETE_PARAMS,
            body=delete_options,
            responses=_ok(status, "200", "202"),
        )
    if single:
        paths[item] = {**single, "parameters": [P_NAME, *ns_params, P_PRETTY]}

    if "watch" in verbs:
        _watch_paths(target, paths, base=base, scope=scope, ns_params=ns_params)
    if "list" in verbs and info.namespaced:
        paths[f"{base}/{info.plural}"] = {
            "get": _op(
                target,
                "list",
                f"list{idp}{kind}ForAllNamespaces",
                f"list or watch objects of kind {kind}",
                params=LIST_PARAMS,
                responses=_ok(lst, "200", types=WATCH_TYPES),
            ),
            "parameters": [P_PRETTY],
        }
    for sub in info.subresources:
        _subresource_paths(target, sub, paths, item=item, ns_params=ns_params)


def _patch_op(target: _Target, op_id: str, description: str, obj: dict, *, gvk: dict | None = None) -> dict:
    # Strategic merge patch only for types with patch metadata (built-ins); kubectl apply then
    # sends a JSON merge patch to the others, as it does for CRDs.
    types = (
        PATCH_TYPES
        if not _is_schema_driven(target.info)
        else tuple(t for t in PATCH_TYPES if "strategic" not in t)
    )
    return _op(
        target,
        "patch",
        op_id,
        description,
        gvk=gvk,
        params=PATCH_PARAMS,
        body=_ref(schema_name("meta_v1", "Patch")),
        body_types=types,
        responses=_ok(obj, "200", "201"),
    )


def _watch_paths(target: _Target, paths: dict, *, base: str, scope: str, ns_params: list[dict]) -> None:
    info, idp, kind = target.info, target.id_part, target.info.kind
    event = _ref(schema_name("meta_v1", "WatchEvent"))
    ns = "namespaces/{namespace}/" if info.namespaced else ""
    watch_params = [p for p in LIST_PARAMS if p["name"] != "watch"]
    paths[f"{base}/watch/{ns}{info.plural}/{{name}}"] = {
        "get": _op(
            target,
            "watch",
            f"watch{idp}{scope}{kind}",
            f"watch changes to an object of kind {kind}",
            params=watch_params,
            responses=_ok(event, "200", types=WATCH_TYPES),
        ),
        "parameters": [P_NAME, *ns_params, P_PRETTY],
    }
    paths[f"{base}/watch/{ns}{info.plural}"] = {
        "get": _op(
            target,
            "watchlist",
            f"watch{idp}{scope}{kind}List",
            f"watch individual changes to a list of {kind}",
            params=watch_params,
            responses=_ok(event, "200", types=WATCH_TYPES),
        ),
        "parameters": [*ns_params, P_PRETTY],
    }
    if info.namespaced:
        paths[f"{base}/watch/{info.plural}"] = {
            "get": _op(
                target,
                "watchlist",
                f"watch{idp}{kind}ListForAllNamespaces",
                f"watch individual changes to a list of {kind}",
                params=watch_params,
                responses=_ok(event, "200", types=WATCH_TYPES),
            ),
            "parameters": [P_PRETTY],
        }


def _subresource_paths(target: _Target, sub: str, paths: dict, *, item: str, ns_params: list[dict]) -> None:
    info = target.info
    group, version, kind = builtin.subresource_gvk(info, sub)
    gvk = {"group": group, "kind": kind, "version": version}
    key = _kind_key(group, version, kind)
    body = _ref(schema_name(*key)) if key else _ref(target.schema)
    scope = "Namespaced" if info.namespaced else ""
    name = f"{target.id_part}{scope}{info.kind}{sub.capitalize()}"
    ops: dict = {}
    verbs = builtin.subresource_verbs(sub)
    if sub in builtin.CONNECT_SUBRESOURCES:
        params = [_param(p, "query", f"{p} of the {sub} request") for p in CONNECT_PARAMS[sub]]
        for method in ("get", "post"):
            ops[method] = _op(
                target,
                "connect",
                f"connect{target.id_part}{method.capitalize()}{scope}{info.kind}{sub.capitalize()}",
                f"connect {method.upper()} requests to {sub} of {info.kind}",
                gvk=gvk,
                params=params,
                responses=_ok({"type": "string"}, "200", types=("*/*",)),
            )
    elif sub == "log":
        ops["get"] = _op(
            target,
            "get",
            f"read{name}",
            f"read log of the specified {info.kind}",
            gvk=gvk,
            params=LOG_PARAMS,
            responses=_ok({"type": "string"}, "200", types=("text/plain",)),
        )
    else:
        if "get" in verbs:
            ops["get"] = _op(
                target,
                "get",
                f"read{name}",
                f"read {sub} of the specified {info.kind}",
                gvk=gvk,
                responses=_ok(body, "200"),
            )
        if "update" in verbs:
            ops["put"] = _op(
                target,
                "put",
                f"replace{name}",
                f"replace {sub} of the specified {info.kind}",
                gvk=gvk,
                params=WRITE_PARAMS,
                body=body,
                responses=_ok(body, "200", "201"),
            )
        if "patch" in verbs:
            ops["patch"] = _patch_op(
                target, f"patch{name}", f"partially update {sub} of the specified {info.kind}", body, gvk=gvk
            )
        if "create" in verbs:
            ops["post"] = _op(
                target,
                "post",
                f"create{name}",
                f"create {sub} of a {info.kind}",
                gvk=gvk,
                params=WRITE_PARAMS,
                body=body,
                responses=_ok(body, "200", "201", "202"),
            )
    paths[f"{item}/{sub}"] = {**ops, "parameters": [P_NAME, *ns_params, P_PRETTY]}


def _is_schema_driven(info: registry.ResourceInfo) -> bool:
    return info.custom or info.schema is not None


# -- documents ---------------------------------------------------------------------------------


def group_version_document(infos: list[registry.ResourceInfo], group: str, version: str) -> dict:
    """The OpenAPI v3 document of one group/version, from its resources."""
    paths: dict[str, dict] = {}
    roots: set[TypeKey] = set(_META_ROOTS)
    extra: dict[str, dict] = {}
    for info in sorted(infos, key=lambda i: i.plural):
        key = None if _is_schema_driven(info) else _kind_key(info.group, info.version, info.kind)
        list_key = _kind_key(info.group, info.version, info.list_kind) if key else None
        if key:
            roots.add(key)
            if list_key:
                roots.add(list_key)
            target = _Target(info, schema_name(*key), schema_name(*(list_key or key)))
        else:
            extra.update(_custom_schemas(info))
            target = _Target(
                info,
                custom_schema_name(info.group, info.version, info.kind),
                custom_schema_name(info.group, info.version, info.list_kind),
            )
        for sub in info.subresources:
            sub_key = _kind_key(*builtin.subresource_gvk(info, sub))
            if sub_key:
                roots.add(sub_key)
        resource_paths(target, paths)
    schemas = closure(roots)
    schemas.update(extra)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": discovery.GIT_VERSION},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header",
                }
            },
        },
        "security": [{"BearerToken": []}],
    }


def document_path(group: str, version: str) -> str:
    """``api/v1`` or ``apis/<group>/<version>``: the key in the v3 index."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def inputs_hash(infos: list[registry.ResourceInfo]) -> str:
    """A hash of everything a group/version document is built from (upstream: SHA-512, hex)."""
    data = [dataclasses.asdict(info) for info in sorted(infos, key=lambda i: i.plural)]
    payload = orjson.dumps(
        [GENERATOR_VERSION, models_version(), discovery.GIT_VERSION, data], option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha512(payload).hexdigest().upper()


def index_document(hashes: dict[str, str]) -> dict:
    return {
        "paths": {
            path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={h}"} for path, h in sorted(hashes.items())
        }
    }


@dataclasses.dataclass(frozen=True, slots=True)
class Document:
    body: bytes  # JSON
    hash: str  # the index's hash: a request carrying it may be cached as immutable


class OpenAPI:
    """The served documents, built on first request and cached until their inputs change."""

    def __init__(self, reg: registry.Registry) -> None:
        self._registry = reg
        self._hashes: dict[str, str] | None = None
        self._index: bytes | None = None
        self._docs: dict[str, Document] = {}  # path -> last built document
        self._v2: bytes | None = None
        reg.on_change(self._invalidate)

    def _invalidate(self) -> None:
        # Documents stay: each is reused if its inputs hash is unchanged.
        self._hashes = self._index = self._v2 = None

    def _group_versions(self) -> dict[str, tuple[str, str, list[registry.ResourceInfo]]]:
        out = {}
        for group, versions in self._registry.groups():
            for version in versions:
                out[document_path(group, version)] = (
                    group,
                    version,
                    self._registry.resources(group, version),
                )
        return out

    def hashes(self) -> dict[str, str]:
        if self._hashes is None:
            self._hashes = {
                path: inputs_hash(infos) for path, (_, _, infos) in self._group_versions().items()
            }
        return self._hashes

    def index(self) -> bytes:
        """``/openapi/v3``."""
        if self._index is None:
            self._index = orjson.dumps(index_document(self.hashes()))
        return self._index

    def document(self, path: str) -> Document | None:
        """``/openapi/v3/<path>``, path being ``api/v1`` or ``apis/<group>/<version>``."""
        h = self.hashes().get(path)
        if h is None:
            return None
        cached = self._docs.get(path)
        if cached is not None and cached.hash == h:
            return cached
        group, version, infos = self._group_versions()[path]
        doc = Document(orjson.dumps(group_version_document(infos, group, version)), h)
        self._docs[path] = doc
        return doc

    def v2_json(self) -> bytes:
        """``/openapi/v2`` as JSON: every group/version in one Swagger 2.0 document."""
        if self._v2 is None:
            docs = [
                group_version_document(infos, group, version)
                for group, version, infos in self._group_versions().values()
            ]
            self._v2 = orjson.dumps(v2_document(docs))
        return self._v2

    def v2_protobuf(self) -> bytes:
        """``/openapi/v2`` as protobuf: the JSON document above as a gnostic ``openapi_v2.Document``
        (``openapi_v2_proto``), encoded once per JSON document (so rebuilt after a registry change)."""
        from services.apiserver import openapi_v2_proto

        source = self.v2_json()
        cached: tuple[bytes, bytes] | None = getattr(self, "_v2_protobuf", None)
        if cached is None or cached[0] is not source:
            cached = self._v2_protobuf = (source, openapi_v2_proto.encode(orjson.loads(source)))
        return cached[1]


# One OpenAPI per registry, for ``respond``; it goes when the registry does.
_SERVED: weakref.WeakKeyDictionary[registry.Registry, OpenAPI] = weakref.WeakKeyDictionary()


def served(reg: registry.Registry) -> OpenAPI:
    found = _SERVED.get(reg)
    if found is None:
        found = _SERVED[reg] = OpenAPI(reg)
    return found


def wants_protobuf(accept: str) -> bool:
    for media, _ in discovery.parse_accept(accept or ""):
        if media.startswith("application/com.github.proto-openapi.spec.v2"):
            return True
        if media in ("application/json", "application/*", "*/*"):
            return False
    return False


def respond(
    reg: registry.Registry, path: str, *, accept: str = "", query: dict[str, list[str]] | None = None
) -> responses.Response:
    """The answer to ``/openapi/v3``, ``/openapi/v3/<group-version>`` or ``/openapi/v2``.

    A v3 request carrying the current ``hash`` may be cached for good; an outdated hash is
    redirected to the current URL, as upstream does.
    """
    api = served(reg)
    path = path.rstrip("/")
    if path == "/openapi/v3":
        return responses.Response(200, api.index(), headers=[("cache-control", "no-cache, private")])
    if path.startswith("/openapi/v3/"):
        doc = api.document(path.removeprefix("/openapi/v3/"))
        if doc is not None:
            asked = ((query or {}).get("hash") or [""])[0]
            if asked and asked != doc.hash:
                return responses.Response(301, b"", headers=[("location", f"{path}?hash={doc.hash}")])
            cache = "public, immutable" if asked else "no-cache, private"
            return responses.Response(
                200, doc.body, headers=[("etag", f'"{doc.hash}"'), ("cache-control", cache)]
            )
    elif path == "/openapi/v2":
        if wants_protobuf(accept):
            return responses.Response(200, api.v2_protobuf(), PROTOBUF_V2)
        return responses.Response(200, api.v2_json())
    raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")


# -- OpenAPI v2 ---------------------------------------------------------------------------------


def v2_document(v3_docs: list[dict]) -> dict:
    """One Swagger 2.0 document from the v3 group/version documents."""
    paths: dict[str, dict] = {}
    definitions: dict[str, dict] = {}
    for doc in v3_docs:
        for name, schema in doc["components"]["schemas"].items():
            definitions[name] = _v2_schema(schema)
        for path, item in doc["paths"].items():
            paths[path] = _v2_path(item)
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": discovery.GIT_VERSION},
        "paths": dict(sorted(paths.items())),
        "definitions": dict(sorted(definitions.items())),
        "securityDefinitions": {
            "BearerToken": {
                "type": "apiKey",
                "description": "Bearer Token authentication",
                "name": "authorization",
                "in": "header",
            }
        },
        "security": [{"BearerToken": []}],
    }


def _v2_schema(schema: object) -> object:
    if isinstance(schema, list):
        return [_v2_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "$ref" and isinstance(value, str):
            out[key] = value.replace(REF_PREFIX, "#/definitions/")
        elif key == "allOf" and len(value) == 1 and "$ref" in value[0]:
            out.update(_v2_schema(value[0]))
        elif key == "oneOf":
            # Swagger 2.0 has no oneOf: quantities and int-or-strings travel as strings.
            out.setdefault("type", "string")
        elif key == "properties":
            out[key] = {k: _v2_schema(v) for k, v in value.items()}
        else:
            out[key] = _v2_schema(value)
    return out


def _v2_param(param: dict) -> dict:
    out = {k: v for k, v in param.items() if k != "schema"}
    out.update(param.get("schema", {}))
    return out


def _v2_path(item: dict) -> dict:
    out: dict = {}
    for method, op in item.items():
        if method == "parameters":
            out["parameters"] = [_v2_param(p) for p in op]
            continue
        new = {k: v for k, v in op.items() if k not in ("parameters", "requestBody", "responses")}
        params = [_v2_param(p) for p in op.get("parameters", [])]
        body = op.get("requestBody")
        if body:
            types = list(body["content"])
            new["consumes"] = types
            schema = _v2_schema(next(iter(body["content"].values()))["schema"])
            params.append({"name": "body", "in": "body", "required": True, "schema": schema})
        if params:
            new["parameters"] = params
        produces: list[str] = []
        responses = {}
        for code, response in op["responses"].items():
            entry = {"description": response["description"]}
            for media, content in response.get("content", {}).items():
                entry["schema"] = _v2_schema(content["schema"])
                if media not in produces:
                    produces.append(media)
            responses[code] = entry
        new["produces"] = produces
        new["responses"] = responses
        new["schemes"] = ["https"]
        out[method] = new
    return out
