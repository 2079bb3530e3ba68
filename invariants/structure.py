"""The structural diff of a check: what changed in the model's graph against the
reference's, per block, read from the violations of the graph facts (template `multiset`,
docs/graph.md), so that a reviewer sees what changed in the model next to what changed in
training."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Sequence

from invariants.check import Violation

GRAPH_TEMPLATE = "multiset"
SHOWN = 12  # changes the text report lists; the JSON lists every one
MODEL = "(model)"  # the block of a model-level fact
FACTS = {"blocks": "blocks", "ops": "ops", "blocking": "gradient-blocking ops",
         "cut_off": "cut off from the output", "head": "ops before the loss", "loss_head": "ops unfit for the loss"}


@dataclass(frozen=True)
class StructuralChange:
    """One item added to (`+ softmax (after `9`)`) or removed from (`- add`) a graph fact."""

    block: str
    fact: str
    change: str
    severity: str


def structural_diff(violations: Sequence[Violation]) -> List[StructuralChange]:
    """Every change the graph facts' violations name, in the order they were found."""
    out = []
    for v in sorted((v for v in violations if v.template == GRAPH_TEMPLATE), key=lambda v: (v.step, v.id)):
        fact = v.target[0].rsplit(".", 1)[-1]
        for change in re.split(r"; (?=[+-] )", v.observed):
            out.append(StructuralChange(v.locus or MODEL, FACTS.get(fact, fact), change, v.severity))
    return out


def to_json(violations: Sequence[Violation]) -> Dict[str, Any]:
    changes = structural_diff(violations)
    return {"total": len(changes), "changes": [asdict(c) for c in changes]}


def render_lines(violations: Sequence[Violation], shown: int = SHOWN) -> List[str]:
    """`Structural diff` lines for the text report (none when the graph did not change)."""
    changes = structural_diff(violations)
    if not changes:
        return []
    width = max(len(c.block) for c in changes[:shown])
    out = ["Structural diff (the model's graph against the reference's)"]
    out += [f"  {c.block:<{width}}  {c.fact}: {c.change}" for c in changes[:shown]]
    if len(changes) > shown:
        out.append(f"  ... {len(changes) - shown} more (--format json lists every change)")
    return out
