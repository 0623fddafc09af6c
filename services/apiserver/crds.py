"""CustomResourceDefinitions: a CRD written is a resource served, a CRD removed is not.

One background loop watches the CRD cache. For each CRD it registers a
``ResourceInfo`` per served version (with its schema, subresources and printer
columns), marks the CRD ``NamesAccepted`` and ``Established``, and tells the
registry (discovery and OpenAPI rebuild on that). When a CRD is deleted its
resources stop being served and its objects are removed from the store.

``validate_rules`` is the part of upstream's CRD validation that concerns CEL rules
(``x-kubernetes-validations``): a CRD whose rule does not compile, or names a field its schema
lacks, is refused with a 422 naming the rule, before anything is stored.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from services.apiserver import cache as cache_
from services.apiserver import cel, context, registry, validation
from services.kine import types
from services.machinery import errors, meta, patch

log = logging.getLogger(__name__)


def infos(crd: dict[str, Any]) -> list[registry.ResourceInfo]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    out = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subs = version.get("subresources") or spec.get("subresources") or {}
        schema = ((version.get("schema") or spec.get("validation") or {}).get("openAPIV3Schema")) or None
        out.append(
            registry.ResourceInfo(
                group=group,
                version=version["name"],
                kind=names.get("kind", ""),
                plural=names.get("plural", ""),
                singular=names.get("singular") or names.get("kind", "").lower(),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=tuple(k for k in ("status", "scale") if k in subs),
                field_selectors=tuple(f.get("jsonPath", "").lstrip(".") for f in version.get("selectableFields") or []),
                custom=True,
                schema=schema,
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
            )
        )
    return out


def validate_rules(crd: dict[str, Any]) -> list[errors.Cause]:
    """Causes for the CEL rules of a CRD's schemas, with upstream's field paths and words."""
    spec = crd.get("spec") or {}
    versions = [v for v in spec.get("versions") or () if isinstance(v, dict)]
    schemas = [((v.get("schema") or {}).get("openAPIV3Schema"), f"spec.versions[{i}].schema.openAPIV3Schema")
               for i, v in enumerate(versions)]  # fmt: skip
    top = (spec.get("validation") or {}).get("openAPIV3Schema")
    # Upstream's internal form keeps one top-level schema when every version has the same one.
    if top is not None or (schemas and all(s == schemas[0][0] for s, _ in schemas)):
        schemas = [(top if top is not None else schemas[0][0], "spec.validation.openAPIV3Schema")]
    out: list[errors.Cause] = []
    for schema, path in schemas:
        if isinstance(schema, dict):
            _rules_at(schema, path, out, root=True, uncorrelatable="")
    return out


def _rules_at(schema: dict[str, Any], path: str, out: list[errors.Cause], *, root: bool, uncorrelatable: str) -> None:
    for i, raw in enumerate(schema.get("x-kubernetes-validations") or ()):
        if isinstance(raw, dict):
            _check_rule(raw, schema, f"{path}.x-kubernetes-validations[{i}]", out, root=root, uncorrelatable=uncorrelatable)
    for name, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, dict):
            _rules_at(sub, f"{path}.properties[{name}]", out, root=_embedded(sub), uncorrelatable=uncorrelatable)
    items = schema.get("items")
    if isinstance(items, dict):
        where = f"{path}.items"
        # Only list-map items can be matched with their old selves.
        lost = uncorrelatable or ("" if schema.get("x-kubernetes-list-type") == "map" else where)
        _rules_at(items, where, out, root=_embedded(items), uncorrelatable=lost)
    values = schema.get("additionalProperties")
    if isinstance(values, dict):
        where = f"{path}.additionalProperties"
        lost = uncorrelatable or ("" if schema.get("x-kubernetes-map-type") in (None, "granular", "atomic") else where)
        _rules_at(values, where, out, root=_embedded(values), uncorrelatable=lost)
    for i, sub in enumerate(schema.get("allOf") or ()):
        for j, raw in enumerate((sub or {}).get("x-kubernetes-validations") or () if isinstance(sub, dict) else ()):
            if isinstance(raw, dict):
                where = f"{path}.allOf[{i}].x-kubernetes-validations[{j}]"
                _check_rule(raw, schema, where, out, root=root, uncorrelatable=uncorrelatable)


def _embedded(schema: dict[str, Any]) -> bool:
    return bool(schema.get("x-kubernetes-embedded-resource"))


def _has_newline(text: str) -> bool:
    return "\n" in text or "\r" in text


def _check_rule(
    raw: dict[str, Any], schema: dict[str, Any], path: str, out: list[errors.Cause], *, root: bool, uncorrelatable: str
) -> None:
    """One rule: its fields first (as upstream, a rule with a bad field is not compiled), then CEL."""
    before = len(out)
    quote = validation.go_quote
    rule, message = str(raw.get("rule") or ""), str(raw.get("message") or "")
    if not rule.strip():
        out.append(errors.Cause("FieldValueRequired", "Required value: rule is not specified", f"{path}.rule"))
    elif message and not message.strip():
        out.append(errors.Cause("FieldValueInvalid", f"Invalid value: {quote(message)}: message must be non-empty if specified", f"{path}.message"))  # fmt: skip
    elif _has_newline(message.strip()):
        out.append(errors.Cause("FieldValueInvalid", f"Invalid value: {quote(message)}: message must not contain line breaks", f"{path}.message"))  # fmt: skip
    elif _has_newline(rule.strip()) and not message.strip():
        out.append(errors.Cause("FieldValueRequired", "Required value: message must be specified if rule contains line breaks", f"{path}.message"))  # fmt: skip
    expression = str(raw.get("messageExpression") or "")
    if expression and not expression.strip():
        out.append(errors.Cause("FieldValueRequired", "Required value: messageExpression must be non-empty if specified", f"{path}.messageExpression"))  # fmt: skip
    reason = raw.get("reason")
    if reason is not None and reason not in cel.REASONS:
        supported = ", ".join(quote(r) for r in cel.REASONS)
        out.append(errors.Cause("FieldValueNotSupported", f"Unsupported value: {quote(str(reason))}: supported values: {supported}", f"{path}.reason"))  # fmt: skip
    field_path = str(raw.get("fieldPath") or "")
    if field_path and (not field_path.strip() or _has_newline(field_path) or cel.parse_field_path(field_path, schema) is None):  # fmt: skip
        why = "must be non-empty if specified" if not field_path.strip() else "must not contain line breaks" if _has_newline(field_path) else "must be a valid path"  # fmt: skip
        out.append(errors.Cause("FieldValueInvalid", f"Invalid value: {quote(field_path)}: fieldPath {why}", f"{path}.fieldPath"))  # fmt: skip
    if len(out) > before or not rule.strip():
        return
    compiled = cel.compile_rule(raw, schema, root=root)
    if compiled.error:
        out.append(errors.Cause("FieldValueInvalid", f"Invalid value: {_go_rule(raw)}: {compiled.error}", f"{path}.rule"))
    if compiled.message_error:
        out.append(errors.Cause("FieldValueInvalid", f"Invalid value: {_go_rule(raw)}: {compiled.message_error}", f"{path}.messageExpression"))  # fmt: skip
    if compiled.error:
        return
    if compiled.uses_old_self and uncorrelatable:
        out.append(errors.Cause("FieldValueInvalid", f"Invalid value: {quote(rule)}: oldSelf cannot be used on the uncorrelatable portion of the schema within {uncorrelatable}", f"{path}.rule"))  # fmt: skip
    elif not compiled.uses_old_self and raw.get("optionalOldSelf") is not None:
        shown = "true" if raw["optionalOldSelf"] else "false"
        out.append(errors.Cause("FieldValueInvalid", f"Invalid value: {shown}: may not be set if oldSelf is not used in rule", f"{path}.optionalOldSelf"))  # fmt: skip


def _go_rule(raw: dict[str, Any]) -> str:
    """Go's ``%#v`` of the internal ValidationRule, as upstream's error prints it (pointers as Go
    prints them: nil, or an address, for which a fixed one stands in)."""
    quote = validation.go_quote
    reason = "(*apiextensions.FieldValueErrorReason)(nil)" if raw.get("reason") is None else "(*apiextensions.FieldValueErrorReason)(0xc000a1b2c0)"  # fmt: skip
    optional = "(*bool)(nil)" if raw.get("optionalOldSelf") is None else "(*bool)(0xc000a1b2c8)"
    fields = (f"Rule:{quote(str(raw.get('rule') or ''))}", f"Message:{quote(str(raw.get('message') or ''))}",
              f"MessageExpression:{quote(str(raw.get('messageExpression') or ''))}", f"Reason:{reason}",
              f"FieldPath:{quote(str(raw.get('fieldPath') or ''))}", f"OptionalOldSelf:{optional}")  # fmt: skip
    return "apiextensions.ValidationRule{" + ", ".join(fields) + "}"


class CrdController:
    def __init__(self, api: context.Api) -> None:
        self.api = api
        self._served: dict[str, tuple[str, str]] = {}  # CRD name -> (group, plural)
        self._task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        info = self.api.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert info is not None
        cache = await self.api.cache(info)
        await cache.sync()
        watcher = cache.watch(namespace="", predicate=None, after=None)
        for crd in cache.list("", None):
            await self._apply(crd)
        from services.machinery import tasks

        self._task = tasks.guarded(self._run(watcher), name="crd controller")

    async def stop(self) -> None:
        if self._task is not None:
            from services.machinery import tasks

            await tasks.cancel_all([self._task])

    async def _run(self, watcher: cache_.CacheWatcher) -> None:
        while True:
            try:
                batch = await watcher.next()
            except EOFError:
                await self.start()
                return
            for event in batch:
                if event.type == "DELETED":
                    await self._remove(event.obj)
                else:
                    await self._apply(event.obj)

    async def _apply(self, crd: dict[str, Any]) -> None:
        name = crd.get("metadata", {}).get("name", "")
        if crd.get("metadata", {}).get("deletionTimestamp"):
            await self._remove(crd)
            return
        served = infos(crd)
        old = self._served.get(name)
        if old is not None:
            self.api.registry.remove(*old)
        if served:
            self.api.registry.add(served)
            self._served[name] = (served[0].group, served[0].plural)
            log.info("serving custom resource %s.%s", served[0].plural, served[0].group)
        await self._establish(crd)

    async def _remove(self, crd: dict[str, Any]) -> None:
        name = crd.get("metadata", {}).get("name", "")
        served = self._served.pop(name, None)
        if served is None:
            return
        group, plural = served
        infos_ = [i for i in self.api.registry.all() if i.group == group and i.plural == plural]
        self.api.registry.remove(group, plural)
        await self.api.drop_cache(group, plural)
        if infos_:
            await self._delete_objects(infos_[0])
        log.info("stopped serving custom resource %s.%s", plural, group)

    async def _delete_objects(self, info: registry.ResourceInfo) -> None:
        prefix = info.storage_prefix
        try:
            items, _, _, _ = await self.api.store.list(prefix)
            for item in items:
                md = item.obj.get("metadata", {})
                await self.api.store.delete(info.key(md.get("namespace", ""), md.get("name", "")), expected=item.revision)
        except types.StoreError as exc:
            log.warning("could not remove the objects of %s: %s", info.resource_group, exc)

    async def _establish(self, crd: dict[str, Any]) -> None:
        conditions = (crd.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            return
        info = self.api.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert info is not None
        key = info.key("", crd["metadata"]["name"])
        current = await self.api.store.get(key)
        if current is None:
            return
        new = patch.clone(current.obj)
        now = meta.now_rfc3339()
        names = (new.get("spec") or {}).get("names") or {}
        new["status"] = {
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in (new.get("spec") or {}).get("versions") or [] if v.get("storage")],
        }  # fmt: skip
        await self.api.store.update(key, new, expected=current.revision)
