"""The review document as HTML (`invar export --format html`): what review.md says (summary,
then each block with one table per template), and per block the reference runs' envelope
of each variable its invariants are about, with their bounds.

Without the reference runs in the store the plots fall back to the span each invariant was
fitted on, and the page says so.
"""
from __future__ import annotations

import itertools
from collections import Counter
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from invariants.app.html import figures
from invariants.app.html.bounds import Bound, Context, bounds, numeric_span
from invariants.app.html.evidence import BLOCK_STATS, SPAN_ON_VALUE_SCALE
from invariants.app.html.page import document, esc, figure, footer, paragraph, section, table
from invariants.app.html.traces import Traces, load_traces
from invariants.model import SEVERITIES, STATUSES, Invariant, InvariantSet
from invariants.review import WHOLE_RUN, expect_text, support_text

PANELS_PER_BLOCK = 8   # varying variables plotted per block: the rest are in the tables
BLOCKS_PLOTTED_PER_STEP = 24  # more blocks, and only the overview plots them (a figure each would cost minutes)
PANELS_WHOLE_RUN = 16  # ... and for the whole run, which has many more
META_SHOWN = ("script", "args", "runs", "steps", "created", "torch", "invar")


def render_review_page(invariants: InvariantSet, store_dir: Optional[str]) -> str:
    """The review page of an invariant set; reference envelopes come from the store's runs."""
    traces = load_traces(store_dir, None, list(invariants.meta.get("run_ids") or []))
    ids = (f"r{i}" for i in itertools.count())
    script = invariants.meta.get("script")
    body = [f"<h1>Invariants for <code>{esc(script)}</code></h1>" if script else "<h1>Invariants</h1>",
            _meta(invariants), _summary(invariants)]
    groups = _by_block(invariants.invariants)
    blocks = [locus for locus, _ in groups if locus is not None]
    body.append(_overview(invariants, traces, blocks, ids))
    step_plots = len(blocks) <= BLOCKS_PLOTTED_PER_STEP
    for locus, invs in groups:
        body.append(_block_section(locus, invs, traces, ids, plots=step_plots or locus is None))
    plotted = f"reference runs plotted: {len(traces.references)} of {len(invariants.meta.get('run_ids') or [])}"
    body.append(footer([f"{plotted}; store: {store_dir or 'none'}", *traces.notes]))
    return document(f"invar review: {script or 'invariants'}", body)


def _meta(invariants: InvariantSet) -> str:
    shown = []
    for key in META_SHOWN:
        v = invariants.meta.get(key)
        if v not in (None, "", [], ()):
            shown.append(f"{key}: {' '.join(map(str, v)) if isinstance(v, (list, tuple)) else v}")
    return paragraph("Reference: " + ", ".join(shown), "sub") if shown else ""


def _summary(invariants: InvariantSet) -> str:
    invs = invariants.invariants
    if not invs:
        return section("Summary", [paragraph("No invariants.")], "summary")
    status = Counter(i.status for i in invs)
    by = Counter((i.template, i.severity) for i in invs)
    templates = sorted({i.template for i in invs})
    rows = [(t, *(by[(t, sev)] for sev in SEVERITIES), sum(by[(t, sev)] for sev in SEVERITIES)) for t in templates]
    rows.append(("all", *(sum(by[(t, sev)] for t in templates) for sev in SEVERITIES), len(invs)))
    parts = [paragraph(f"{len(invs)} invariants: " + ", ".join(f"{status[k]} {k}" for k in STATUSES if status[k])),
             table(["template", *SEVERITIES, "total"], rows, numeric=(1, 2, 3))]
    if status["proposed"]:
        parts.append(paragraph("Review each row: set status: accepted to keep it, status: disabled to skip it, or "
                               "edit expect in the invariant file to change a bound.", "note"))
    return section("Summary", parts, "summary")


def _by_block(invs: Sequence[Invariant]) -> List[Tuple[Optional[str], List[Invariant]]]:
    """Whole-run facts first, then blocks by name; within, by template and id."""
    ordered = sorted(invs, key=lambda i: (i.locus is not None, i.locus or "", i.template, i.id))
    return [(locus, list(group)) for locus, group in itertools.groupby(ordered, key=lambda i: i.locus)]


