"""A check's report as one self-contained HTML page (`invar check --format html`,
`invar report`): the verdict and root causes first, then a plot per violated invariant, the
per-block panel, the loss and learning-rate curves, the static phase, and what was not
checked.

Rendered from the report's JSON (CheckReport.to_json), so that a stored or saved report
renders exactly like a fresh one; the invariant set supplies the bounds, the store the
per-step curves, and either may be missing (the page then says what it could not draw).
"""
from __future__ import annotations

import itertools
import time
from collections import Counter
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from invariants.app.html import evidence, figures
from invariants.app.html.page import bullet_list, collapsed, document, esc, figure, footer, paragraph, section, table
from invariants.app.html.static_section import static_section
from invariants.app.html.traces import Traces, load_traces
from invariants.coverage import REASONS
from invariants.model import SEVERITIES, STATUSES, Invariant, InvariantSet

VERDICT_CLASS = {"ok": "v-ok", "FAILED": "v-failed", "INCOMPLETE": "v-incomplete", "CRASHED": "v-crashed"}
CONTENTS = ('<nav class="note">' + " · ".join(
    f'<a href="#{anchor}">{title}</a>' for anchor, title in (
        ("causes", "Root causes"), ("violations", "Violated invariants"), ("blocks", "Blocks"),
        ("curves", "Loss and learning rate"), ("static", "Static phase"), ("coverage", "Coverage"))) + "</nav>")
MAX_PANELS = 24        # violated invariants plotted over the whole page; the rest are listed
PANELS_PER_CAUSE = 9   # ... and per root cause, so that one cause cannot crowd out the others
EVIDENCE_SHOWN = 12    # evidence rows shown before the rest fold away


def render_check_page(doc: Mapping[str, Any], invariants: Optional[InvariantSet], store_dir: Optional[str],
                      notes: Sequence[str] = ()) -> str:
    """The HTML page of a check report (`doc`: CheckReport.to_json()); `notes` are shown in the
    footer (e.g. why the invariant set could not be loaded)."""
    started = time.perf_counter()
    summary = doc.get("summary") or {}
    run_ids = list(invariants.meta.get("run_ids") or []) if invariants is not None else []
    traces = load_traces(store_dir, summary.get("run_id"), run_ids)
    ids = (f"f{i}" for i in itertools.count())
    by_id = invariants.by_id() if invariants is not None else {}
    body = [_header(doc), CONTENTS, _causes_section(doc), _violations_section(doc, by_id, traces, ids),
            _blocks_section(doc, traces, ids), _curves_section(traces, ids),
            static_section(doc.get("static"), traces, doc.get("structural_diff")), _coverage_section(doc, invariants)]
    if invariants is None:
        notes = list(notes) + ["without the invariant set, plots show no bound"]
    sources = f"reference runs plotted: {len(traces.references)} of {len(run_ids)}; store: {store_dir or 'none'}"
    body.append(footer([f"rendered in {time.perf_counter() - started:.2f} s; {sources}", *traces.notes, *notes]))
    return document(f"invar check: {doc.get('script', '')} — {_verdict_word(summary)}", body)


def _verdict_word(summary: Mapping[str, Any]) -> str:
    verdict = summary.get("verdict", "?")
    return "clean" if verdict == "ok" else verdict


def _header(doc: Mapping[str, Any]) -> str:
    s = doc.get("summary") or {}
    learned = f" (learned from {s['reference']})" if s.get("reference") else ""
    sub = (f"against {doc.get('against', '?')}{learned} · run {s.get('run_id') or '-'} · {s.get('steps', 0)} "
           f"optimizer steps ({s.get('run_status', '?')}) · {s.get('invariants_checked', 0)} of "
           f"{s.get('invariants_total', 0)} invariants checked ({s.get('invariants_disabled', 0)} disabled) · "
           f"{s.get('seconds', 0)} s")
    verdict = s.get("verdict", "?")
    counts = f"{s.get('errors', 0)} error(s), {s.get('warnings', 0)} warning(s)"
    lines = [f"the pipeline crashed: {s['crash']}" if s.get("crash") else "", s.get("failure") or "",
             f"warning: {s['coverage_warning']}" if s.get("coverage_warning") else ""]
    if verdict == "INCOMPLETE":
        lines.append("no violation, but error-level invariants could not be observed (see below)")
    extra = "".join(f"<div>{esc(line)}</div>" for line in lines if line)
    return (f"<h1>invar check: <code>{esc(doc.get('script', ''))}</code></h1>\n<p class=\"sub\">{esc(sub)}</p>\n"
            f'<div class="verdict {VERDICT_CLASS.get(verdict, "v-failed")}" id="verdict"><b>{esc(_verdict_word(s))}'
            f"</b>{esc(counts)}{extra}</div>")


def _violations_of(doc: Mapping[str, Any]) -> Dict[str, Mapping[str, Any]]:
    return {v["id"]: v for v in doc.get("violations") or []}


