"""Shared helpers of the workload controllers: pod state, owner references, template hashes.

Everything here works on plain dicts as the informers hold them and never mutates its input.

- pod state: ``is_ready``, ``is_available`` (ready for ``minReadySeconds``), ``is_active``
  (neither finished nor being deleted), and ``deletion_rank``, the order in which a controller
  that scales down gives up pods (unscheduled, pending, not ready, newest first: upstream's
  ``ActivePods`` ordering);
- owner references: ``owner_reference`` builds a controller reference, ``controller_ref``
  reads one, and ``claim`` adopts matching orphans and releases owned objects that stopped
  matching (upstream's ``ControllerRefManager``), for pods of a ReplicaSet as for ReplicaSets of
  a Deployment;
- ``template_hash``: FNV-32a over the canonical JSON of a pod template (plus the collision
  count), spelled in the vowel-free alphabet of generated names, as upstream's ``ComputeHash``;
- ``Expectations``: creations and deletions asked for but not yet seen in the cache, so a
  controller whose cache lags behind its own writes does not create or delete twice;
- ``slow_start``: creations in batches of 1, 2, 4, ... that stop at the first failure, so a
  quota or admission refusal costs one request, not hundreds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import orjson

from services.client import errors, store
from services.machinery import selectors

OWNER_UID_INDEX = "owner-uid"  # informer index: objects by the uid of each owner
ORPHAN_INDEX = "orphans"  # informer index: objects with no controller, by namespace
ORPHAN_LABEL_INDEX = "orphan-labels"  # the same, by namespace and each label (``ns\0key=value``)


def _orphan_of_namespace(obj: Mapping[str, Any]) -> list[str]:
    return [] if controller_ref(obj) is not None else [(obj.get("metadata") or {}).get("namespace", "")]


def _orphan_labels(obj: Mapping[str, Any]) -> list[str]:
    if controller_ref(obj) is not None:
        return []
    namespace = (obj.get("metadata") or {}).get("namespace", "")
    return [f"{namespace}\0{key}={value}" for key, value in labels_of(obj).items()]


INDEXERS: dict[str, store.IndexFunc] = {
    OWNER_UID_INDEX: store.by_owner_uid,
    ORPHAN_INDEX: _orphan_of_namespace,
    ORPHAN_LABEL_INDEX: _orphan_labels,
}
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # upstream's rand.SafeEncodeString alphabet
EXPECTATIONS_TTL = 300.0  # seconds; client-go's ExpectationsTimeout: a lost watch event cannot wedge a key
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})

Obj = dict[str, Any]


# -- time ---------------------------------------------------------------------------------------


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def parse_time(text: str | None) -> datetime.datetime | None:
    """A ``metav1.Time`` (or ``MicroTime``) as an aware datetime; None when absent or unreadable."""
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_time(moment: datetime.datetime) -> str:
    """A ``metav1.Time``: RFC 3339 UTC, whole seconds."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- pod state ----------------------------------------------------------------------------------


