"""The static phase in the HTML report: the solver's answers (the report's `static` JSON,
solver.ShapeReport.to_json) and the cost at the real input, checked run against reference.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional

from invariants.app.html.page import esc, paragraph, section, table
from invariants.app.html.traces import Traces
from invariants.templates.base import fmt

PROBE_VERDICT = {True: "accepted", False: "rejected", None: "undecided"}
COST_AT_INPUT = (("static.flops_per_sample", "forward FLOPs per sample"),
                 ("static.activation_bytes_per_sample", "activation memory per sample (bytes)"))
GUARDS_SHOWN = 20


def static_section(static: Optional[Mapping[str, Any]], traces: Traces,
                   structural: Optional[Mapping[str, Any]] = None) -> str:
    """The section: the model graph's changes against the reference's (the report's
    `structural_diff`), output shape proof, accepted input sizes, stage shapes, FLOPs and memory."""
    changes = (structural or {}).get("changes") or []
    rows = [(c["block"], c["fact"], c["change"], c["severity"]) for c in changes]
    graph = [] if not rows else ["<h3>Model graph against the reference's</h3>",
                                 table(["block", "fact", "change", "severity"], rows)]
    if not static:
        return section("Static phase", graph + [paragraph(
            "The static phase did not run: the model was never called with a tensor input, or the report "
            "comes from a check that recorded none.", "note")], "static")
    output = static.get("output") or {}
    parts = graph + [f"<h3>Output shape</h3><p><code>[{esc(', '.join(output.get('shape') or []))}]</code> — "
             f"{esc(output.get('detail') or output.get('batch_polymorphic') or 'unknown')}</p>"]
    label = static.get("label_check")
    if label:
        parts.append(paragraph(f"labels: {label.get('detail') or label.get('status')}"))
    parts += _domain(static.get("domain") or {}, static.get("probes") or [], static.get("input") or [])
    stages = static.get("stages") or []
    if stages:
        parts.append("<h3>Stage shapes</h3>")
        parts.append(table(["module", "output shape (symbolic in the input's sizes)"],
                           [(s["module"], "[" + ", ".join(s["shape"]) + "]") for s in stages]))
    parts += _cost(static.get("cost") or {}, traces)
    notes = list(static.get("notes") or [])
    seconds = static.get("seconds")
    tail = f"analysed in {seconds:.2f} s" if isinstance(seconds, (int, float)) else ""
    parts.append(paragraph("; ".join(notes + [tail] if tail else notes), "note"))
    return section("Static phase", parts, "static")


def _domain(domain: Mapping[str, Any], probes: List[Mapping[str, Any]], names: List[str]) -> List[str]:
    parts = ["<h3>Accepted input sizes</h3>"]
    if names:
        parts.append(paragraph(f"input [{', '.join(names)}]"))
    kind = domain.get("kind")
    if domain.get("side_min") is not None:
        top = domain.get("side_max") or "unbounded"
        parts.append(paragraph(f"accepted {kind or 'size'}: {domain['side_min']}..{top}"))
    elif not kind:
        parts.append(paragraph("no input size symbol (the input's sizes are fixed by the model)", "note"))
    guards = domain.get("guards") or []
    if guards:
        parts.append(table(["guard", "added by"], [(g["expr"], g.get("module") or "model forward")
                                                    for g in guards[:GUARDS_SHOWN]]))
        if len(guards) > GUARDS_SHOWN:
            parts.append(paragraph(f"... {len(guards) - GUARDS_SHOWN} more guards", "note"))
    if probes:
        parts.append(table(["probe", "verdict", "blamed on"],
                           [("x".join(map(str, p["size"])), PROBE_VERDICT.get(p.get("accepted")),
                             ", ".join(p.get("blame") or []) or "-") for p in probes]))
    return parts


def _cost(cost: Mapping[str, Any], traces: Traces) -> List[str]:
    parts = ["<h3>FLOPs and activation memory</h3>"]
    for key, what in (("flops", "FLOPs per step"), ("activation_bytes", "activation bytes per step")):
        if cost.get(key):
            parts.append(f"<p>{esc(what)}: <code>{esc(cost[key])}</code></p>")
    rows = []
    for variable, what in COST_AT_INPUT:
        checked = [v for _, v in traces.checked_points("train", variable)]
        ref = traces.reference_values("train", variable)
        if not (checked or ref):
            continue
        mine = checked[0] if checked else None
        ref_text = "-" if not ref else (fmt(min(ref)) if min(ref) == max(ref) else f"{fmt(min(ref))}..{fmt(max(ref))}")
        ratio = f"{mine / max(ref):.3g}x" if mine is not None and ref and max(ref) > 0 else "-"
        rows.append((what, "-" if mine is None else fmt(mine), ref_text, ratio))
    if rows:
        parts.append(table(["at the real input", "checked run", "reference runs", "checked / reference"], rows,
                           numeric=(1, 2, 3)))
    return parts
