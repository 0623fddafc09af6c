"""Field ownership (``metadata.managedFields``) and a reduced server-side apply.

A field set is a Python ``set`` of paths; a path is a tuple of FieldsV1 tokens:
``f:<field>`` for a map member, ``k:{"name":"c"}`` for an element of a list with
a merge key, ``v:<json>`` for a member of a primitive set (finalizers). Sets are
built by walking an object alongside the ``PatchMeta`` tree of ``patch`` (merge
keys tell associative lists from atomic ones), and serialised to FieldsV1 with a
``.`` marking a node that is itself owned and also has owned children.

``apply`` follows structured-merge-diff's rules closely enough for ``kubectl
apply --server-side`` and controllers that apply:

* the manager's new set is the applied configuration's leaves and list elements;
* a leaf another manager owns (Apply or Update) whose applied value differs from
  the live one is a conflict: 409 with ``FieldManagerConflict`` causes, unless
  ``force``, which moves the ownership;
* the configuration merges into the live object: maps by key, associative lists
  by merge key, sets by value, everything else replaced;
* fields the manager owned before and now omits are removed unless another
  manager still owns them (or something below them), and maps emptied by that
  are pruned.

``record_update`` gives ordinary writes (create, update, patch) their entry: the
fields a write changed or added move to its manager, fields it removed leave
every set. Approximations, all deliberate:

* Value comparisons are JSON equality of what the caller passes; no defaulting
  or conversion between versions happens here (upstream applies defaults first).
* Associative lists are keyed by the single strategic-merge key
  (``k:{"containerPort":80}``, where upstream adds ``protocol``).
* Update entries record leaves and list elements only, never ``.`` for maps a
  write created; upstream also owns such maps.
* No ``before-first-apply`` manager for objects that never had managedFields, no
  folding of old Update entries into ``ancient-changes``, no per-version schema.
* A ``null`` in an applied configuration means "not set".
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Collection, Iterable
from typing import Any

import orjson

from services.machinery import errors, patch

Path = tuple[str, ...]
FieldSet = set[Path]

_MISSING: Any = object()
# Fields the server owns: never tracked (upstream's strip-meta manager).
_STRIPPED_TOP = frozenset({"apiVersion", "kind"})
_STRIPPED_META = frozenset(
    {
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "generation",
        "managedFields",
        "resourceVersion",
    }
)


# --- field sets ----------------------------------------------------------------------------------


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _element_token(element: Any, meta: patch.PatchMeta) -> str:
    key = meta.merge_key
    if key and isinstance(element, dict) and key in element:
        return "k:" + _json({key: element[key]})
    return "v:" + _json(element)


def _trackable(obj: dict[str, Any], ignored: Collection[str]) -> dict[str, Any]:
    """A shallow view without server-owned fields and the caller's ignored top-level fields."""
    out = {k: v for k, v in obj.items() if k not in _STRIPPED_TOP and k not in ignored}
    md = out.get("metadata")
    if isinstance(md, dict):
        md = {k: v for k, v in md.items() if k not in _STRIPPED_META}
        if md:
            out["metadata"] = md
        else:
            del out["metadata"]  # only server-owned fields: nothing to own
    return out


def _walk(value: Any, meta: patch.PatchMeta, path: Path, out: FieldSet) -> None:
    if isinstance(value, dict) and value and meta.strategy != "atomic":
        for key, sub in value.items():
            if sub is not None:
                _walk(sub, meta.child(key), path + ("f:" + key,), out)
    elif isinstance(value, list) and value and meta.merges_list:
        for element in value:
            token = path + (_element_token(element, meta),)
            out.add(token)
            if token[-1].startswith("k:"):
                _walk(element, meta.item, token, out)
    else:
        out.add(path)


def field_set(
    obj: dict[str, Any], *, schema: patch.PatchMeta | None, ignored: Collection[str] = ()
) -> FieldSet:
    out: FieldSet = set()
    _walk(_trackable(obj, ignored), schema or patch.LEAF, (), out)
    out.discard(())
    return out


def to_fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    """Nest paths into FieldsV1; sorted insertion gives sorted keys with ``.`` first."""
    root: dict[str, Any] = {}
    marked = []
    for path in sorted(paths):  # a prefix sorts before its descendants
        node = root
        for token in path:
            node = node.setdefault(token, {})
        if not node:
            node["."] = {}  # owned itself; dropped again below if no child follows
            marked.append(node)
    for node in marked:
        if len(node) == 1:
            node.clear()
    return root


