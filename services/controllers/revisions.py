"""ControllerRevisions: the template history of DaemonSets and StatefulSets.

Each distinct pod template an owner ever had is one ``apps/v1`` ControllerRevision named
``<owner>-<hash>``, labelled with the owner's template labels plus
``controller-revision-hash: <hash>``, owned by it (a controller reference) and numbered
by ``revision``. Its ``data`` is the patch kubectl's ``rollout undo`` applies to roll back:
``{"spec": {"template": {..., "$patch": "replace"}}}``, as upstream stores it. Pods carry
the hash in their own ``controller-revision-hash`` label, which is how both controllers
tell an updated pod from an old one.

The hash is FNV-32a over the canonical JSON of the data (plus the owner's
``status.collisionCount`` when it is set), spelled with the same vowel-free alphabet as
generated names, like upstream's ``controller.ComputeHash``. A name already taken by a
revision with other data is a collision: the caller bumps ``collisionCount`` and tries again.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from services.client import errors, resources, store, types
from services.controllers import podutil

REVISION_HASH_LABEL = "controller-revision-hash"
DEFAULT_HISTORY_LIMIT = 10


class Collision(Exception):
    """A revision of that name exists with other data: bump ``collisionCount`` and retry."""


@dataclasses.dataclass
class History:
    """The owner's revisions, oldest first, and the one matching its current template."""

    revisions: list[dict[str, Any]]
    update: dict[str, Any]

    @property
    def update_hash(self) -> str:
        return self.update["metadata"]["labels"][REVISION_HASH_LABEL]


def template_patch(owner: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` of a revision of ``owner``: its pod template, marked to replace on undo."""
    template = store.copy((owner.get("spec") or {}).get("template") or {})
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def template_of(revision: dict[str, Any]) -> dict[str, Any]:
    """The pod template a revision holds (without the ``$patch`` marker)."""
    template = store.copy(((revision.get("data") or {}).get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    return template


def compute_hash(data: dict[str, Any], collision_count: int | None = None) -> str:
    payload = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    if collision_count:
        payload += b"#" + str(collision_count).encode()
    return podutil.safe_encode(str(podutil.fnv32a(payload)))


def revision_number(revision: dict[str, Any]) -> int:
    return int(revision.get("revision") or 0)


def owned(revisions: store.Store, owner: dict[str, Any]) -> list[dict[str, Any]]:
    """The owner's revisions from an informer's cache, oldest (lowest revision) first."""
    uid = owner["metadata"].get("uid")
    mine = [
        r
        for r in revisions.list_namespace(owner["metadata"].get("namespace", ""))
        if any(
            ref.get("uid") == uid and ref.get("controller")
            for ref in r["metadata"].get("ownerReferences") or ()
        )
    ]
    return sorted(mine, key=lambda r: (revision_number(r), r["metadata"].get("creationTimestamp", "")))


def new_revision(owner: dict[str, Any], data: dict[str, Any], *, number: int, hash_: str) -> dict[str, Any]:
    md = owner["metadata"]
    template_labels = ((owner.get("spec") or {}).get("template") or {}).get("metadata", {}).get(
        "labels"
    ) or {}
    return {
        "apiVersion": resources.CONTROLLERREVISIONS.api_version,
        "kind": "ControllerRevision",
        "metadata": {
            "name": f"{md['name']}-{hash_}",
            "namespace": md["namespace"],
            "labels": {**template_labels, REVISION_HASH_LABEL: hash_},
            "ownerReferences": [
                podutil.owner_reference(owner, api_version="apps/v1", kind=owner.get("kind", ""))
            ],
        },
        "data": data,
        "revision": number,
    }


async def sync(api: types.Api, revisions: store.Store, owner: dict[str, Any]) -> History:
    """Find or create the revision of the owner's current template; raise ``Collision``.

    An existing revision with the same data that is not the newest (a rollback to an older
    template) is renumbered past the newest, as upstream does, so ``revision`` always orders
    templates by when they were last current.
    """
    history = owned(revisions, owner)
    data = template_patch(owner)
    collision_count = (owner.get("status") or {}).get("collisionCount")
    hash_ = compute_hash(data, collision_count)
    newest = max((revision_number(r) for r in history), default=0)
    for existing in history:
        if existing["metadata"]["labels"].get(REVISION_HASH_LABEL) == hash_ and existing.get("data") == data:
            if revision_number(existing) < newest:
                bumped = store.copy(existing)
                bumped["revision"] = newest + 1
                existing = await api.update(resources.CONTROLLERREVISIONS, bumped)
                history = [r for r in history if r["metadata"]["name"] != existing["metadata"]["name"]]
                history.append(existing)
            return History(history, existing)
    created = new_revision(owner, data, number=newest + 1, hash_=hash_)
    try:
        made = await api.create(resources.CONTROLLERREVISIONS, created)
    except errors.ApiError as exc:
        if not errors.is_already_exists(exc):
            raise
        made = await api.get(
            resources.CONTROLLERREVISIONS,
            created["metadata"]["name"],
            namespace=created["metadata"]["namespace"],
        )
        if made.get("data") != data:
            raise Collision(created["metadata"]["name"]) from exc
    return History([*history, made], made)


async def truncate(
    api: types.Api, history: list[dict[str, Any]], *, keep: set[str], limit: int | None
) -> None:
    """Delete the oldest revisions beyond ``limit``, except those named in ``keep`` (in use)."""
    limit = DEFAULT_HISTORY_LIMIT if limit is None else limit
    unused = [r for r in history if r["metadata"]["name"] not in keep]
    for revision in unused[: max(len(unused) - limit, 0)]:
        try:
            await api.delete(
                resources.CONTROLLERREVISIONS,
                revision["metadata"]["name"],
                namespace=revision["metadata"]["namespace"],
            )
        except errors.ApiError as exc:
            if not errors.is_not_found(exc):
                raise
