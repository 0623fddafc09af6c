"""The three body-patch types of PATCH: JSON patch, JSON merge patch and strategic merge patch.

JSON patch (RFC 6902) is the ``jsonpatch`` library's; merge patch (RFC 7386) is a
dozen lines. Strategic merge patch is Kubernetes' own (``apimachinery:pkg/util/
strategicpatch``): maps merge, ``null`` deletes, and a list merges only when the
Go type says so, element-wise by a merge key (containers by ``name``) or as a set
of primitives (finalizers); every other list is replaced. Directives in the patch
refine that: ``$patch: replace|delete`` on maps and list elements, ``$retainKeys``,
``$setElementOrder/<list>`` and ``$deleteFromPrimitiveList/<list>``.

The Go struct tags are replaced by data: ``PATCH_PATHS`` maps each built-in kind
to ``{json path: (strategy, merge key)}`` with ``"*"`` standing for "any list
element", and ``patch_meta_for`` folds that into a ``PatchMeta`` tree walked in
step with the object. Unknown paths behave as untagged Go fields (maps merge,
lists are replaced), which is also what a CRD would get, but CRDs have no tags
at all, so the caller refuses strategic patches for them (415) via
``is_strategic_supported``. Server-side apply reuses the same tree.

Element order follows upstream: items named in the patch keep the patch's order
(or ``$setElementOrder``'s), the others keep their place relative to the live
list. All functions copy their input; errors are ``ApiError`` 400/413/422 with
apimachinery's wording, never a 500.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import jsonpatch
import jsonpointer
import orjson

from services.machinery import errors

DIRECTIVE = "$patch"
RETAIN_KEYS = "$retainKeys"
SET_ORDER = "$setElementOrder/"
DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
MAX_JSON_PATCH_OPERATIONS = 10000

_REJECTED = "the server rejected our request due to an error in our request"
_MISSING: Any = object()
_NO_CHILDREN: Mapping[str, Any] = MappingProxyType({})


# --- patch metadata -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class PatchMeta:
    """What the Go tags say about one field, and the same for its children.

    ``strategy``: ``"merge"`` (a list merged by ``merge_key``, or a primitive set
    without one), ``"replace"`` (a map replaced whole), ``"atomic"`` (a map that
    strategic patch merges but server-side apply owns as one value), or ``""``.
    """

    strategy: str = ""
    merge_key: str = ""
    retain_keys: bool = False  # clients send $retainKeys here (union types); the server needs no flag
    children: Mapping[str, PatchMeta] = dataclasses.field(default_factory=lambda: _NO_CHILDREN)

    def child(self, key: str) -> PatchMeta:
        return self.children.get(key, LEAF)

    @property
    def item(self) -> PatchMeta:
        return self.children.get("*", LEAF)

    @property
    def merges_list(self) -> bool:
        return self.strategy == "merge"


LEAF = PatchMeta()

Path = tuple[str, ...]
Tags = dict[Path, tuple[str, str]]  # path -> (strategy, merge key); "merge,retainKeys" allowed

_CONTAINER: Tags = {
    ("ports",): ("merge", "containerPort"),
    ("env",): ("merge", "name"),
    ("volumeMounts",): ("merge", "mountPath"),
    ("volumeDevices",): ("merge", "devicePath"),
}
_OBJECT_META: Tags = {("finalizers",): ("merge", ""), ("ownerReferences",): ("merge", "uid")}
_CONDITIONS: Tags = {("conditions",): ("merge", "type")}


def _under(prefix: Path, tags: Tags) -> Tags:
    return {prefix + path: tag for path, tag in tags.items()}


def _pod_spec() -> Tags:
    tags: Tags = {
        ("volumes",): ("merge,retainKeys", "name"),
        ("imagePullSecrets",): ("merge", "name"),
        ("hostAliases",): ("merge", "ip"),
        ("topologySpreadConstraints",): ("merge", "topologyKey"),
        ("schedulingGates",): ("merge", "name"),
        ("resourceClaims",): ("merge,retainKeys", "name"),
        ("nodeSelector",): ("atomic", ""),
    }
    for field in ("containers", "initContainers", "ephemeralContainers"):
        tags[(field,)] = ("merge", "name")
        tags.update(_under((field, "*"), _CONTAINER))
    return tags


_POD_SPEC = _pod_spec()
_POD_STATUS: Tags = {
    **_CONDITIONS,
    ("podIPs",): ("merge", "ip"),
    ("hostIPs",): ("merge", "ip"),
    ("resourceClaimStatuses",): ("merge,retainKeys", "name"),
}
_POD_TEMPLATE: Tags = {**_under(("metadata",), _OBJECT_META), **_under(("spec",), _POD_SPEC)}
_SELECTOR: Tags = {("selector",): ("atomic", "")}


def _workload(*extra: Tags) -> Tags:
    tags = {**_under(("spec", "template"), _POD_TEMPLATE), **_under(("spec",), _SELECTOR)}
    tags.update(_under(("status",), _CONDITIONS))
    for more in extra:
        tags.update(more)
    return tags


# (group, kind) -> tags beyond metadata's (facts from the kinds' Go struct tags).
PATCH_PATHS: dict[tuple[str, str], Tags] = {
    ("", "Pod"): {**_under(("spec",), _POD_SPEC), **_under(("status",), _POD_STATUS)},
    ("", "PodTemplate"): _under(("template",), _POD_TEMPLATE),
    ("", "ReplicationController"): _workload(),
    ("apps", "Deployment"): _workload({("spec", "strategy"): ("retainKeys", "")}),
    ("apps", "ReplicaSet"): _workload(),
    ("apps", "StatefulSet"): _workload(),
    ("apps", "DaemonSet"): _workload(),
    ("batch", "Job"): _workload(),
    ("batch", "CronJob"): _under(
        ("spec", "jobTemplate"), {**_under(("metadata",), _OBJECT_META), **_workload()}
    ),
    ("", "Node"): {
        ("spec", "podCIDRs"): ("merge", ""),
        **_under(("status",), _CONDITIONS),
        ("status", "addresses"): ("merge", "type"),
    },
    ("", "Service"): {
        ("spec", "ports"): ("merge", "port"),
        ("spec", "selector"): ("atomic", ""),
        **_under(("status",), _CONDITIONS),
    },
    ("", "ServiceAccount"): {("secrets",): ("merge", "name")},
    ("", "Namespace"): _under(("status",), _CONDITIONS),
    ("", "PersistentVolumeClaim"): _under(("status",), _CONDITIONS),
    ("policy", "PodDisruptionBudget"): {
        ("spec", "selector"): ("replace", ""),
        **_under(("status",), _CONDITIONS),
    },
    ("autoscaling", "HorizontalPodAutoscaler"): _under(("status",), _CONDITIONS),
    ("apiregistration.k8s.io", "APIService"): _under(("status",), _CONDITIONS),
}

# Groups served from Go types; anything else is a custom resource (no strategic patch).
BUILTIN_GROUPS = frozenset(
    {
        "", "apps", "batch", "autoscaling", "policy", "coordination.k8s.io", "discovery.k8s.io",
        "events.k8s.io", "networking.k8s.io", "rbac.authorization.k8s.io", "storage.k8s.io",
        "scheduling.k8s.io", "authentication.k8s.io", "authorization.k8s.io", "node.k8s.io",
        "certificates.k8s.io", "admissionregistration.k8s.io", "flowcontrol.apiserver.k8s.io",
        "apiextensions.k8s.io", "apiregistration.k8s.io", "resource.k8s.io", "internal.apiserver.k8s.io",
        "storagemigration.k8s.io",
    }
)  # fmt: skip


def is_strategic_supported(group: str, kind: str) -> bool:
    return group in BUILTIN_GROUPS


def _freeze(tree: dict[str, Any], tag: tuple[str, str]) -> PatchMeta:
    strategies = set(tag[0].split(",")) if tag[0] else set()
    retain = "retainKeys" in strategies
    strategy = next((s for s in ("merge", "replace", "atomic") if s in strategies), "")
    children = {k: _freeze(sub, sub.get("", ("", ""))) for k, sub in tree.items() if k}
    return PatchMeta(strategy, tag[1], retain, MappingProxyType(children))


def meta_from_paths(tags: Tags) -> PatchMeta:
    """Fold a path table into the tree ``strategic_merge_patch`` walks."""
    root: dict[str, Any] = {}
    for path, tag in tags.items():
        node = root
        for part in path:
            node = node.setdefault(part, {})
        node[""] = tag
    return _freeze(root, ("", ""))


@functools.lru_cache(maxsize=256)
def patch_meta_for(group: str, kind: str) -> PatchMeta:
    tags = {**_under(("metadata",), _OBJECT_META), **PATCH_PATHS.get((group, kind), {})}
    return meta_from_paths(tags)


# --- helpers -----------------------------------------------------------------------------------


def clone(value: Any) -> Any:
    """A deep copy of a JSON value (orjson round trip; deepcopy for what orjson refuses)."""
    try:
        return orjson.loads(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError):
        return copy.deepcopy(value)


def unprocessable(detail: str) -> errors.ApiError:
    """Upstream's ``NewGenericServerResponse(422, ...)``: a generic message; the detail goes in a cause."""
    return errors.ApiError(422, "Invalid", _REJECTED, causes=[errors.Cause("FieldValueInvalid", detail)])