def condition(obj: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return cond
    return None


def is_ready(pod: Mapping[str, Any]) -> bool:
    cond = condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def is_available(pod: Mapping[str, Any], min_ready_seconds: int, at: datetime.datetime) -> bool:
    """Ready, and (with ``minReadySeconds``) ready for longer than that at ``at``."""
    cond = condition(pod, "Ready")
    if cond is None or cond.get("status") != "True":
        return False
    if min_ready_seconds <= 0:
        return True
    since = parse_time(cond.get("lastTransitionTime"))
    return since is not None and since + datetime.timedelta(seconds=min_ready_seconds) < at


def is_deleting(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def is_terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def is_active(pod: Mapping[str, Any]) -> bool:
    """Counts towards a controller's replicas: not finished, not being deleted."""
    return not is_terminal(pod) and not is_deleting(pod)


def _restarts(pod: Mapping[str, Any]) -> int:
    return sum(
        int(c.get("restartCount") or 0) for c in (pod.get("status") or {}).get("containerStatuses") or ()
    )


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_rank(pod: Mapping[str, Any]) -> tuple[Any, ...]:
    """Sort key: pods that sort first are deleted first (upstream's ``ActivePods`` order).

    Unscheduled before scheduled, Pending before Unknown before Running, not ready before ready,
    ready for less time before ready for longer, more restarts before fewer, newer before older.
    """
    spec, status, md = pod.get("spec") or {}, pod.get("status") or {}, pod.get("metadata") or {}
    ready = is_ready(pod)
    ready_since = parse_time((condition(pod, "Ready") or {}).get("lastTransitionTime")) if ready else None
    created = parse_time(md.get("creationTimestamp"))
    return (
        bool(spec.get("nodeName")),
        _PHASE_RANK.get(status.get("phase", "Pending"), 0),
        ready,
        -(ready_since.timestamp()) if ready_since else 0.0,
        -_restarts(pod),
        -(created.timestamp()) if created else 0.0,
    )


# -- owner references ---------------------------------------------------------------------------


def owner_reference(owner: Mapping[str, Any], *, api_version: str, kind: str) -> dict[str, Any]:
    """A controller reference to ``owner``: it manages the dependent and blocks its foreground delete."""
    md = owner.get("metadata") or {}
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": md.get("name", ""),
        "uid": md.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_ref(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


def is_controlled_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == (owner.get("metadata") or {}).get("uid")


def owned_by(informer_store: store.Store, owner: Mapping[str, Any]) -> list[Obj]:
    """Objects in ``informer_store`` whose controller reference names ``owner`` (needs ``INDEXERS``)."""
    uid = (owner.get("metadata") or {}).get("uid", "")
    return [o for o in informer_store.by_index(OWNER_UID_INDEX, uid) if is_controlled_by(o, owner)]


def claim_candidates(
    informer_store: store.Store, owner: Mapping[str, Any], selector: selectors.LabelSelector
) -> list[Obj]:
    """What ``claim`` can take for ``owner``: the objects that name it as an owner, and the orphans
    of its namespace that may match ``selector`` (needs ``INDEXERS``). ``claim`` would skip every
    other object of the namespace; not walking them matters when a namespace holds thousands of
    pods, since an owner is synced again at nearly every change of one of its pods. The orphans
    come from the label index when the selector requires a label value (every workload selector
    does), else from all of the namespace's."""
    md = owner.get("metadata") or {}
    namespace = md.get("namespace", "")
    found = {store.key_of(o): o for o in informer_store.by_index(OWNER_UID_INDEX, md.get("uid", ""))}
    if selector.nothing:
        return list(found.values())
    pinned = next((r for r in selector.requirements if r.operator in selectors.VALUE_OPERATORS), None)
    if pinned is None:
        orphans = informer_store.by_index(ORPHAN_INDEX, namespace)
    else:
        buckets = (f"{namespace}\0{pinned.key}={value}" for value in pinned.values)
        orphans = [o for bucket in buckets for o in informer_store.by_index(ORPHAN_LABEL_INDEX, bucket)]
    for orphan in orphans:
        found.setdefault(store.key_of(orphan), orphan)
    return list(found.values())


def selector_of(spec: Mapping[str, Any]) -> selectors.LabelSelector:
    """The label selector of a workload spec: a ``LabelSelector`` object, or a replication
    controller's plain map (empty: the template's labels, as the API defaults it)."""
    sel = spec.get("selector")
    if isinstance(sel, dict) and ("matchLabels" in sel or "matchExpressions" in sel):
        return selectors.from_label_selector_dict(sel)
    labels = sel or ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not labels:
        return selectors.NOTHING
    return selectors.from_label_selector_dict({"matchLabels": labels})


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


async def claim(
    api: Any,
    resource: Any,
    *,
    owner: Obj,
    owner_ref: dict[str, Any],
    candidates: Iterable[Obj],
    selector: selectors.LabelSelector,
    can_adopt: Callable[[], Awaitable[bool]],
) -> list[Obj]:
    """The candidates ``owner`` controls after adopting matching orphans and releasing owned
    objects whose labels no longer match (upstream's ``ClaimObject``).

    Adoption and release are merge patches carrying the dependent's ``uid`` and
    ``resourceVersion``, so they never touch a newer or a recreated object; a 404 or 409 just
    leaves that object out (its next change will bring the owner back to the queue).
    ``can_adopt`` is asked once, before the first adoption: the owner must still exist and not
    be being deleted, as read from the API rather than the cache.
    """
    uid = owner_ref["uid"]
    claimed: list[Obj] = []
    adopt_checked: bool | None = None
    for obj in candidates:
        ref = controller_ref(obj)
        if ref is not None and ref.get("uid") != uid:
            continue  # someone else's
        matches = selector.matches(labels_of(obj))
        if ref is not None:
            if matches:
                claimed.append(obj)
            elif not is_deleting(owner):
                await _patch_refs(api, resource, obj, [r for r in _refs(obj) if r.get("uid") != uid])
            continue
        if not matches or is_deleting(owner) or is_deleting(obj):
            continue
        if adopt_checked is None:
            adopt_checked = await can_adopt()
        if not adopt_checked:
            continue
        adopted = await _patch_refs(api, resource, obj, [*_refs(obj), owner_ref])
        if adopted is not None:
            claimed.append(adopted)
    return claimed


def _refs(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("metadata") or {}).get("ownerReferences") or ())


async def _patch_refs(
    api: Any, resource: Any, obj: Mapping[str, Any], refs: list[dict[str, Any]]
) -> Obj | None:
    md = obj.get("metadata") or {}
    body = {
        "metadata": {
            "ownerReferences": refs or None,
            "uid": md.get("uid"),
            "resourceVersion": md.get("resourceVersion"),
        }
    }
    try:
        return await api.patch(resource, md.get("name", ""), body, namespace=md.get("namespace"))
    except errors.ApiError as exc:
        if exc.code in (404, 409, 422):
            return None
        raise


# -- pod template hashing -----------------------------------------------------------------------


def fnv32a(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value ^= byte
        value = (value * 0x01000193) & 0xFFFFFFFF
    return value


def safe_encode(text: str) -> str:
    """Map each character into the vowel-free alphabet (no accidental words, no look-alikes)."""
    return "".join(SAFE_ALPHABET[ord(ch) % len(SAFE_ALPHABET)] for ch in text)


def template_hash(template: Mapping[str, Any], collision_count: int | None = None) -> str:
    """A stable, label-safe hash of a pod template: equal templates hash equal in any process."""
    data = orjson.dumps(without_hash(template), option=orjson.OPT_SORT_KEYS)
    if collision_count:
        data += b"#" + str(collision_count).encode()
    return safe_encode(str(fnv32a(data)))


def without_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``template`` without the ``pod-template-hash`` label (and no empty labels map)."""
    copied = store.copy(dict(template))
    md = copied.get("metadata")
    if isinstance(md, dict) and isinstance(md.get("labels"), dict):
        md["labels"].pop(POD_TEMPLATE_HASH_LABEL, None)
        if not md["labels"]:
            md.pop("labels")
    return copied


def equal_ignore_hash(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two pod templates are the same but for the ``pod-template-hash`` label."""
    return without_hash(a) == without_hash(b)


# -- expectations -------------------------------------------------------------------------------


@dataclasses.dataclass
class _Expected:
    adds: int
    deletes: set[str]
    since: float


class Expectations:
    """Per controller key: pods it created and deleted that its informer has not shown yet.

    A key is satisfied, and may be synced again, when every expected creation and deletion has
    been observed, or when the expectation is older than ``ttl`` (a lost event must not wedge
    the key forever). A key never expected anything is satisfied.
    """

    def __init__(self, *, ttl: float = EXPECTATIONS_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._items: dict[str, _Expected] = {}

    def expect(self, key: str, *, adds: int = 0, deletes: Iterable[str] = ()) -> None:
        self._items[key] = _Expected(adds, set(deletes), self._clock())

    def creation_observed(self, key: str) -> None:
        item = self._items.get(key)
        if item is not None:
            item.adds -= 1

    def deletion_observed(self, key: str, pod_key: str) -> None:
        item = self._items.get(key)
        if item is not None:
            item.deletes.discard(pod_key)

    def satisfied(self, key: str) -> bool:
        item = self._items.get(key)
        if item is None:
            return True
        return (item.adds <= 0 and not item.deletes) or self._clock() - item.since > self.ttl

    def forget(self, key: str) -> None:
        self._items.pop(key, None)


# -- slow start ---------------------------------------------------------------------------------


async def slow_start(
    count: int, create: Callable[[], Awaitable[None]], *, initial: int = 1
) -> tuple[int, Exception | None]:
    """Call ``create`` ``count`` times in concurrent batches of 1, 2, 4, ...; stop after the
    first batch with a failure. Returns how many succeeded and the first error."""
    done = 0
    batch = min(count, initial)
    while batch > 0:
        results = await asyncio.gather(*(create() for _ in range(batch)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        done += batch - len(failures)
        for failure in failures:
            if not isinstance(failure, Exception):
                raise failure  # cancellation and the like pass through
        if failures:
            return done, failures[0]  # type: ignore[return-value]
        batch = min(2 * batch, count - done)
    return done, None


def omit_zero(status: Mapping[str, Any]) -> dict[str, Any]:
    """A status without zero or empty ``omitempty`` fields, as upstream serialises it."""
    return {k: v for k, v in status.items() if v not in (0, None, [], {}, "")}