def from_fields_v1(tree: Any, path: Path = ()) -> FieldSet:
    out: FieldSet = set()
    if not isinstance(tree, dict):
        return out
    for token, sub in tree.items():
        if token == ".":
            out.add(path)
        elif isinstance(sub, dict) and sub:
            out |= from_fields_v1(sub, path + (token,))
        else:
            out.add(path + (token,))
    return out


def fields_v1(obj: dict[str, Any], *, schema: patch.PatchMeta | None) -> dict[str, Any]:
    """The FieldsV1 document of what ``obj`` (an applied configuration) sets."""
    return to_fields_v1(field_set(obj, schema=schema))


def _prefixes(paths: Iterable[Path]) -> FieldSet:
    out: FieldSet = set()
    for path in paths:
        out.update(path[:i] for i in range(1, len(path) + 1))
    return out


def _leaves(paths: FieldSet) -> FieldSet:
    inner = {p[:i] for p in paths for i in range(1, len(p))}
    return paths - inner


# --- values at paths -------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _token_value(token: str) -> Any:
    return orjson.loads(token[2:])


def _step(current: Any, token: str) -> Any:
    if token.startswith("f:"):
        return current.get(token[2:], _MISSING) if isinstance(current, dict) else _MISSING
    if not isinstance(current, list):
        return _MISSING
    wanted = _token_value(token)
    if token.startswith("k:"):
        for element in current:
            if isinstance(element, dict) and all(element.get(k, _MISSING) == v for k, v in wanted.items()):
                return element
        return _MISSING
    return wanted if wanted in current else _MISSING


def value_at(obj: Any, path: Path) -> Any:
    current = obj
    for token in path:
        current = _step(current, token)
        if current is _MISSING:
            break
    return current


def render_path(path: Path) -> str:
    """structured-merge-diff's path syntax: ``.spec.containers[name="c"].image``, ``[="v"]``."""
    out = []
    for token in path:
        kind, body = token[:2], token[2:]
        if kind == "f:":
            out.append("." + body)
        elif kind == "k:":
            out.append("[" + ",".join(f"{k}={_json(v)}" for k, v in orjson.loads(body).items()) + "]")
        else:
            out.append(f"[={body}]")
    return "".join(out)


def _delete_at(obj: dict[str, Any], path: Path) -> bool:
    parent = value_at(obj, path[:-1])
    token = path[-1]
    if token.startswith("f:") and isinstance(parent, dict) and token[2:] in parent:
        del parent[token[2:]]
        return True
    if isinstance(parent, list):
        target = _step(parent, token)
        if target is not _MISSING:
            parent[:] = [
                e for e in parent if e is not target and not (token.startswith("v:") and e == target)
            ]
            return True
    return False


def _remove_disowned(obj: dict[str, Any], doomed: FieldSet, keep: FieldSet) -> None:
    """Delete ``doomed`` paths nobody keeps, then maps those deletions emptied."""
    for path in sorted(doomed, key=len):
        if path in keep or not _delete_at(obj, path):
            continue
        parent = path[:-1]
        while parent and parent not in keep and parent[-1].startswith("f:") and value_at(obj, parent) == {}:
            _delete_at(obj, parent)
            parent = parent[:-1]


# --- managedFields entries ---------------------------------------------------------------------