def _go_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    return "null" if value is None else "number"


# --- JSON patch and merge patch -------------------------------------------------------------


def json_patch(obj: dict[str, Any], ops: Any) -> dict[str, Any]:
    """RFC 6902. A body that is not a list of operations is a 400; an operation that fails, 422."""
    if not isinstance(ops, list):
        raise errors.bad_request(
            f"json: cannot unmarshal {_go_kind(ops)} into Go value of type jsonpatch.Patch"
        )
    if len(ops) > MAX_JSON_PATCH_OPERATIONS:
        raise errors.too_large(
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {len(ops)}"
        )
    for op in ops:
        if not isinstance(op, dict):
            raise errors.bad_request(
                f"json: cannot unmarshal {_go_kind(op)} into Go value of type jsonpatch.Operation"
            )
    try:
        result = jsonpatch.JsonPatch(ops).apply(clone(obj), in_place=True)
    except jsonpatch.JsonPatchTestFailed:
        failed = next((op.get("path", "") for op in ops if op.get("op") == "test"), "")
        raise unprocessable(f"testing value {failed} failed: test failed") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise unprocessable(str(exc)) from None
    except (TypeError, ValueError, KeyError, IndexError) as exc:  # odd values the library trips on
        raise unprocessable(f"invalid JSON patch operation: {exc}") from None
    if not isinstance(result, dict):
        raise unprocessable("the patched document is not a JSON object")
    return result