def _overview(invariants: InvariantSet, traces: Traces, blocks: List[str], ids: Iterator[str]) -> str:
    """Every block in one figure: per statistic, the reference runs' range and the bounds."""
    rows = []
    for name in blocks:
        row = figures.BlockRow(name, {})
        for stat, _ in BLOCK_STATS:
            variable = f"block.{name}.{stat}"
            ref = traces.reference_values("train", variable)
            on_it = [i for i in invariants.invariants if i.target[0] == variable and i.when.phase in ("train", "any")]
            spans = [numeric_span(i.support.span) for i in on_it if i.template in SPAN_ON_VALUE_SCALE]
            span = (min(ref), max(ref)) if ref else max((x for x in spans if x), key=lambda x: x[1] - x[0],
                                                        default=None)
            if span is not None:
                row.reference[stat] = span
            limits = [_limits(i) for i in on_it if i.template in SPAN_ON_VALUE_SCALE - {"level"}]
            limits = [x for x in limits if x is not None]
            if limits:  # every invariant must hold: the tightest of their bounds
                row.bounds[stat] = (max(lo for lo, _ in limits), min(hi for _, hi in limits))
        if row.reference:
            rows.append(row)
    if not rows:
        return ""
    svg = figures.to_svg(figures.blocks_figure(rows, BLOCK_STATS), next(ids))
    step = ("" if len(blocks) <= BLOCKS_PLOTTED_PER_STEP else
            f" With {len(blocks)} blocks, per-step envelopes are plotted for the whole run only.")
    caption = (f"{len(rows)} blocks. Bar: the reference runs' range over all steps (without them: the span the "
               f"invariants were fitted on); red ticks: the invariants' bounds.{step}")
    return section("Blocks at a glance", [figure(svg, caption, tall=len(rows) > figures.BLOCKS_IN_VIEW)], "blocks")


def _limits(inv: Invariant) -> Optional[Tuple[float, float]]:
    """The lowest and highest value an invariant's constant bound lines allow (None: none)."""
    values = [b.value for b in bounds(inv.template, inv.expect, Context([])) or [] if b.value is not None]
    return (min(values), max(values)) if values else None


def _block_section(locus: Optional[str], invs: List[Invariant], traces: Traces, ids: Iterator[str],
                   plots: bool = True) -> str:
    title = WHOLE_RUN if locus is None else f"block {locus}"
    parts = []
    panels = _panels(invs, traces) if plots else []
    if panels:
        shown = panels[:PANELS_WHOLE_RUN if locus is None else PANELS_PER_BLOCK]
        svg = figures.to_svg(figures.panels_figure(shown, columns=4 if len(shown) > 6 else 3), next(ids))
        more = f"; {len(panels) - len(shown)} more varying variables" if len(panels) > len(shown) else ""
        parts.append(figure(svg, "band: the reference runs' range per step (or, without them, the span the "
                                 "invariant was fitted on); dashed: the invariants' bounds; variables that "
                                 "never varied are in the tables only" + more))
    for template, group in itertools.groupby(invs, key=lambda i: i.template):
        group = list(group)
        parts.append(f"<h3>{esc(template)} ({len(group)})</h3>")
        parts.append(table(["id", "statement", "expect", "when", "severity", "status", "support"],
                           [(i.id, i.why or "-", expect_text(i), _when(i), i.severity, i.status, support_text(i))
                            for i in group]))
    anchor = "whole-run" if locus is None else f"block-{locus}"
    return section(f"{title[0].upper()}{title[1:]} ({len(invs)})", parts, anchor)


def _when(inv: Invariant) -> str:
    lo, hi = inv.when.steps
    return inv.when.phase if (lo, hi) == (0, None) else f"{inv.when.phase}, steps {lo}-{'end' if hi is None else hi}"


def _panels(invs: List[Invariant], traces: Traces) -> List[figures.Panel]:
    """One panel per (phase, variable) whose reference values varied, with the bounds of
    every invariant on it (the relative ones need a checked run and draw none); the most
    observed first. A variable that never varied (a fraction always 1) is its table row."""
    by_key: Dict[Tuple[str, str], List[Invariant]] = {}
    for inv in invs:
        phase = "train" if inv.when.phase == "any" else inv.when.phase
        by_key.setdefault((phase, inv.target[0]), []).append(inv)
    out = []
    for (phase, variable), group in by_key.items():
        envelope = traces.envelope(phase, variable)
        spans = [s for s in (numeric_span(i.support.span) for i in group if i.template in SPAN_ON_VALUE_SCALE) if s]
        # the widest: a level's span is of window means, a range's of every value
        span = max(spans, key=lambda s: s[1] - s[0], default=None) if envelope is None else None
        lo, hi = envelope.span() if envelope is not None else span or (0.0, 0.0)
        if lo == hi:
            continue
        lines: List[Bound] = []
        for inv in group:
            found = bounds(inv.template, inv.expect, Context([], (), tuple(inv.when.steps))) or []
            lines += [Bound(f"{inv.template}: {b.label}", b.value, b.points) for b in found]
        out.append(figures.Panel(title=f"{variable} ({phase})", envelope=envelope, span=span, bounds=lines))
    return sorted(out, key=lambda p: -(len(p.envelope.steps) if p.envelope else 0))
