"""The graph facts' template: a list of items (op kinds, modules) that must stay the
same multiset, and a violation that reads as the structural diff (docs/graph.md).

A value is `kind`, `kind*count` or `kind @ context` items separated by "; ", or `none`
(tracer/graph_facts.py writes them). Only kinds and counts are compared: the context (the
source line of a detach, what cuts a module off) changes with every edit of the script
and is there to be read in the diff: `+ detach (model.py:39); - add`.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from invariants.registry import Field, register
from invariants.templates.base import Discard, Fit, Sample, Template, fmt

NONE = "none"
SEPARATOR = "; "


def parse(text: Any) -> Tuple[Counter, Dict[str, str]]:
    """(kind -> count, kind -> context) of a value; a value that is no text has no items."""
    counts: Counter = Counter()
    contexts: Dict[str, str] = {}
    if not isinstance(text, str) or text.strip() in ("", NONE):
        return counts, contexts
    for item in text.split(SEPARATOR):
        head, _, context = item.partition(" @ ")
        kind, star, n = head.strip().rpartition("*")
        if not star or not n.isdigit():
            kind, n = head.strip(), "1"
        counts[kind] += int(n)
        if context:
            contexts.setdefault(kind, context.strip())
    return counts, contexts


def changes(expected: Any, observed: Any) -> List[str]:
    """The structural diff, added items first: `+ softmax (after `9`)`, `- add x2`."""
    want, want_ctx = parse(expected)
    got, got_ctx = parse(observed)
    out = []
    for sign, more, ctx in (("+", got - want, got_ctx), ("-", want - got, want_ctx)):
        for kind in sorted(more):
            n = more[kind]
            out.append(f"{sign} {kind}" + (f" x{n}" if n > 1 else "") + (f" ({ctx[kind]})" if kind in ctx else ""))
    return out


@register("multiset")
class Multiset(Template):
    """A graph fact keeps its items: a block's op kinds, its gradient-blocking ops, the
    modules cut off from the output, the ops before the loss. Compared as a multiset of
    kinds (contexts are for people); a violation names what was added and removed."""

    EXPECT = {"value": Field((str,), doc="the reference's items: `kind*count @ context; ...`, or `none`")}
    FIXES_VALUE = True

    @classmethod
    def fit(cls, sample: Sample, **params: Any) -> Union[Fit, Discard]:
        s = sample.first
        values = s.values
        if s.present_runs < sample.runs:
            return Discard(f"seen in {s.present_runs} of {sample.runs} runs")
        differ = next((v for v in values if parse(v)[0] != parse(values[0])[0]), None)
        if differ is not None:
            return Discard(f"falsified: the reference runs differ ({'; '.join(changes(values[0], differ))})")
        if not sample.enough():
            return Discard(f"too few runs ({s.present_runs})")
        return Fit({"value": values[0]}, [values[0]], len(values), s.present_runs)

    @classmethod
    def holds(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> bool:
        return isinstance(values[0], str) and parse(values[0])[0] == parse(expect["value"])[0]

    @classmethod
    def expected(cls, expect: Mapping[str, Any]) -> str:
        return f"== {expect['value']}"

    @classmethod
    def observed(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0,
                 span: Optional[Sequence[Any]] = None) -> str:
        diff = changes(expect["value"], values[0])
        return "; ".join(diff) if diff else fmt(values[0])

    @classmethod
    def deviation(cls, expect: Mapping[str, Any], values: Sequence[Any]) -> float:
        want, got = parse(expect["value"])[0], parse(values[0])[0]
        return float(max(1, sum(((got - want) + (want - got)).values())))

    @classmethod
    def check_expect(cls, expect: Mapping[str, Any]) -> Optional[Tuple[str, str]]:
        value = expect["value"]
        if any(not item.strip() for item in value.split(SEPARATOR)):
            return f"empty item in {value!r} (items are separated by '{SEPARATOR}'; no items: 'none')", "value"
        return None