class Entry:
    """One managedFields entry. Its FieldsV1 tree is decoded only when a write needs the whole
    set, and re-encoded only when the set changed: most writes touch few entries."""

    __slots__ = ("manager", "operation", "api_version", "time", "subresource", "_tree", "_paths")

    def __init__(
        self,
        manager: str,
        operation: str,
        api_version: str,
        time: str,
        *,
        subresource: str = "",
        tree: dict[str, Any] | None = None,
        paths: FieldSet | None = None,
    ) -> None:
        self.manager, self.operation, self.api_version = manager, operation, api_version
        self.time, self.subresource = time, subresource
        self._tree = tree if isinstance(tree, dict) else ({} if paths is None else None)
        self._paths = paths

    @property
    def fields(self) -> FieldSet:
        if self._paths is None:
            self._paths = from_fields_v1(self._tree)
        return self._paths

    @fields.setter
    def fields(self, paths: FieldSet) -> None:
        self._paths, self._tree = paths, None

    def owns(self, path: Path) -> bool:
        if self._paths is not None:
            return path in self._paths
        node: Any = self._tree
        for token in path:
            node = node.get(token) if isinstance(node, dict) else None
        return isinstance(node, dict) and (not node or "." in node)

    def drop(self, paths: Iterable[Path]) -> bool:
        """Give up ``paths``; True when anything was owned."""
        owned = {p for p in paths if self.owns(p)}
        if owned:
            self.fields = self.fields - owned
        return bool(owned)

    def is_same(self, manager: str, operation: str, api_version: str, subresource: str) -> bool:
        # Upstream's manager identity: appliers are one manager whatever apiVersion they use.
        if (self.manager, self.operation, self.subresource) != (manager, operation, subresource):
            return False
        return operation == "Apply" or self.api_version == api_version

    def describe(self) -> str:
        if self.operation == "Update":
            return f'"{self.manager}" using {self.api_version}'
        return f'"{self.manager}"'

    def empty(self) -> bool:
        return not self._tree if self._paths is None else not self._paths

    def encode(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
        }
        if self.time:
            out["time"] = self.time
        out["fieldsType"] = "FieldsV1"
        out["fieldsV1"] = self._tree if self._tree is not None else to_fields_v1(self.fields)
        if self.subresource:
            out["subresource"] = self.subresource
        return out


def decode_entries(raw: Any) -> list[Entry]:
    entries = []
    for item in raw if isinstance(raw, list) else ():
        if not isinstance(item, dict) or not item.get("manager"):
            continue  # upstream resets malformed entries; an empty one ({}) resets them all
        entry = Entry(
            str(item.get("manager")),
            str(item.get("operation") or "Update"),
            str(item.get("apiVersion") or ""),
            str(item.get("time") or ""),
            subresource=str(item.get("subresource") or ""),
            tree=item.get("fieldsV1"),
        )
        entries.append(entry)
    return entries


def _store(obj: dict[str, Any], entries: list[Entry]) -> None:
    md = obj.setdefault("metadata", {})
    kept = [e.encode() for e in entries if not e.empty()]
    if kept:
        md["managedFields"] = kept
    else:
        md.pop("managedFields", None)


def _find(
    entries: list[Entry], manager: str, operation: str, api_version: str, subresource: str
) -> Entry | None:
    return next((e for e in entries if e.is_same(manager, operation, api_version, subresource)), None)


# --- server-side apply ---------------------------------------------------------------------------


def apply(
    live: dict[str, Any] | None,
    applied: dict[str, Any],
    *,
    manager: str,
    force: bool,
    schema: patch.PatchMeta | None,
    api_version: str,
    now: str,
    subresource: str = "",
    ignored_fields: Collection[str] = (),
) -> dict[str, Any]:
    """The object after ``manager`` applies ``applied`` to ``live`` (``None``: create).

    ``ignored_fields`` are top-level fields this endpoint does not write (``("status",)``
    for the main resource): they are neither merged nor owned.
    """
    if not isinstance(applied, dict):
        raise errors.bad_request("the applied configuration must be a JSON object")
    if (applied.get("metadata") or {}).get("managedFields"):
        raise errors.bad_request("metadata.managedFields must be nil")
    meta = schema or patch.LEAF
    config = {k: v for k, v in patch.clone(applied).items() if k not in ignored_fields}
    result = patch.clone(live) if live else {}
    entries = decode_entries((result.get("metadata") or {}).get("managedFields"))
    mine = _find(entries, manager, "Apply", api_version, subresource)
    new_set = field_set(config, schema=meta)
    _resolve_conflicts(result, config, new_set, [e for e in entries if e is not mine], force=force)
    result = _merge(result, config, meta)
    others = [e for e in entries if e is not mine]
    if mine is not None:
        keep = _prefixes(new_set.union(*(e.fields for e in others)))
        _remove_disowned(result, mine.fields - new_set, keep)
    else:
        mine = Entry(manager, "Apply", api_version, now, subresource=subresource, paths=set())
        entries.append(mine)
    mine.fields, mine.time, mine.api_version = new_set, now, api_version
    _store(result, entries)
    return result