def _causes_section(doc: Mapping[str, Any]) -> str:
    causes, by_id = doc.get("causes") or [], _violations_of(doc)
    parts = []
    for i, c in enumerate(causes, 1):
        vs = [by_id[x] for x in c.get("violations") or [] if x in by_id]
        own = [v for v in vs if v.get("family") == c["family"]] or vs
        step = min((v["step"] for v in own), default=None)
        families = sorted({v.get("family", "?") for v in vs})
        where = f" @ {c['locus']}" if c.get("locus") else ""
        found = f"found at step {step}" if step is not None else ""
        explains = f"explains {len(vs)} violations: {', '.join(families)}" if len(vs) > 1 else ""
        meta = " · ".join(x for x in (found, explains) if x)
        parts.append(f'<div class="cause {esc(c.get("severity", "error"))}" id="cause-{i}">'
                     f'<div class="title">{i}. [{esc(c.get("severity"))}] {esc(c["family"])}{esc(where)}</div>'
                     f'<div class="cause-text">{esc(c.get("summary", ""))}</div>'
                     f'<div class="fix"><b>fix:</b> {esc(c.get("hint", ""))}</div>'
                     f'<div class="meta">{esc(meta)}</div></div>')
    unobserved = doc.get("unobserved") or []
    for u in unobserved:
        loci = f" @ {', '.join(u['loci'][:6])}" if u.get("loci") else ""
        parts.append(f'<div class="cause unobserved"><div class="title">[not observed] {esc(u["family"])}'
                     f'{esc(loci)}</div><div class="cause-text">{esc(u.get("summary", ""))}</div></div>')
    if unobserved:  # one hint for all: it is the same for every group
        parts.append(f'<p class="note"><b>not observed — why and what to do:</b> {esc(unobserved[0].get("hint", ""))}'
                     f"</p>")
    if not parts:
        summary = doc.get("summary") or {}
        word = "clean: no invariant violated" if summary.get("verdict") == "ok" else "no root cause reported"
        parts.append(paragraph(word))
    return section("Root causes", parts, "causes")


def _violations_section(doc: Mapping[str, Any], invs: Mapping[str, Invariant], traces: Traces,
                        ids: Iterator[str]) -> str:
    by_id = _violations_of(doc)
    if not by_id:
        return section("Violated invariants", [paragraph("none", "note")], "violations")
    groups = [(f"{i}. {c['family']}", [by_id[x] for x in c.get("violations") or [] if x in by_id])
              for i, c in enumerate(doc.get("causes") or [], 1)]
    grouped = {v["id"] for _, vs in groups for v in vs}
    rest = [v for x, v in by_id.items() if x not in grouped]
    if rest:
        groups.append(("other violations", rest))
    budget, parts = MAX_PANELS, []
    for title, vs in groups:
        html, plotted = _cause_evidence(title, _plot_order(vs), invs, traces, ids, min(PANELS_PER_CAUSE, budget))
        parts += html
        budget -= plotted
    return section("Violated invariants", parts, "violations")