def merge_patch(obj: dict[str, Any], patch: Any) -> dict[str, Any]:
    """RFC 7386: objects merge, ``null`` deletes, everything else (lists too) replaces."""
    if not isinstance(patch, dict):
        raise errors.bad_request("Invalid JSON Patch")
    return _merge_into(clone(obj), clone(patch))


def _merge_into(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            target[key] = _merge_into(current if isinstance(current, dict) else {}, value)
        else:
            target[key] = value
    return target


# --- strategic merge patch ------------------------------------------------------------------


def strategic_merge_patch(obj: dict[str, Any], patch: Any, schema: PatchMeta) -> dict[str, Any]:
    """Apply a strategic merge patch; ``schema`` comes from ``patch_meta_for``."""
    if not isinstance(patch, dict):
        raise errors.bad_request("invalid JSON document")
    merged = _merge_map(clone(obj), clone(patch), schema)
    return merged if merged is not None else {}


def _merge_map(original: dict[str, Any], patch: dict[str, Any], meta: PatchMeta) -> dict[str, Any] | None:
    """Merge ``patch`` into ``original`` (both ours to mutate); ``None`` means "delete this map"."""
    directive = patch.pop(DIRECTIVE, None)
    if directive == "replace":
        return _strip(patch)
    if directive == "delete":
        return None
    if directive not in (None, "merge"):  # "merge" is every map's default: accepted as a no-op
        raise errors.bad_request(f"unknown patch type: {directive} in map: {patch}")
    _apply_retain_keys(original, patch)
    _apply_element_orders(original, patch, meta)
    for key, value in patch.items():
        if key.startswith(DELETE_PRIMITIVE):
            _delete_from_primitive_list(original, key[len(DELETE_PRIMITIVE) :], value)
        elif key.startswith(SET_ORDER) or key == RETAIN_KEYS:
            continue
        elif value is None:
            original.pop(key, None)
        else:
            _merge_field(original, key, value, meta.child(key))
    return original


def _merge_field(original: dict[str, Any], key: str, value: Any, meta: PatchMeta) -> None:
    current = original.get(key, _MISSING)
    if isinstance(value, dict):
        if meta.strategy == "replace":
            merged = _strip(value)
        else:
            merged = _merge_map(current if isinstance(current, dict) else {}, value, meta)
        if merged is None:
            original.pop(key, None)
        else:
            original[key] = merged
    elif isinstance(value, list):
        original[key] = _merge_list(current if isinstance(current, list) else [], value, meta)
    else:
        original[key] = value


def _merge_list(original: list[Any], patch: list[Any], meta: PatchMeta) -> list[Any]:
    if not meta.merges_list:
        return _strip(patch)
    if not original and not patch:
        return original
    kind = _element_kind(original, [p for p in patch if not _is_directive_element(p)])
    if kind == "object" or (not kind and meta.merge_key):
        if not meta.merge_key:
            raise errors.bad_request("cannot merge lists without merge key")
        return _merge_keyed_list(original, patch, meta)
    return _merge_primitive_list(original, patch)


def _is_directive_element(value: Any) -> bool:
    return isinstance(value, dict) and DIRECTIVE in value


def _element_kind(original: list[Any], patch: list[Any]) -> str:
    """The one JSON type all elements share ("" for none); lists of lists and mixtures are refused."""
    kinds = {_go_kind(v) for v in original} | {_go_kind(v) for v in patch}
    if "array" in kinds:
        raise unprocessable("lists of lists are not supported")
    if len(kinds) > 1:
        raise errors.bad_request(f"mismatched types in list: {', '.join(sorted(kinds))}")
    return kinds.pop() if kinds else ""


def _merge_primitive_list(original: list[Any], patch: list[Any]) -> list[Any]:
    directives = {p[DIRECTIVE] for p in patch if _is_directive_element(p)}
    patch = [p for p in patch if not _is_directive_element(p)]
    if directives - {"replace", "merge"}:
        raise errors.bad_request("invalid patch format of primitive list")
    if "replace" in directives:
        return patch
    merged = _dedupe(original + patch)
    in_patch = _positions(patch, "")
    patch_items = [v for v in merged if _ident(v, "") in in_patch]
    server_only = [v for v in merged if _ident(v, "") not in in_patch]
    return _normalize_order(patch_items, server_only, patch, original, "")


def _merge_keyed_list(original: list[Any], patch: list[Any], meta: PatchMeta) -> list[Any]:
    key = meta.merge_key
    original, patch = _special_elements(original, patch, key)
    merged = list(original)
    for element in patch:
        if key not in element:
            raise errors.bad_request(f"map: {element} does not contain declared merge key: {key}")
        at = _find(merged, key, element[key])
        base = merged[at] if at is not None else {}
        result = _merge_map(base, element, meta.item)
        if at is None:
            merged.append(result if result is not None else {})
        elif result is not None:
            merged[at] = result
    return _order_by_patch(merged, patch, original, key)


def _special_elements(original: list[Any], patch: list[Any], key: str) -> tuple[list[Any], list[Any]]:
    """Handle ``$patch`` list elements: delete by merge key, or replace the whole list."""
    rest, replace = [], False
    for element in patch:
        directive = element.get(DIRECTIVE)
        if directive is None:
            rest.append(element)
        elif directive == "delete":
            if key not in element:
                raise errors.bad_request(f"map: {element} does not contain declared merge key: {key}")
            original = [o for o in original if not (isinstance(o, dict) and o.get(key) == element[key])]
        elif directive == "replace":
            replace = True
        elif directive == "merge":  # a list's default: accepted as a no-op marker
            if len(element) > 1:
                rest.append({k: v for k, v in element.items() if k != DIRECTIVE})
        else:
            raise errors.bad_request(f"unknown patch type: {directive} in map: {element}")
    if replace:
        return [_strip(e) for e in rest], []
    return original, rest


def _order_by_patch(merged: list[Any], patch: list[Any], original: list[Any], key: str) -> list[Any]:
    in_patch = _positions(patch, key)
    patch_items = [m for m in merged if _ident(m, key) in in_patch]
    server_only = [m for m in merged if _ident(m, key) not in in_patch]
    return _normalize_order(patch_items, server_only, patch, original, key)


def _delete_from_primitive_list(original: dict[str, Any], field: str, values: Any) -> None:
    if not isinstance(values, list):
        raise errors.bad_request("invalid patch format of primitive list")
    current = original.get(field)
    if isinstance(current, list):
        doomed = _positions(values, "")
        original[field] = [v for v in current if _ident(v, "") not in doomed]


def _apply_retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
    """``$retainKeys``: clear every field of ``original`` not listed (union types' other members)."""
    if RETAIN_KEYS not in patch:
        return
    keep = patch.pop(RETAIN_KEYS)
    if not isinstance(keep, list):
        raise errors.bad_request("invalid patch format of retainKeys")
    keep_set = {k for k in keep if isinstance(k, str)}
    for key, value in patch.items():
        if value is not None and not key.startswith("$") and key not in keep_set:
            raise unprocessable("patch content doesn't match retainKeys list")
    for key in [k for k in original if k not in keep_set]:
        del original[key]


def _apply_element_orders(original: dict[str, Any], patch: dict[str, Any], meta: PatchMeta) -> None:
    """``$setElementOrder/<field>``: merge that list now, then impose the given relative order."""
    for directive in [k for k in patch if k.startswith(SET_ORDER)]:
        order = patch.pop(directive)
        field = directive[len(SET_ORDER) :]
        if not isinstance(order, list):
            raise errors.bad_request("invalid patch format of setElementOrder list")
        field_meta = meta.child(field)
        current, incoming = original.get(field, _MISSING), patch.get(field, _MISSING)
        if incoming is None or (current is _MISSING and incoming is _MISSING):
            continue  # a null deletes the list in the main pass; nothing to order
        for value, what in ((current, "original"), (incoming, "patch")):
            if value is not _MISSING and not isinstance(value, list):
                raise errors.bad_request(f"expected a list in the {what} {field}, got {_go_kind(value)}")
        key = field_meta.merge_key
        _check_order(incoming if incoming is not _MISSING else [], order, key)
        live = current if current is not _MISSING else []
        merged = live if incoming is _MISSING else _merge_list(live, incoming, field_meta)
        original[field] = _order_by_patch(merged, order, live, key)
        patch.pop(field, None)


def _check_order(patch_list: list[Any], order: list[Any], key: str) -> None:
    """Items of the patch list must appear in ``order`` in the same relative order."""
    items = [p for p in patch_list if not _is_directive_element(p)]
    i = j = 0
    while i < len(items) and j < len(order):
        if _ident(items[i], key) == _ident(order[j], key):
            i += 1
        j += 1
    if i < len(items):
        raise errors.bad_request(
            f"The order in patch list:\n{patch_list}\n doesn't match {SET_ORDER} list:\n{order}\n"
        )


def _normalize_order(
    patch_items: list[Any], server_only: list[Any], patch_order: list[Any], server_order: list[Any], key: str
) -> list[Any]:
    """Patch items in the patch's order, server-only items in the live order, interleaved by the latter."""
    patch_items = _sorted_by(patch_items, _positions(patch_order, key), key)
    server_pos = _positions(server_order, key)
    server_only = _sorted_by(server_only, server_pos, key)
    out, i, j = [], 0, 0
    while i < len(server_only) or j < len(patch_items):
        if j >= len(patch_items):
            out.append(server_only[i])
            i += 1
        elif i >= len(server_only):
            out.append(patch_items[j])
            j += 1
        else:
            left = server_pos.get(_ident(server_only[i], key))
            right = server_pos.get(_ident(patch_items[j], key))
            if left is not None and right is not None and left < right:
                out.append(server_only[i])
                i += 1
            else:
                out.append(patch_items[j])
                j += 1
    return out


def _sorted_by(items: list[Any], positions: dict[Any, int], key: str) -> list[Any]:
    far = len(positions)
    return sorted(items, key=lambda v: positions.get(_ident(v, key), far))


def _ident(value: Any, key: str) -> Any:
    """Hashable identity of a list element: its merge-key value, or itself for primitives."""
    if key and isinstance(value, dict):
        value = value.get(key)
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    if isinstance(value, bool):
        return ("bool", value)  # True and 1 must not collide
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _positions(items: list[Any], key: str) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for i, v in enumerate(items):
        out.setdefault(_ident(v, key), i)
    return out


def _find(items: list[Any], key: str, value: Any) -> int | None:
    want = _ident(value, "")
    for i, item in enumerate(items):
        if isinstance(item, dict) and _ident(item.get(key), "") == want:
            return i
    return None


def _dedupe(values: list[Any]) -> list[Any]:
    seen, out = set(), []
    for v in values:
        ident = _ident(v, "")
        if ident not in seen:
            seen.add(ident)
            out.append(v)
    return out


def _is_directive_key(key: str) -> bool:
    return key in (DIRECTIVE, RETAIN_KEYS) or key.startswith(SET_ORDER) or key.startswith(DELETE_PRIMITIVE)


def _strip(value: Any) -> Any:
    """A value taken whole from a patch: directives and nulls removed (Go's typed decode drops them)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if v is not None and not _is_directive_key(k)}
    if isinstance(value, list):
        return [_strip(v) for v in value if not _is_directive_element(v)]
    return value
