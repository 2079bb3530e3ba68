"""Compare two invariant sets by id (`invar diff old.yaml new.yaml`).

What counts as a difference is what `invar check` would do differently: a changed
template, target, expect (per parameter, so a moved bound reads `expect.max: 0.5 -> 0.8`),
when, severity, status or locus. New evidence (support) and reworded `why` texts change
nothing that is checked; they are listed separately in `evidence` and do not make a diff
truthy, so re-mining a pipeline whose facts did not move reports "no differences".
Meta changes (e.g. `created`) are likewise informational.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Tuple

from invariants.model import Invariant, InvariantSet
from invariants.variables import block_of

Change = Dict[str, Tuple[Any, Any]]
GRAPH_TEMPLATE = "multiset"  # the graph facts' template (invariants/templates/graph.py)
CHECKED_FIELDS = ("template", "target", "when.phase", "when.steps", "severity", "status", "locus")
EVIDENCE_FIELDS = ("support.runs", "support.observations", "support.span", "why")
_MISSING = "<absent>"


@dataclass
class SetDiff:
    """added/removed: invariants only in b/a; changed: (id, {field: (old, new)}) for what
    `check` evaluates; evidence: the same for support/why only; meta: {key: (old, new)}.
    Falsy when nothing checked differs."""

    added: List[Invariant] = field(default_factory=list)
    removed: List[Invariant] = field(default_factory=list)
    changed: List[Tuple[str, Change]] = field(default_factory=list)
    evidence: List[Tuple[str, Change]] = field(default_factory=list)
    meta: Change = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def _get(inv: Invariant, name: str) -> Any:
    obj: Any = inv
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _mapping_changes(prefix: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> Change:
    out: Change = {}
    for k in list(a) + [k for k in b if k not in a]:
        old, new = a.get(k, _MISSING), b.get(k, _MISSING)
        if old != new or type(old) is not type(new):
            out[f"{prefix}.{k}"] = (old, new)
    return out


def _changes(a: Invariant, b: Invariant, names: Tuple[str, ...]) -> Change:
    return {n: (_get(a, n), _get(b, n)) for n in names if _get(a, n) != _get(b, n)}


def diff(a: InvariantSet, b: InvariantSet) -> SetDiff:
    """What changed from `a` (old) to `b` (new), lined up by invariant id."""
    old, new = a.by_id(), b.by_id()
    d = SetDiff(added=[new[i] for i in sorted(new.keys() - old.keys())],
                removed=[old[i] for i in sorted(old.keys() - new.keys())])
    for iid in sorted(old.keys() & new.keys()):
        x, y = old[iid], new[iid]
        checked = _changes(x, y, CHECKED_FIELDS)
        # Parameters one by one: the reviewer wants `expect.max`, not two whole mappings.
        checked.update(_mapping_changes("expect", x.expect, y.expect))
        if checked:
            d.changed.append((iid, checked))
        evidence = _changes(x, y, EVIDENCE_FIELDS)
        if evidence:
            d.evidence.append((iid, evidence))
    d.meta = _mapping_changes("meta", a.meta, b.meta)
    return d


def _show(v: Any) -> str:
    # repr for numbers so that a bound moved in the 7th digit is still visible.
    if v is None:
        return "null"
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_show(x)}" for k, x in v.items()) + "}"
    return repr(v)


def _describe(inv: Invariant) -> str:
    expect = ", ".join(f"{k}: {_show(v)}" for k, v in inv.expect.items())
    return (f"{inv.id}  [{inv.severity}, {inv.status}]  "
            f"{' vs '.join(inv.target)}  {{{expect}}}")


def _change_lines(changes: List[Tuple[str, Change]], mark: str) -> List[str]:
    out = []
    for iid, fields in changes:
        out.append(f"{mark} {iid}")
        out += [f"    {name}: {_show(o)} -> {_show(n)}" for name, (o, n) in fields.items()]
    return out


def _fact(variable: str) -> str:
    """`layer2.0 ops`, `head` (a model-level fact): which graph fact a variable is."""
    block = block_of(variable)
    return f"{block} {variable.rsplit('.', 1)[-1]}" if block else variable.partition(".")[2]


def graph_lines(d: SetDiff) -> List[str]:
    """The structural diff between two files' graph facts (template `multiset`): per fact,
    the items added and removed; facts only one file has (a new block) as a whole."""
    from invariants.templates.graph import changes  # the template owns its items' format
    out = [f"  - {_fact(i.target[0])}: {i.expect['value']}" for i in d.removed if i.template == GRAPH_TEMPLATE]
    out += [f"  + {_fact(i.target[0])}: {i.expect['value']}" for i in d.added if i.template == GRAPH_TEMPLATE]
    for iid, fields in d.changed:
        if iid.startswith(GRAPH_TEMPLATE + ":") and "expect.value" in fields:
            variable = iid.partition(":")[2].rpartition("@")[0]
            out.append(f"  ~ {_fact(variable)}: {'; '.join(changes(*fields['expect.value']))}")
    return out


def render_diff(d: SetDiff) -> str:
    """Text for people: a one-line summary, then added (+), removed (-), changed (~) and,
    separately, evidence-only changes and meta. "no differences" when nothing checked
    differs."""
    lines: List[str] = []
    if not d:
        lines.append("no differences")
    else:
        counts = [(len(d.added), "added"), (len(d.removed), "removed"), (len(d.changed), "changed")]
        lines.append(", ".join(f"{n} {what}" for n, what in counts if n))
        lines += [f"+ {_describe(i)}" for i in d.added]
        lines += [f"- {_describe(i)}" for i in d.removed]
        lines += _change_lines(d.changed, "~")
    graph = graph_lines(d)
    if graph:
        lines += ["", "graph (the model's structure, as the two files' graph facts describe it):"] + graph
    if d.evidence:
        lines += ["", f"evidence only (not checked) changed for {len(d.evidence)} invariant(s):"]
        lines += _change_lines(d.evidence, " ")
    if d.meta:
        lines += ["", "meta:"] + [f"    {k}: {_show(o)} -> {_show(n)}" for k, (o, n) in d.meta.items()]

    return "\n".join(lines)