def _resolve_conflicts(
    live: Any, config: Any, new_set: FieldSet, others: list[Entry], *, force: bool
) -> None:
    leaves = _leaves(new_set)
    found = []
    for entry in others:
        for path in sorted(leaves & entry.fields):
            if value_at(live, path) != value_at(config, path):
                found.append((entry, path))
    if not found:
        return
    if not force:
        raise conflict_error(found)
    for entry, path in found:
        entry.drop((path,))


def conflict_error(found: list[tuple[Entry, Path]]) -> errors.ApiError:
    """Upstream's ``NewApplyConflict``: 409 Conflict, one ``FieldManagerConflict`` cause per field."""
    causes = [
        errors.Cause("FieldManagerConflict", f"conflict with {e.describe()}", render_path(p))
        for e, p in found
    ]
    if len(found) == 1:
        entry, path = found[0]
        message = f"Apply failed with 1 conflict: conflict with {entry.describe()}: {render_path(path)}"
    else:
        lines: dict[str, list[str]] = {}
        for entry, path in found:
            lines.setdefault(entry.describe(), []).append(f"- {render_path(path)}")
        body = "\n".join(
            f"conflicts with {who}:\n" + "\n".join(paths) for who, paths in sorted(lines.items())
        )
        message = f"Apply failed with {len(found)} conflicts: {body}"
    return errors.ApiError(409, "Conflict", message, causes=causes)


def _merge(live: Any, config: Any, meta: patch.PatchMeta) -> Any:
    """Merge an applied configuration into the live value (``live`` is ours to mutate)."""
    if isinstance(config, dict):
        target = live if isinstance(live, dict) and meta.strategy != "atomic" else {}
        for key, value in config.items():
            if value is not None:
                target[key] = _merge(target.get(key, _MISSING), value, meta.child(key))
        return target
    if isinstance(config, list) and meta.merges_list:
        return _merge_list(live if isinstance(live, list) else [], config, meta)
    return config


def _merge_list(live: list[Any], config: list[Any], meta: patch.PatchMeta) -> list[Any]:
    """Associative lists merge element-wise by key, sets by value; new items go last."""
    at = {}
    for i, element in enumerate(live):
        at.setdefault(_element_token(element, meta), i)
    seen: set[str] = set()
    for element in config:
        token = _element_token(element, meta)
        if meta.merge_key and not token.startswith("k:"):
            raise errors.bad_request(
                f'associative list with keys has an element that omits key field "{meta.merge_key}"'
            )
        if token in seen:
            raise errors.bad_request(f"duplicate entries for key {render_path((token,))}")
        seen.add(token)
        index = at.get(token)
        if index is None:
            live.append(_merge(_MISSING, element, meta.item))
        elif meta.merge_key:
            live[index] = _merge(live[index], element, meta.item)
    return live


# --- ordinary writes ---------------------------------------------------------------------------


def _changed(old: Any, new: Any, meta: patch.PatchMeta, path: Path, out: FieldSet) -> None:
    """Paths of ``new`` whose value differs from ``old``: leaves, plus list elements that are new."""
    if old is not _MISSING and old == new:
        return
    if isinstance(new, dict) and new and meta.strategy != "atomic":
        before = old if isinstance(old, dict) else {}
        for key, value in new.items():
            if value is not None:
                _changed(before.get(key, _MISSING), value, meta.child(key), path + ("f:" + key,), out)
    elif isinstance(new, list) and new and meta.merges_list:
        before = {_element_token(e, meta): e for e in old} if isinstance(old, list) else {}
        for element in new:
            token = _element_token(element, meta)
            previous = before.get(token, _MISSING)
            if previous is _MISSING:
                out.add(path + (token,))
            if token.startswith("k:"):
                _changed(previous, element, meta.item, path + (token,), out)
    else:
        out.add(path)


def _walkable(value: Any, meta: patch.PatchMeta) -> bool:
    if isinstance(value, dict):
        return bool(value) and meta.strategy != "atomic"
    return isinstance(value, list) and bool(value) and meta.merges_list


