"""Placement rules as matchers: node selector terms, tolerations, pod affinity terms, spreading.

apimachinery's and the core helpers' semantics over plain dicts: ``NodeSelectorRequirement``
operators (``In``, ``NotIn``, ``Exists``, ``DoesNotExist``, ``Gt``, ``Lt``) and ``matchFields`` on
``metadata.name``; ``Toleration.ToleratesTaint``; the namespaces a ``PodAffinityTerm`` applies to
(its own list, a namespace selector, or the pod's namespace) with ``matchLabelKeys`` and
``mismatchLabelKeys`` merged into its selector; topology spread constraints with their policies.
Each is compiled once, when a pod is parsed (``podinfo``), and is immutable afterwards. Parsing
never raises on what the API server accepted; a malformed selector matches nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from services.machinery import errors as api_errors
from services.machinery import selectors

if TYPE_CHECKING:
    from services.scheduler.podinfo import PodInfo

HOSTNAME_LABEL = "kubernetes.io/hostname"

Labels = Mapping[str, str]


# -- node selectors ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class NodeRequirement:
    key: str
    operator: str
    values: frozenset[str]
    number: int | None = None  # Gt / Lt

    def matches(self, labels: Labels) -> bool:
        op = self.operator
        if op == "Exists":
            return self.key in labels
        if op == "DoesNotExist":
            return self.key not in labels
        value = labels.get(self.key)
        if op == "In":
            return value is not None and value in self.values
        if op == "NotIn":
            return value is None or value not in self.values
        if value is None or self.number is None:
            return False
        try:
            have = int(value)
        except ValueError:
            return False
        return have > self.number if op == "Gt" else have < self.number


@dataclasses.dataclass(frozen=True, slots=True)
class NodeTerm:
    """One ``NodeSelectorTerm``: every expression and field requirement must hold."""

    expressions: tuple[NodeRequirement, ...]
    fields: tuple[NodeRequirement, ...]
    valid: bool = True

    def matches(self, name: str, labels: Labels) -> bool:
        if not self.valid or (not self.expressions and not self.fields):
            return False  # an empty term matches no node (nodeaffinity.NewNodeSelector)
        if not all(r.matches(labels) for r in self.expressions):
            return False
        return all(r.matches({"metadata.name": name}) for r in self.fields)


@dataclasses.dataclass(frozen=True, slots=True)
class NodeSelector:
    """``NodeSelector.nodeSelectorTerms``: any term may match (an empty list matches none)."""

    terms: tuple[NodeTerm, ...]

    def matches(self, name: str, labels: Labels) -> bool:
        return any(t.matches(name, labels) for t in self.terms)


def _node_requirement(raw: Any, *, field: bool = False) -> NodeRequirement | None:
    if not isinstance(raw, dict):
        return None
    key, op = raw.get("key", ""), raw.get("operator", "")
    values = [str(v) for v in raw.get("values") or ()]
    if op not in ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"):
        return None
    if field and (key != "metadata.name" or op not in ("In", "NotIn")):
        return None
    number = None
    if op in ("Gt", "Lt"):
        if len(values) != 1:
            return None
        try:
            number = int(values[0])
        except ValueError:
            return None
    return NodeRequirement(key, op, frozenset(values), number)


def node_term(raw: Any) -> NodeTerm:
    raw = raw if isinstance(raw, dict) else {}
    exprs = [_node_requirement(e) for e in raw.get("matchExpressions") or ()]
    fields = [_node_requirement(f, field=True) for f in raw.get("matchFields") or ()]
    valid = all(r is not None for r in (*exprs, *fields))
    return NodeTerm(tuple(r for r in exprs if r), tuple(r for r in fields if r), valid)


def node_selector(raw: Any) -> NodeSelector:
    terms = (raw or {}).get("nodeSelectorTerms") or () if isinstance(raw, dict) else ()
    return NodeSelector(tuple(node_term(t) for t in terms))


# -- tolerations ---------------------------------------------------------------------------------


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """``Toleration.ToleratesTaint``: effect (empty: any), key (empty with Exists: any), value."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    if operator == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def tolerated(tolerations: tuple[Mapping[str, Any], ...], taint: Mapping[str, Any]) -> bool:
    return any(tolerates(t, taint) for t in tolerations)


