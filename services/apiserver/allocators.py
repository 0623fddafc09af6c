"""ClusterIP and NodePort allocation for Services, shared by every API server on one store.

Each allocated value is one key in the store, written with the same create-if-absent
transaction (mod_revision == 0) every object create uses::

    /registry/ranges/serviceips/10.43.0.17
    /registry/ranges/servicenodeports/30080

holding ``{"owner": {namespace, name, uid}, "allocated": RFC 3339, "releasing": bool}``.
kube-apiserver's older layout is one bitmap per range (``/registry/ranges/serviceips``,
a RangeAllocation) rewritten with compare-and-swap; every allocation on every server then
writes that one hot key and the losers retry. One key per value (upstream's newer layout too:
an IPAddress object per cluster IP) needs no read before the write, lets the store arbitrate
between servers, and a listing of the prefix is the used set.

Values are picked at random from the range above upstream's static band (KEP-3070/3668: the
first min(max(16, size/16), 256) addresses, min(max(16, size/32), 128) ports), which is kept for
explicit requests (DNS at .10) and used once the rest is full; .1 is never picked (the
``kubernetes`` service). A pick is one create; after a few collisions a keys-only listing gives
the free set. So a create costs O(1) round trips at any realistic fill.

This runs inside ``admission.mutate``: before validation, before the object is stored, and
with no hook after a successful update. Hence:

- create: allocates nothing when the object will fail validation or its name is taken (the
  common failures); what one call claimed is deleted again if a later claim in it fails;
- update: keeps the old values, claims new ones, and only *marks* the values it drops as
  releasing, since the update may still fail. A marked value is free once its owner's stored
  Service no longer holds it: an explicit request checks that and takes the key over with
  compare-and-swap; ``repair`` deletes it. An owner re-adding a value it marked takes the key
  back with compare-and-swap too, so the two cannot both win;
- delete (the Service is gone): deletes the keys it owned;
- dry run: checks and picks values, writes nothing.

What can still leak (the server dies between a claim and the store write, a create loses the
race for its name, an update loses its compare-and-swap) is found by ``repair``: values no
stored Service holds and claimed more than GRACE ago are deleted; values a Service holds with no
key (a store written before this allocator) are recorded. Every delete compares the key's
revision, so repairs on several servers at once are safe. The API server runs ``repair`` once
before it serves and then ``repair_loop`` in the background.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import ipaddress
import itertools
import logging
import random
from collections.abc import Iterator
from typing import Any

from services.apiserver import context, defaults, registry, storage
from services.kine import types
from services.machinery import errors, meta

log = logging.getLogger(__name__)

IP_PREFIX = "/registry/ranges/serviceips/"
PORT_PREFIX = "/registry/ranges/servicenodeports/"
DEFAULT_SERVICE_CIDR = "10.43.0.0/16"  # K3s --service-cidr
DEFAULT_NODE_PORTS = "30000-32767"  # K3s --service-node-port-range
RANDOM_TRIES = 10  # random picks before listing what is used
SCAN_TRIES = 64  # free values from one listing tried before listing again
CAS_RETRIES = 8  # compare-and-swap rounds on one key before giving up
GRACE = 300.0  # seconds an unheld claim is left alone: its create or update may still be in flight
REPAIR_INTERVAL = 180.0  # seconds between repairs (upstream's repair loops run every 3 minutes)
IP_TYPES = frozenset({"ClusterIP", "NodePort", "LoadBalancer"})
NODE_PORT_TYPES = frozenset({"NodePort", "LoadBalancer"})

Obj = dict[str, Any]


# -- ranges -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Range:
    """Allocatable values as integers ``first..last``; the first ``static`` are picked last."""

    prefix: str
    text: str  # as messages name it: "10.43.0.0/16", "30000-32767"
    first: int
    last: int
    static: int
    reserved: frozenset[int] = frozenset()  # never picked at random
    ip_version: int = 0  # 4 or 6 for addresses, 0 for ports

    def show(self, value: int) -> str:
        if not self.ip_version:
            return str(value)
        return str(ipaddress.IPv4Address(value) if self.ip_version == 4 else ipaddress.IPv6Address(value))

    def key(self, value: int) -> str:
        return self.prefix + self.show(value)

    def contains(self, value: int) -> bool:
        return self.first <= value <= self.last

    def _bands(self) -> list[tuple[int, int]]:
        upper = (self.first + self.static, self.last)
        return [upper, (self.first, upper[0] - 1)] if upper[0] <= self.last else [(self.first, self.last)]

    def picks(self, count: int) -> Iterator[int]:
        """Random values of the preferred band."""
        low, high = self._bands()[0]
        for _ in range(count):
            value = random.randint(low, high)
            if value not in self.reserved:
                yield value

    def free(self, used: set[int]) -> Iterator[int]:
        """Unused values, the preferred band first, each band walked from a random start."""
        for low, high in self._bands():
            if low > high:
                continue
            start = random.randint(low, high)
            for value in itertools.chain(range(start, high + 1), range(low, start)):
                if value not in used and value not in self.reserved:
                    yield value


def _static_band(size: int, *, step: int, most: int) -> int:
    """Upstream's calculateRangeOffset: min(max(16, size/step), most), none below 16 values."""
    return 0 if size < 16 else min(max(16, size // step), most)


@functools.lru_cache(maxsize=8)
def ip_range(cidr: str) -> Range:
    """The service range: the first CIDR of ``--service-cidr`` less its network (and v4 broadcast)."""
    text = cidr.split(",")[0].strip()
    net = ipaddress.ip_network(text, strict=False)
    base, size = int(net.network_address), net.num_addresses
    last = base + size - (2 if net.version == 4 else 1)
    return Range(IP_PREFIX, str(net), base + 1, max(base + 1, last), _static_band(size, step=16, most=256),
                 reserved=frozenset({base + 1}), ip_version=net.version)  # fmt: skip


@functools.lru_cache(maxsize=8)
def port_range(text: str) -> Range:
    """``--service-node-port-range``: "30000-32767", "30000+2767" (base+size) or one port."""
    spec = text.strip()
    if "+" in spec:
        base, extra = spec.split("+", 1)
        first, last = int(base), int(base) + int(extra)
    elif "-" in spec:
        low, high = spec.split("-", 1)
        first, last = int(low), int(high)
    else:
        first = last = int(spec)
    return Range(
        PORT_PREFIX, f"{first}-{last}", first, last, _static_band(last - first + 1, step=32, most=128)
    )


def ranges(settings: Any) -> tuple[Range, Range]:
    cidr = getattr(settings, "service_cidr", "") or DEFAULT_SERVICE_CIDR
    ports = getattr(settings, "service_node_port_range", "") or DEFAULT_NODE_PORTS
    return ip_range(cidr), port_range(ports)


# -- what a Service holds -------------------------------------------------------------------------


def _ip_value(text: Any, version: int) -> int | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return int(address) if address.version == version else None


def holdings(service: Obj, rng: Range) -> set[int]:
    """The values of ``rng`` a Service names (whatever its type: what is stored is what counts)."""
    spec = service.get("spec") or {}
    if rng.ip_version:
        texts = [spec.get("clusterIP"), *(spec.get("clusterIPs") or [])]
        return {v for t in texts if isinstance(t, str) and (v := _ip_value(t, rng.ip_version)) is not None}
    values = [p.get("nodePort") for p in spec.get("ports") or [] if isinstance(p, dict)]
    values.append(spec.get("healthCheckNodePort"))
    return {v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0}


def _owner(obj: Obj) -> dict[str, str]:
    md = obj.get("metadata") or {}
    return {"namespace": md.get("namespace", ""), "name": md.get("name", ""), "uid": md.get("uid", "")}


def _owner_uid(found: storage.Stored) -> str:
    return (found.obj.get("owner") or {}).get("uid", "")


def _record(owner: dict[str, str], *, releasing: bool = False) -> Obj:
    return {"owner": owner, "allocated": meta.now_rfc3339(), "releasing": releasing}


def _age(record: Obj, now: datetime.datetime) -> float:
    try:
        at = datetime.datetime.strptime(record.get("allocated", ""), "%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError):
        return float("inf")
    return (now - at.replace(tzinfo=datetime.UTC)).total_seconds()


# -- claims ----------------------------------------------------------------------------------------


class _Claims:
    """Claims for one Service in one write; remembers what it took so a failure can give it back."""

    def __init__(self, store: storage.ObjectStore, services: registry.ResourceInfo, owner: dict[str, str], *, dry_run: bool) -> None:  # fmt: skip
        self.store = store
        self.services = services
        self.owner = owner
        self.dry_run = dry_run
        self.taken: list[tuple[str, int]] = []  # (key, revision) this call wrote

    async def _take(self, key: str) -> bool:
        if self.dry_run:
            return await self.store.get(key) is None
        revision = await self.store.create(key, _record(self.owner))
        if revision is not None:
            self.taken.append((key, revision))
        return revision is not None

    async def explicit(self, rng: Range, value: int) -> bool:
        """Claim ``value``; False when another Service holds it."""
        key = rng.key(value)
        for _ in range(CAS_RETRIES):
            if await self._take(key):
                return True
            found = await self.store.get(key)
            if found is None:
                continue  # freed meanwhile
            holder = found.obj.get("owner") or {}
            ours = holder.get("uid") == self.owner["uid"]
            if not ours and not (found.obj.get("releasing") and await self._let_go(holder, rng, value)):
                return False
            if self.dry_run:
                return True
            # Rewrite even our own key: that clears a release mark and restarts its grace, and the
            # compare-and-swap orders us against anyone taking it over.
            revision = await self.store.update(key, _record(self.owner), expected=found.revision)
            if revision is not None:
                if not ours:
                    self.taken.append((key, revision))
                return True
        return False

    async def _let_go(self, holder: dict[str, str], rng: Range, value: int) -> bool:
        """Whether the Service that marked ``value`` releasing has stored a version without it."""
        found = await self.store.get(self.services.key(holder.get("namespace", ""), holder.get("name", "")))
        if found is None or found.obj.get("metadata", {}).get("uid") != holder.get("uid"):
            return True
        return value not in holdings(found.obj, rng)

    async def any(self, rng: Range) -> int | None:
        """Claim some free value; None when the range is full."""
        for value in rng.picks(RANDOM_TRIES):
            if await self._take(rng.key(value)):
                return value
        for _ in range(2):
            for value in itertools.islice(rng.free(await _used(self.store, rng)), SCAN_TRIES):
                if await self._take(rng.key(value)):
                    return value
        return None

    async def rollback(self) -> None:
        try:
            for key, revision in reversed(self.taken):
                await self.store.delete(key, expected=revision)
        except types.StoreError as exc:
            log.warning(
                "could not give back %d claims of %s (repair will): %s", len(self.taken), self.owner, exc
            )
        self.taken.clear()

    async def mark_released(self, rng: Range, value: int) -> None:
        key = rng.key(value)
        for _ in range(CAS_RETRIES):
            found = await self.store.get(key)
            if found is None or found.obj.get("releasing") or _owner_uid(found) != self.owner["uid"]:
                return
            marked = _record(self.owner, releasing=True)
            if await self.store.update(key, marked, expected=found.revision) is not None:
                return


async def _used(store: storage.ObjectStore, rng: Range) -> set[int]:
    result = await store.backend.range(rng.prefix.encode(), storage.prefix_end(rng.prefix), keys_only=True)
    return {value for kv in result.kvs if (value := _parse_key(rng, kv.key.decode())) is not None}


def _parse_key(rng: Range, key: str) -> int | None:
    text = key.removeprefix(rng.prefix)
    if rng.ip_version:
        return _ip_value(text, rng.ip_version)
    return int(text) if text.isdigit() else None


async def _free(store: storage.ObjectStore, rng: Range, value: int, uid: str) -> None:
    """Delete the key of ``value`` if the Service ``uid`` owns it."""
    key = rng.key(value)
    for _ in range(CAS_RETRIES):
        found = await store.get(key)
        if found is None or _owner_uid(found) != uid:
            return
        if await store.delete(key, expected=found.revision) is not None:
            return


# -- the admission entry points ----------------------------------------------------------------------


class _Invalid:
    """422 Invalid for one Service, in upstream's wording."""

    def __init__(self, obj: Obj) -> None:
        self.name = (obj.get("metadata") or {}).get("name", "")

    def __call__(self, *causes: errors.Cause) -> errors.ApiError:
        return errors.invalid("Service", self.name, list(causes))


def _strings(values: list[Any]) -> str:
    """Go's %#v of a []string, as upstream's messages show clusterIPs."""
    return "[]string{" + ", ".join(f'"{v}"' for v in values) + "}"


async def allocate(ctx: context.Request, obj: Obj, old: Obj | None) -> None:
    """Give a Service its cluster IP(s) and node ports (create), keep them (update)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict) or not _would_validate(ctx, obj):
        return  # validation rejects the object right after admission: claim nothing
    try:
        if old is None and await _name_taken(ctx, obj):
            return  # the create ends in AlreadyExists: claim nothing
        ips, ports = ranges(ctx.api.settings)
        dry_run = "All" in ctx.query.get("dryRun", [])
        claims = _Claims(ctx.api.store, ctx.resource, _owner(obj), dry_run=dry_run)
        old_spec = (old or {}).get("spec") or {}
        invalid = _Invalid(obj)
        try:
            released = await _cluster_ip(claims, ips, spec, old_spec, invalid)
            released += await _node_ports(claims, ports, spec, old_spec, invalid)
        except Exception:  # a cancelled request leaves its claims to repair
            await claims.rollback()
            raise
        if not dry_run:
            for rng, value in released:
                await claims.mark_released(rng, value)
    except types.StoreError as exc:
        raise storage.store_unavailable(exc) from None


async def release(ctx: context.Request, obj: Obj) -> None:
    """Free what a deleted Service held (it is gone from the store already, so never fail)."""
    uid = (obj.get("metadata") or {}).get("uid", "")
    try:
        for rng in ranges(ctx.api.settings):
            for value in holdings(obj, rng):
                await _free(ctx.api.store, rng, value, uid)
    except types.StoreError as exc:
        log.warning("could not free the allocations of service %s (repair will): %s", _owner(obj), exc)


def _would_validate(ctx: context.Request, obj: Obj) -> bool:
    """The checks ``writes`` runs after admission, run first so that a bad object claims nothing.

    (``validation.validate_schema`` is left out: it checks custom resources only.)
    """
    causes = meta.validate_object_meta(obj, namespaced=True, name_rule="label", kind="Service")
    return not (causes or defaults.validate(ctx.resource, obj))


async def _name_taken(ctx: context.Request, obj: Obj) -> bool:
    md = obj.get("metadata") or {}
    return await ctx.api.store.get(ctx.resource.key(md.get("namespace", ""), md.get("name", ""))) is not None


async def _cluster_ip(claims: _Claims, rng: Range, spec: Obj, old_spec: Obj, invalid: _Invalid) -> list[tuple[Range, int]]:  # fmt: skip
    """Fill ``spec.clusterIP(s)``; return what the old version held and this one drops."""
    ip, ips = spec.get("clusterIP") or "", list(spec.get("clusterIPs") or [])
    old_ip = (old_spec.get("clusterIP") or "") if old_spec.get("type") in IP_TYPES else ""
    if spec.get("type") not in IP_TYPES:  # ExternalName (other types fail validation)
        if old_ip and ip in ("", old_ip) and ips in ([], old_spec.get("clusterIPs")):
            # Upstream drops what the type no longer uses, when the client left it as it was.
            for field in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                if field in spec and (field.startswith("cluster") or spec[field] == old_spec.get(field)):
                    del spec[field]
            return [(rng, v) for v in holdings({"spec": old_spec}, rng)]
        if ip or ips:
            raise invalid(meta.forbidden("spec.clusterIPs", "may not be set for ExternalName services"))
        return []
    if old_ip:  # clients replacing a Service usually omit what was allocated
        spec["clusterIP"] = ip or old_ip
        if not ips:
            spec["clusterIPs"] = (
                list(old_spec.get("clusterIPs") or [old_ip]) if spec["clusterIP"] == old_ip else [ip]
            )
        return []  # a changed clusterIP is refused as immutable
    ip = ip or (ips[0] if ips else "")
    if ips and ips[0] != ip:
        raise invalid(meta.invalid("spec.clusterIPs[0]", ips[0], "must match `clusterIP` when set"))
    if len(ips) > 1:
        raise invalid(
            meta.invalid(
                "spec.clusterIPs[1]", ips[1], "may not be set: the cluster has one service IP family"
            )
        )
    if ip == "None":
        if spec["type"] != "ClusterIP":
            raise invalid(
                meta.invalid(
                    "spec.clusterIPs[0]", ip, f"may not be set to 'None' for {spec['type']} services"
                )
            )
        spec["clusterIP"], spec["clusterIPs"] = "None", ["None"]
        return []
    if ip:
        await _claim_ip(claims, rng, ip, invalid)
    else:
        value = await claims.any(rng)
        if value is None:
            raise errors.internal("failed to allocate a serviceIP: range is full")
        ip = rng.show(value)
    spec["clusterIP"], spec["clusterIPs"] = ip, [ip]
    return []


async def _claim_ip(claims: _Claims, rng: Range, ip: str, invalid: _Invalid) -> None:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise invalid(meta.invalid("spec.clusterIPs[0]", ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")) from None  # fmt: skip
    value = int(address) if address.version == rng.ip_version else None
    if value is None or not rng.contains(value):
        why = f"the provided IP ({ip}) is not in the valid range. The range of valid IPs is {rng.text}"
    elif not await claims.explicit(rng, value):
        why = "provided IP is already allocated"
    else:
        return
    message = f"Invalid value: {_strings([ip])}: failed to allocate IP {ip}: {why}"
    raise invalid(errors.Cause("FieldValueInvalid", message, "spec.clusterIPs"))


async def _node_ports(claims: _Claims, rng: Range, spec: Obj, old_spec: Obj, invalid: _Invalid) -> list[tuple[Range, int]]:  # fmt: skip
    """Fill ``nodePort`` of each port (and ``healthCheckNodePort``); return the ports dropped."""
    ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
    old_held = holdings({"spec": old_spec}, rng)
    kind = spec.get("type")
    if kind not in NODE_PORT_TYPES:
        for i, port in enumerate(ports):
            if port.get("nodePort") in old_held:
                del port["nodePort"]  # upstream drops node ports the type change left as they were
            elif port.get("nodePort"):
                raise invalid(
                    meta.forbidden(f"spec.ports[{i}].nodePort", f"may not be used when `type` is '{kind}'")
                )
        _health_check_port_off(spec, old_spec, invalid)
        return [(rng, v) for v in old_held]
    if old_spec.get("type") in NODE_PORT_TYPES:
        _keep_old_node_ports(ports, old_spec)
    claimed, seen, missing = set(old_held), set(), []
    for i, port in enumerate(ports):
        value = port.get("nodePort")
        if not value:
            missing.append(port)
            continue
        if (value, port.get("protocol", "TCP")) in seen:
            raise invalid(
                errors.Cause("FieldValueDuplicate", f"Duplicate value: {value}", f"spec.ports[{i}].nodePort")
            )
        seen.add((value, port.get("protocol", "TCP")))
        await _claim_port(claims, rng, value, f"spec.ports[{i}].nodePort", claimed, invalid)
    if kind == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local":
        spec["healthCheckNodePort"] = (
            spec.get("healthCheckNodePort") or old_spec.get("healthCheckNodePort") or 0
        )
        if spec["healthCheckNodePort"]:
            await _claim_port(
                claims, rng, spec["healthCheckNodePort"], "spec.healthCheckNodePort", claimed, invalid
            )
        else:
            spec["healthCheckNodePort"] = await _any_port(claims, rng)
    else:
        _health_check_port_off(spec, old_spec, invalid)
    if not (kind == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is False):
        for port in missing:
            port["nodePort"] = await _any_port(claims, rng)
    return [(rng, v) for v in old_held - holdings({"spec": spec}, rng)]


def _keep_old_node_ports(ports: list[Obj], old_spec: Obj) -> None:
    """Give ports sent without a nodePort the one their namesake had (upstream patchAllocatedValues)."""
    by_name = {
        p.get("name", ""): p.get("nodePort") for p in old_spec.get("ports") or [] if isinstance(p, dict)
    }
    used = {p.get("nodePort") for p in ports if p.get("nodePort")}
    for port in ports:
        value = by_name.get(port.get("name", ""))
        if not port.get("nodePort") and value and value not in used:
            port["nodePort"] = value
            used.add(value)


def _health_check_port_off(spec: Obj, old_spec: Obj, invalid: _Invalid) -> None:
    value = spec.get("healthCheckNodePort")
    if value and value == old_spec.get("healthCheckNodePort"):
        del spec["healthCheckNodePort"]
    elif value:
        raise invalid(meta.invalid("spec.healthCheckNodePort", value, "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"))  # fmt: skip


async def _claim_port(claims: _Claims, rng: Range, value: Any, field: str, claimed: set[int], invalid: _Invalid) -> None:  # fmt: skip
    """Claim an explicit node port unless this Service holds it already (a port may serve TCP and UDP)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid(meta.invalid(field, value, "must be an integer"))
    if value in claimed:
        return
    if not rng.contains(value):
        raise invalid(meta.invalid(field, value, f"provided port is not in the valid range. The range of valid ports is {rng.text}"))  # fmt: skip
    if not await claims.explicit(rng, value):
        raise invalid(meta.invalid(field, value, "provided port is already allocated"))
    claimed.add(value)


async def _any_port(claims: _Claims, rng: Range) -> int:
    value = await claims.any(rng)
    if value is None:
        raise errors.internal("failed to allocate a nodePort: range is full")
    return value


# -- repair ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class RepairResult:
    freed: int = 0  # keys deleted: held by no Service
    recorded: int = 0  # keys created for values Services held without one


async def repair(api: context.Api, *, grace: float = GRACE) -> RepairResult:
    """Make the allocation keys match the stored Services (upstream's repair controllers).

    Claims are listed before the Services, so a Service stored in between is seen holding its
    values; a claim no Service holds is freed only when marked releasing (its owner stored a
    version without it) or older than ``grace`` (a create or update may still be in flight).
    """
    services = api.registry.lookup("", "v1", "services")
    assert services is not None
    result = RepairResult()
    rngs = ranges(api.settings)
    claimed = [await _claims_of(api.store, rng) for rng in rngs]
    listed, _, _, _ = await api.store.list(services.collection_prefix(""))
    now = datetime.datetime.now(datetime.UTC)
    for rng, claims in zip(rngs, claimed, strict=True):
        holders: dict[int, list[Obj]] = {}
        for item in listed:
            for value in holdings(item.obj, rng):
                holders.setdefault(value, []).append(item.obj)
        result.recorded += await _record_holders(api.store, rng, holders, claims)
        for value, stored in claims.items():
            if value in holders or not (stored.obj.get("releasing") or _age(stored.obj, now) >= grace):
                continue
            if await api.store.delete(rng.key(value), expected=stored.revision) is not None:
                result.freed += 1
    if result.freed or result.recorded:
        log.info("service allocation repair: freed %d, recorded %d", result.freed, result.recorded)
    return result


async def _claims_of(store: storage.ObjectStore, rng: Range) -> dict[int, storage.Stored]:
    """Every claim of ``rng`` by value (the value is in the key, not in the record)."""
    result = await store.backend.range(rng.prefix.encode(), storage.prefix_end(rng.prefix))
    out: dict[int, storage.Stored] = {}
    for kv in result.kvs:
        value = _parse_key(rng, kv.key.decode())
        if value is not None:
            out[value] = storage.Stored(storage.decode(kv.value, kv.mod_revision), kv.mod_revision)
    return out


async def _record_holders(store: storage.ObjectStore, rng: Range, holders: dict[int, list[Obj]], claims: dict[int, storage.Stored]) -> int:  # fmt: skip
    recorded = 0
    for value, services in holders.items():
        names = ", ".join(f"{o['namespace']}/{o['name']}" for o in map(_owner, services))
        if len(services) > 1:
            log.warning("%s %s is held by %d services (%s); recreate all but one", _what(rng), rng.show(value), len(services), names)  # fmt: skip
        if value in claims:
            continue
        if not rng.contains(value):
            log.warning(
                "%s %s of %s is outside %s; recreate the service",
                _what(rng),
                rng.show(value),
                names,
                rng.text,
            )
            continue
        if await store.create(rng.key(value), _record(_owner(services[0]))) is not None:
            recorded += 1
    return recorded


def _what(rng: Range) -> str:
    return "cluster IP" if rng.ip_version else "node port"


async def repair_loop(api: context.Api, *, interval: float = REPAIR_INTERVAL) -> None:
    """``repair`` every ``interval`` seconds, for ever; a store outage skips a round."""
    while True:
        await asyncio.sleep(interval)
        try:
            await repair(api)
        except types.StoreError as exc:
            log.warning("service allocation repair skipped: %s", exc)
