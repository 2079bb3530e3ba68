"""Render an invariant set as a Markdown review document (`invar export -o review.md`):
a summary, then one section per block (locus) and one table per template family, so a
reviewer reads all facts about `layer2` together and can accept or disable them.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List, Mapping, Optional

from invariants import registry
from invariants.model import Invariant, InvariantSet, SEVERITIES, STATUSES
from invariants.templates.base import fmt

WHOLE_RUN = "whole run"


def _cell(text: Any) -> str:
    # Table cells: a pipe would end the cell, a newline the row.
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _show(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return fmt(v)


def expect_text(inv: Invariant) -> str:
    """The expectation as a reviewer reads it (`in [0.1, 0.5]`), via the template."""
    try:
        return registry.template(inv.template).expected(inv.expect)
    except (KeyError, AttributeError, TypeError, ValueError):
        # Unknown or unusual template: show the raw parameters rather than nothing.
        return ", ".join(f"{k}={_show(v)}" for k, v in inv.expect.items()) or "-"


def support_text(inv: Invariant) -> str:
    """`3 runs, 90 obs, span [0.1, 0.5]`."""
    s = inv.support
    text = f"{s.runs} runs, {s.observations} obs"
    if s.span is not None:
        text += f", span {_show(s.span)}"
    return text


def _when_text(inv: Invariant) -> str:
    lo, hi = inv.when.steps
    if (lo, hi) == (0, None):
        return inv.when.phase
    return f"{inv.when.phase}, steps {lo}-{'end' if hi is None else hi}"


def _summary(s: InvariantSet) -> List[str]:
    invs = s.invariants
    status = Counter(i.status for i in invs)
    out = [f"{len(invs)} invariants: "
           + ", ".join(f"{status[k]} {k}" for k in STATUSES if status[k]) if invs else "No invariants."]
    if not invs:
        return out
    severities = list(SEVERITIES) + sorted({i.severity for i in invs} - set(SEVERITIES))
    by = Counter((i.template, i.severity) for i in invs)
    out += ["", "| template | " + " | ".join(severities) + " | total |",
            "|---|" + "---:|" * (len(severities) + 1)]
    for t in sorted({i.template for i in invs}):
        counts = [by[(t, sev)] for sev in severities]
        out.append(f"| {_cell(t)} | " + " | ".join(str(c) for c in counts) + f" | {sum(counts)} |")
    totals = [sum(by[(t, sev)] for t in {i.template for i in invs}) for sev in severities]
    out.append("| **all** | " + " | ".join(str(c) for c in totals) + f" | {len(invs)} |")
    return out


def _meta_lines(meta: Mapping[str, Any]) -> List[str]:
    shown = []
    for key in ("script", "args", "runs", "steps", "created", "torch", "invar"):
        if key in meta and meta[key] not in (None, "", [], ()):
            v = meta[key]
            v = " ".join(map(str, v)) if isinstance(v, (list, tuple)) else v
            shown.append(f"{key}: `{_cell(v)}`")
    return ["Reference: " + ", ".join(shown)] if shown else []


def _blocks(s: InvariantSet) -> Dict[Optional[str], Dict[str, List[Invariant]]]:
    # Whole-run facts first, then blocks in name order; families and ids sorted within.
    out: Dict[Optional[str], Dict[str, List[Invariant]]] = {}
    for inv in sorted(s.invariants, key=lambda i: (i.locus is not None, i.locus or "", i.template, i.id)):
        out.setdefault(inv.locus, {}).setdefault(inv.template, []).append(inv)
    return out


def render_markdown(s: InvariantSet, title: Optional[str] = None) -> str:
    """A Markdown review document: summary counts by template and severity, then each
    block (locus; "whole run" for none) with one table per template family, one row per
    invariant: id, statement, expectation, when, severity, status, support."""
    script = s.meta.get("script")
    lines = [f"# {title or ('Invariants for `' + _cell(script) + '`' if script else 'Invariants')}", ""]
    lines += _meta_lines(s.meta)
    lines += ["", "## Summary", ""] + _summary(s)
    if any(i.status == "proposed" for i in s.invariants):
        lines += ["", "Review each row: set `status: accepted` to keep it, `status: disabled` to skip "
                      "it, or edit `expect` in the invariant file to change a bound."]
    for locus, families in _blocks(s).items():
        name = WHOLE_RUN if locus is None else f"block `{_cell(locus)}`"
        n = sum(len(v) for v in families.values())
        lines += ["", f"## {name[0].upper() + name[1:]} ({n})"]
        for template, invs in families.items():
            lines += ["", f"### {template} ({len(invs)})", "",
                      "| id | statement | expect | when | severity | status | support |",
                      "|---|---|---|---|---|---|---|"]
            for inv in invs:
                cells = [f"`{inv.id}`", inv.why or "-", expect_text(inv), _when_text(inv),
                         inv.severity, inv.status, support_text(inv)]
                lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