# -- pod affinity terms --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class AffinityTerm:
    """A ``PodAffinityTerm`` with its selector and namespaces resolved for one incoming pod."""

    selector: selectors.LabelSelector
    namespaces: frozenset[str]
    namespace_selector: selectors.LabelSelector | None  # None: only ``namespaces`` count
    topology_key: str
    weight: int = 0  # preferred terms only; negative for anti-affinity in scoring

    def matches(self, pod: PodInfo, namespace_labels: Callable[[str], Labels | None]) -> bool:
        if pod.namespace not in self.namespaces:
            chosen = self.namespace_selector
            if chosen is None:
                return False
            if not chosen.empty and not chosen.matches(namespace_labels(pod.namespace) or {}):
                return False
        return self.selector.matches(pod.labels)


def _merge_label_keys(
    selector: selectors.LabelSelector, raw: Mapping[str, Any], labels: Labels
) -> selectors.LabelSelector:
    """``matchLabelKeys`` (In the incoming pod's value) and ``mismatchLabelKeys`` (NotIn)."""
    extra: list[selectors.Requirement] = []
    for field_, op in (("matchLabelKeys", selectors.IN), ("mismatchLabelKeys", selectors.NOT_IN)):
        for key in raw.get(field_) or ():
            if key in labels:
                extra.append(selectors.new_requirement(key, op, [labels[key]]))
    if not extra:
        return selector
    reqs = tuple(sorted((*selector.requirements, *extra), key=lambda r: r.key))
    return selectors.LabelSelector(reqs, selector.nothing)


def _label_selector(raw: Any) -> selectors.LabelSelector:
    try:
        return selectors.from_label_selector_dict(raw if isinstance(raw, dict) or raw is None else None)
    except (api_errors.ApiError, ValueError, TypeError):
        return selectors.NOTHING


def affinity_term(raw: Any, namespace: str, labels: Labels, *, weight: int = 0) -> AffinityTerm | None:
    if not isinstance(raw, dict) or not raw.get("topologyKey"):
        return None
    selector = _merge_label_keys(_label_selector(raw.get("labelSelector")), raw, labels)
    names = frozenset(raw.get("namespaces") or ())
    ns_raw = raw.get("namespaceSelector")
    ns_selector = None if ns_raw is None else _label_selector(ns_raw)
    if not names and ns_selector is None:
        names = frozenset({namespace})
    return AffinityTerm(selector, names, ns_selector, raw["topologyKey"], weight)


def affinity_terms(raw: Any, namespace: str, labels: Labels) -> tuple[AffinityTerm, ...]:
    found = (affinity_term(t, namespace, labels) for t in raw or ())
    return tuple(t for t in found if t is not None)


def weighted_terms(raw: Any, namespace: str, labels: Labels, sign: int) -> tuple[AffinityTerm, ...]:
    made = []
    for item in raw or ():
        if not isinstance(item, dict):
            continue
        term = affinity_term(
            item.get("podAffinityTerm"), namespace, labels, weight=sign * int(item.get("weight") or 0)
        )
        if term is not None and term.weight:
            made.append(term)
    return tuple(made)


# -- topology spread -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SpreadConstraint:
    topology_key: str
    max_skew: int
    hard: bool  # whenUnsatisfiable: DoNotSchedule
    selector: selectors.LabelSelector
    min_domains: int
    honor_affinity: bool  # nodeAffinityPolicy: Honor (the default)
    honor_taints: bool  # nodeTaintsPolicy: Honor (default Ignore)


def spread_constraint(raw: Any, labels: Labels) -> SpreadConstraint | None:
    if not isinstance(raw, dict) or not raw.get("topologyKey"):
        return None
    selector = _merge_label_keys(_label_selector(raw.get("labelSelector")), raw, labels)
    return SpreadConstraint(
        topology_key=raw["topologyKey"],
        max_skew=max(int(raw.get("maxSkew") or 1), 1),
        hard=(raw.get("whenUnsatisfiable") or "DoNotSchedule") == "DoNotSchedule",
        selector=selector,
        min_domains=max(int(raw.get("minDomains") or 1), 1),
        honor_affinity=(raw.get("nodeAffinityPolicy") or "Honor") == "Honor",
        honor_taints=(raw.get("nodeTaintsPolicy") or "Ignore") == "Honor",
    )
