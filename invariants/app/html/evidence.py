"""What the report plots, as data: a panel per violated invariant, the per-block rows, and
the loss and learning-rate curves, from the report's violations, the invariants and the
runs' traces. No drawing here (figures.py draws); no HTML (check_page.py lays out).
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from invariants.app.html.bounds import Bound, Context, bounds, numeric_span, windowed_note
from invariants.app.html.figures import BlockRow, Panel
from invariants.app.html.traces import Traces
from invariants.model import Invariant
from invariants.variables import block_of

_LEADING_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?(?=\s|$)", re.I)
# Templates whose support span is on the variable's own scale (others fit a ratio or a change).
SPAN_ON_VALUE_SCALE = {"range", "magnitude", "level", "all_none", "constant", "one_of", "disjoint", "schedule",
                       "ceiling"}
BLOCK_STATS = (("trainable_fraction", "trainable fraction"), ("in_optimizer_fraction", "in the optimizer (fraction)"),
               ("grad_norm", "gradient norm"), ("update_ratio", "update ratio |Δw|/|w|"))
CURVES = (("train", "loss.value", "loss (train)"), ("eval", "loss.value", "loss (eval)"),
          ("train", "optim.lr_max", "learning rate (largest over groups)"))


@dataclass
class TextEvidence:
    """A violated invariant over a variable with no numbers to plot (a shape, a type name)."""

    violation: Mapping[str, Any]
    reference: List[str]
    checked: List[str]


def violation_panel(vs: Sequence[Mapping[str, Any]], invs: Mapping[str, Invariant], traces: Traces) -> Optional[Panel]:
    """One panel for the violated invariants over one variable and phase (a range and a
    magnitude on the same variable share it, each drawing its bound), or None when nothing
    about them is numeric. The first violation gives the title, step window and mark."""
    v = vs[0]
    variable, phase = v["target"][0], v["phase"]
    checked = traces.checked_points(phase, variable)
    envelope = traces.envelope(phase, variable)
    span, lines, notes, window = None, [], [], (0, None)
    known = [inv for inv in (invariant_of(x["id"], invs) for x in vs) if inv is not None]
    for inv in known:
        window = tuple(known[0].when.steps)
        if envelope is None and span is None and inv.template in SPAN_ON_VALUE_SCALE:
            span = numeric_span(inv.support.span)
        second = traces.checked_points(phase, inv.target[1]) if len(inv.target) > 1 else []
        found = bounds(inv.template, inv.expect, Context(checked, second, window))
        prefix = f"{inv.template}: " if len(known) > 1 else ""
        lines += [Bound(prefix + b.label, b.value, b.points) for b in found or []]
        notes.append("no bound drawn for this template" if found is None else windowed_note(inv.template))
    value = None if checked else leading_number(str(v.get("observed", "")))
    if not (checked or envelope or span or lines or value is not None):
        return None
    title = f"{variable} ({phase})"
    if len(v["target"]) > 1:
        title += f" vs {v['target'][1]}"
    raw = traces.checked.raw(phase, variable) if traces.checked else []
    return Panel(title=title, checked=checked, raw=raw, envelope=envelope, span=span, bounds=lines,
                 window=window, mark=min(int(x["step"]) for x in vs), mark_value=value,
                 note="; ".join(dict.fromkeys(n for n in notes if n)))


def invariant_of(violation_id: str, invs: Mapping[str, Invariant]) -> Optional[Invariant]:
    """The invariant a violation is of: by its id, or for an instance of an invariant that
    quantifies over variables (`ID[layer2.0]`, invariants/check.py) by the entry's id."""
    if violation_id in invs:
        return invs[violation_id]
    entry, bracket, _ = violation_id.partition("[")
    return invs.get(entry) if bracket and violation_id.endswith("]") else None


def leading_number(observed: str) -> Optional[float]:
    """The number a violation's `observed` text starts with (`4.7 (1.8x the reference ...)`),
    which for every template is the first target's value; None when it starts otherwise."""
    m = _LEADING_NUMBER.match(observed)
    try:
        return float(m.group(0)) if m else None
    except ValueError:
        return None


def text_evidence(v: Mapping[str, Any], traces: Traces) -> TextEvidence:
    """The reference runs' and the checked run's recorded texts for a violated variable."""
    key = (v["phase"], v["target"][0])
    ref = sorted({t for r in traces.references for ts in r.texts.get(key, {}).values() for t in ts})
    checked = sorted({t for ts in (traces.checked.texts.get(key, {}) if traces.checked else {}).values() for t in ts})
    return TextEvidence(v, ref, checked)


def block_rows(traces: Traces, flagged: Sequence[str]) -> List[BlockRow]:
    """One row per block the runs recorded, in the order the reference recorded them."""
    names: Dict[str, None] = {}
    for run in traces.references + ([traces.checked] if traces.checked else []):
        for variable in run.variables():
            if variable.startswith("block.") and variable.rsplit(".", 1)[-1] in dict(BLOCK_STATS):
                names.setdefault(block_of(variable) or "", None)
    rows = []
    for name in names:
        reference: Dict[str, Tuple[float, float]] = {}
        checked: Dict[str, Optional[float]] = {}
        for stat, _ in BLOCK_STATS:
            variable = f"block.{name}.{stat}"
            ref = traces.reference_values("train", variable)
            if ref:
                reference[stat] = (min(ref), max(ref))
            mine = [v for _, v in traces.checked.raw("train", variable)] if traces.checked else []
            checked[stat] = statistics.median(mine) if mine else None
        rows.append(BlockRow(name, reference, checked, flagged=name in flagged))
    return rows


def curve_panels(traces: Traces) -> List[Panel]:
    """Loss (train, and eval where recorded) and learning rate: the checked run against the
    reference runs' envelope."""
    out = []
    for phase, variable, title in CURVES:
        checked, envelope = traces.checked_points(phase, variable), traces.envelope(phase, variable)
        if checked or envelope:
            raw = traces.checked.raw(phase, variable) if traces.checked else []
            out.append(Panel(title=title, checked=checked, raw=raw, envelope=envelope))
    return out