def _plot_order(vs: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    """A cause's violations in the order they are plotted: one of each (family, template)
    first, earliest first, then the second of each, ...: a frozen model's plots show its
    flat loss and missing gradients, not only nine frozen fractions."""
    groups: Dict[Tuple[str, str], List[Mapping[str, Any]]] = {}
    for v in sorted(vs, key=lambda v: (v["step"], v["id"])):
        groups.setdefault((v.get("family", ""), v.get("template", "")), []).append(v)
    rounds = itertools.zip_longest(*groups.values())
    return [v for round_ in rounds for v in round_ if v is not None]


def _cause_evidence(title: str, vs: Sequence[Mapping[str, Any]], invs: Mapping[str, Invariant], traces: Traces,
                    ids: Iterator[str], cap: int) -> Tuple[List[str], int]:
    """One cause's plots (at most `cap`), the texts of its non-numeric variables, and its
    evidence table; and how many panels it plotted."""
    by_variable: Dict[Tuple[str, Tuple[str, ...]], List[Mapping[str, Any]]] = {}
    for v in vs:  # one panel per variable: its range and magnitude violations share it
        by_variable.setdefault((v["phase"], tuple(v["target"])), []).append(v)
    panels, texts, unplotted = [], [], 0
    for group in by_variable.values():
        if len(panels) >= cap:
            unplotted += len(group)
            continue
        panel = evidence.violation_panel(group, invs, traces)
        if panel is None:
            texts.append(evidence.text_evidence(group[0], traces))
        else:
            panels.append(panel)
    parts = [f"<h3>{esc(title)} — {len(vs)} violation(s)</h3>"]
    if panels:
        svg = figures.to_svg(figures.panels_figure(panels), next(ids))
        parts.append(figure(svg, "blue: the checked run; band: the reference runs' range per step; dashed: the "
                                 "invariant's bound; dotted red line and ×: the first violating step"))
    if unplotted:
        parts.append(paragraph(f"{unplotted} more violation(s) of this cause are listed below, not plotted", "note"))
    if texts:
        parts.append(table(["variable", "phase", "reference runs recorded", "checked run recorded", "expected"],
                           [(t.violation["target"][0], t.violation["phase"], ", ".join(t.reference) or "-",
                             ", ".join(t.checked) or t.violation["observed"], t.violation["expected"])
                            for t in texts]))
    parts.append(_evidence_table(sorted(vs, key=lambda v: (v["step"], v["id"]))))
    return parts, len(panels)


def _evidence_table(vs: Sequence[Mapping[str, Any]]) -> str:
    rows = [(v["step"], v["phase"], v["severity"], " vs ".join(v["target"]), v["observed"], v["expected"],
             v.get("count", 1), v["id"]) for v in vs]
    header = ["step", "phase", "severity", "variable", "observed", "expected", "times", "invariant"]
    shown = table(header, rows[:EVIDENCE_SHOWN], numeric=(0, 6))
    if len(rows) <= EVIDENCE_SHOWN:
        return shown
    return shown + collapsed(f"{len(rows) - EVIDENCE_SHOWN} more", [table(header, rows[EVIDENCE_SHOWN:], (0, 6))])


def _blocks_section(doc: Mapping[str, Any], traces: Traces, ids: Iterator[str]) -> str:
    flagged = {v["locus"] for v in doc.get("violations") or [] if v.get("locus")}
    rows = evidence.block_rows(traces, sorted(flagged))
    if not rows:
        return section("Blocks", [paragraph("No per-block statistics to plot: the store holds neither the checked "
                                            "run nor the reference runs.", "note")], "blocks")
    svg = figures.to_svg(figures.blocks_figure(rows, evidence.BLOCK_STATS), next(ids))
    caption = (f"{len(rows)} blocks, training steps. Bar: the reference runs' range; dot: the checked run's median "
               f"(red: outside the reference range); ×: not observed in the checked run; red names: blocks a "
               f"violation names.")
    return section("Blocks", [figure(svg, caption, tall=len(rows) > figures.BLOCKS_IN_VIEW)], "blocks")


def _curves_section(traces: Traces, ids: Iterator[str]) -> str:
    panels = evidence.curve_panels(traces)
    if not panels:
        return section("Loss and learning rate", [paragraph("No loss or learning rate recorded in the store's runs.",
                                                            "note")], "curves")
    svg = figures.to_svg(figures.panels_figure(panels, columns=len(panels)), next(ids))
    return section("Loss and learning rate", [figure(svg, "checked run against the reference runs' range per step")],
                   "curves")


def _coverage_section(doc: Mapping[str, Any], invariants: Optional[InvariantSet]) -> str:
    s = doc.get("summary") or {}
    unchecked = doc.get("unchecked") or []
    parts = ["<h3>Not checked</h3>"]
    if unchecked:
        counts = Counter(u["reason"] for u in unchecked)
        parts.append(paragraph(f"{len(unchecked)} invariant(s) not checked: " + ", ".join(
            f"{counts[k]} {text}" for k, text in REASONS.items() if counts[k])))
        rows = [(u["severity"], u["id"], REASONS.get(u["reason"], u["reason"]), u["detail"])
                for u in sorted(unchecked, key=lambda u: (u["severity"] != "error", u["id"]))]
        header = ["severity", "invariant", "reason", "detail"]
        parts.append(table(header, rows) if len(rows) <= 20 else collapsed(f"all {len(rows)}", [table(header, rows)]))
    else:
        parts.append(paragraph("every active invariant was checked"))
    margins = doc.get("margins") or {}
    if margins:
        parts.append("<h3>Closest calls</h3>")
        parts.append(paragraph("consequence envelopes that held, and the factor the run could still have moved by "
                               "before an error", "note"))
        parts.append(table(["invariant", "margin (x)"], sorted(margins.items(), key=lambda kv: kv[1]), numeric=(1,)))
    parts.append("<h3>Review status of the invariant file</h3>")
    if invariants is not None:
        by = Counter((i.status, i.severity) for i in invariants.invariants)
        parts.append(table(["status"] + list(SEVERITIES) + ["total"],
                           [(st, *(by[(st, sev)] for sev in SEVERITIES), sum(by[(st, sev)] for sev in SEVERITIES))
                            for st in STATUSES], numeric=(1, 2, 3)))
    else:
        parts.append(paragraph(f"the invariant set ({doc.get('against', '?')}) could not be loaded", "note"))
    notes = [n for n in doc.get("notes") or [] if not n.startswith("static:")]
    if notes:
        parts += ["<h3>Notes</h3>", bullet_list(notes)]
    if s.get("allow_unchecked"):
        parts.append(paragraph("--allow-unchecked: unobserved error-level invariants were accepted", "note"))
    return section("Coverage", parts, "coverage")