def _removed(old: Any, new: Any, meta: patch.PatchMeta, path: Path, out: FieldSet) -> None:
    """Paths in ``old``'s field set missing from ``new``'s, descending only where they differ."""
    if new is not _MISSING and old == new:
        return
    if isinstance(old, dict) and _walkable(old, meta):
        after = new if isinstance(new, dict) else {}
        for key, value in old.items():
            if value is not None:
                _removed(value, after.get(key, _MISSING), meta.child(key), path + ("f:" + key,), out)
    elif isinstance(old, list) and _walkable(old, meta):
        after = {_element_token(e, meta): e for e in new} if isinstance(new, list) else {}
        for element in old:
            token = _element_token(element, meta)
            following = after.get(token, _MISSING)
            if following is _MISSING:
                out.add(path + (token,))
            if token.startswith("k:"):
                _removed(element, following, meta.item, path + (token,), out)
    elif new is _MISSING or new is None or _walkable(new, meta):
        out.add(path)


_OWNED: Any = {}  # a leaf that is owned itself: shared, never changed, copied on the way out


class _Irregular(Exception):
    """A list holds two elements with one merge key: ``_created_tree`` leaves it to the general path."""


def _created_tree(obj: dict[str, Any], meta: patch.PatchMeta) -> dict[str, Any]:
    """FieldsV1 of everything a create sets: what ``to_fields_v1`` makes of ``_changed`` from
    nothing, built in one sorted walk without the path tuples (a create's usual cost)."""
    node = _created_node(obj, meta)
    return node if node is not None and node is not _OWNED else {}


def _created_node(value: Any, meta: patch.PatchMeta) -> dict[str, Any] | None:
    """The subtree for ``value``: ``_OWNED`` for an owned leaf, None when nothing below it is set."""
    if isinstance(value, dict) and value and meta.strategy != "atomic":
        node: dict[str, Any] = {}
        for key in sorted(value):
            sub = value[key]
            if sub is not None:
                child = _created_node(sub, meta.child(key))
                if child is not None:
                    node["f:" + key] = {} if child is _OWNED else child
        return node or None
    if isinstance(value, list) and value and meta.merges_list:
        elements: dict[str, dict[str, Any]] = {}
        for element in value:
            token = _element_token(element, meta)
            keyed = token.startswith("k:")
            if keyed and token in elements:
                raise _Irregular(token)  # their fields would merge: left to the general path
            below = _created_node(element, meta.item) if keyed else None
            elements[token] = {".": {}, **below} if below else {}
        return {token: elements[token] for token in sorted(elements)}
    return _OWNED


def _base_entries(old: dict[str, Any] | None, new: dict[str, Any]) -> list[Entry]:
    """Entries sent with the write win when they differ from the stored ones (``[{}]`` clears)."""
    old_raw = ((old or {}).get("metadata") or {}).get("managedFields")
    new_raw = (new.get("metadata") or {}).get("managedFields", _MISSING)
    if new_raw is _MISSING or new_raw is None or new_raw == old_raw:
        return decode_entries(old_raw)
    return decode_entries(new_raw)


def record_update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    *,
    manager: str,
    operation: str = "Update",
    api_version: str,
    now: str,
    subresource: str = "",
    schema: patch.PatchMeta | None = None,
    ignored_fields: Collection[str] = (),
) -> dict[str, Any]:
    """Set ``new.metadata.managedFields`` for a write by ``manager``; returns ``new`` (changed in place).

    ``old`` is the stored object (``None`` on create). ``ignored_fields``: top-level
    fields this endpoint resets (``("status",)`` for the main resource).
    """
    meta = schema or patch.LEAF
    entries = _base_entries(old, new)
    if not old and not entries:  # a create without managedFields: the writer owns all it set
        with contextlib.suppress(_Irregular):
            tree = _created_tree(_trackable(new, ignored_fields), meta)
            entries = [Entry(manager, operation, api_version, now, subresource=subresource, tree=tree)]
            _store(new, entries)
            return new
    before = _trackable(old, ignored_fields) if old else _MISSING
    after = _trackable(new, ignored_fields)
    changed: FieldSet = set()
    _changed(before, after, meta, (), changed)
    changed.discard(())
    removed: FieldSet = set()
    if old:
        _removed(before, after, meta, (), removed)
        removed.discard(())
    mine = _find(entries, manager, operation, api_version, subresource)
    touched = changed | removed
    for entry in entries:
        if entry is not mine:
            entry.drop(touched)
    if mine is None and changed:
        mine = Entry(manager, operation, api_version, now, subresource=subresource, paths=set())
        entries.append(mine)
    if mine is not None and (changed or any(mine.owns(p) for p in removed)):
        mine.fields = (mine.fields | changed) - removed
        mine.time = now
    _store(new, entries)
    return new
