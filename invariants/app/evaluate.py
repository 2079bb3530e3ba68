"""`invar eval`: infer from each case's reference, check every variant, score the results.

A corpus directory holds one folder per case with a `case.yaml` (docs/corpus.md). Nothing
here knows any case: expectations come from each case's metadata. Every checked run is also
checked against the built-in set, the "no reference" column (invariants/app/no_reference.py).
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import io
import multiprocessing
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from invariants.app import no_reference
from invariants.model import SEVERITY_RANK, at_least
from invariants.variables import family_of


@dataclass
class Row:
    """One checked variant."""

    case: str
    variant: str
    kind: str                 # bug | ok | loo (fresh seed) | whole (a whole run, fresh seed)
    expected: List[str]       # expected cause families (bugs)
    expected_severity: str
    detected: bool
    exit_code: int
    root_causes: List[str]    # reported causes at or above the expected severity, "family@locus"
    matched: Optional[bool]   # the expected cause is among them (bugs)
    first_step: Optional[int]
    severity: Optional[str]
    errors: int
    warnings: int
    checked: int
    seconds: float
    note: str = ""
    # a missed bug (detected False) that the report still named, below its expected
    # severity: the cause matched at warning level; warning_causes lists those causes
    warned: bool = False
    warning_causes: List[str] = field(default_factory=list)
    incomplete: bool = False  # the check could not observe some error-level invariants
    # per consequence envelope (template:family), the smallest factor the run could still
    # have moved by before an error (CheckReport.margins)
    margins: Dict[str, float] = field(default_factory=dict)
    # the same run checked against the built-in set: the fields above, as plain data; and
    # whether the bug must be found that way (`expect.universal`, docs/corpus.md)
    no_reference: Optional[Dict[str, Any]] = None
    universal: bool = False
    html: Optional[str] = None  # the check's HTML report (`invar eval --html DIR`)


@dataclass
class EvalReport:
    rows: List[Row] = field(default_factory=list)
    invariants: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # per case: counts, graph capture
    seconds: float = 0.0

    def totals(self) -> Dict[str, Any]:
        bugs = [r for r in self.rows if r.kind == "bug"]
        oks = [r for r in self.rows if r.kind == "ok"]
        loo = [r for r in self.rows if r.kind == "loo"]
        whole = [r for r in self.rows if r.kind == "whole"]
        return {
            "recall": sum(r.detected for r in bugs) / len(bugs) if bugs else 0.0,
            "exact_root_cause": sum(bool(r.matched) for r in bugs) / len(bugs) if bugs else 0.0,
            "false_alarms": sum(1 for r in oks if r.errors),
            "loo_false_alarms": sum(1 for r in loo if r.errors),
            "whole_run_false_alarms": sum(1 for r in whole if r.errors),
            "incomplete_clean_runs": sum(1 for r in oks + loo + whole if r.incomplete),
            "bugs": len(bugs), "ok_variants": len(oks), "loo_runs": len(loo), "whole_runs": len(whole),
            "structural_max_step": max((r.first_step or 0 for r in bugs if r.detected
                                        and r.expected_severity == "error"), default=0),
            "no_reference": no_reference.totals(self.rows),
        }

    def closest(self) -> Dict[str, Dict[str, Tuple[float, str]]]:
        """Per case and consequence envelope: the smallest margin any ok variant or fresh-seed
        reference run kept to its error threshold, and which run it was."""
        out: Dict[str, Dict[str, Tuple[float, str]]] = {}
        for r in self.rows:
            if r.kind == "bug":
                continue
            per_case = out.setdefault(r.case, {})
            for key, m in r.margins.items():
                if key not in per_case or m < per_case[key][0]:
                    per_case[key] = (m, r.variant)
        return out

    def to_json(self) -> Dict[str, Any]:
        closest = {case: {k: {"margin": m, "variant": v} for k, (m, v) in sorted(envs.items())}
                   for case, envs in self.closest().items()}
        return {"totals": self.totals(), "rows": [asdict(r) for r in self.rows],
                "invariants": self.invariants, "closest_margins": closest, "seconds": round(self.seconds, 1)}


def load_cases(corpus_dir: str | os.PathLike) -> List[Path]:
    """Case folders (those with a case.yaml), sorted."""
    from corpus.cases import case_dirs
    root = Path(corpus_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no corpus directory {corpus_dir}")
    cases = case_dirs(root=root)
    if not cases:
        raise FileNotFoundError(f"{corpus_dir} holds no case folder with a case.yaml")
    return cases


def _row_from(case: str, variant: str, kind: str, meta: Dict[str, Any], report: Any, code: int) -> Row:
    escalated_at = {getattr(v, 'id', None): v.step for v in report.violations}
    expect = (meta.get("expect") or {}) if kind == "bug" else {}
    expected = list(expect.get("causes") or [])
    sev = meta.get("severity", "error") if kind == "bug" else "error"
    relevant = [c for c in report.causes if at_least(c.severity, sev)]
    causes = [_cause_name(c) for c in relevant]
    locus = expect.get("locus")

    def is_expected(c: Any) -> bool:
        return c.family in expected or bool(locus and c.locus and locus in c.locus)
    matched = None
    if kind == "bug":
        matched = any(is_expected(c) for c in relevant)
    vs = [v for v in report.violations if at_least(v.severity, sev)]
    detected = bool(vs) if kind == "bug" else bool(report.errors)
    # an escalated warning is an error only from the step its consequence was decided at
    decided = [max(v.step, escalated_at.get(v.escalated_by, v.step)) if getattr(v, "escalated_by", None) else v.step
               for v in vs]
    below = [c for c in report.causes if not at_least(c.severity, sev) and is_expected(c)]
    warned = kind == "bug" and not detected and bool(below)
    return Row(case=case, variant=variant, kind=kind, expected=expected, expected_severity=sev,
               detected=detected, exit_code=code, root_causes=causes, matched=matched,
               first_step=min(decided, default=None),
               severity=max((v.severity for v in vs), key=SEVERITY_RANK.__getitem__, default=None),
               errors=report.errors, warnings=report.warnings, checked=report.invariants_checked,
               seconds=round(report.seconds, 2), note=report.crash or "", warned=warned,
               warning_causes=[_cause_name(c) for c in below] if warned else [],
               incomplete=bool(getattr(report, "incomplete", False)),
               margins=envelope_margins(getattr(report, "margins", {})))


def envelope_margins(margins: Dict[str, float]) -> Dict[str, float]:
    """Invariant id -> margin, as the smallest margin per envelope (`template:family`)."""
    out: Dict[str, float] = {}
    for iid, m in margins.items():
        template, _, rest = iid.partition(":")
        variable, _, phase = rest.rpartition("@")
        key = f"{template}:{family_of(variable.split(',')[0], phase)}"
        out[key] = round(min(m, out.get(key, m)), 4)
    return out


def _exit_code(report: Any) -> int:
    """The exit code `invar check` gives this report (3 crashed, 1 failed, 7 incomplete)."""
    return 3 if report.crash else 1 if report.failed else 7 if report.incomplete else 0


def _cause_name(c: Any) -> str:
    return c.family + (f"@{c.locus}" if c.locus else "")


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """torch intra-op threads for the pipelines run here (0: leave torch's default);
    OMP_NUM_THREADS carries the count to launched ranks. Restored on exit."""
    if not threads:
        yield
        return
    import torch
    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env


def evaluate_case(case_dir: str, runs: int = 3, steps: int = 30, threads: int = 0,
                  html_dir: Optional[str] = None) -> Dict[str, Any]:
    """Infers from the case's reference and checks every variant and a fresh-seed reference,
    with `threads` torch intra-op threads (0: torch's default); each check's HTML report
    into `html_dir`/CASE/ when given."""
    with _torch_threads(threads):
        return _evaluate_case(Path(case_dir), runs, steps, html_dir)


def _html_page(html_dir: str, case: str, variant: str, rep: Any, invs: Any, store: str) -> str:
    """Writes the check's HTML report as the user's `--format html` gets it; its path."""
    from invariants.app.html.check_page import render_check_page
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", variant).strip("_") or "variant"
    path = Path(html_dir) / case / f"{name}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_check_page(rep.to_json(), invs, store), encoding="utf-8")
    return str(path)


def _evaluate_case(case: Path, runs: int, steps: int, html_dir: Optional[str] = None) -> Dict[str, Any]:
    from corpus.cases import load as case_meta
    from invariants.app import workflow
    from invariants.builtin import builtin_set
    meta = case_meta(case)
    ref = meta.get("reference") or {}
    ref_script = str(case / (ref.get("script") or "reference.py"))
    ref_args = [str(a) for a in ref.get("args") or []]
    nproc = int((meta.get("launch") or {}).get("nproc") or 1)  # > 1: one invar per rank (torchrun)
    rows: List[Row] = []
    # The pipelines' own prints would bury the table; their exit status and crashes are kept.
    with tempfile.TemporaryDirectory() as store, contextlib.redirect_stdout(io.StringIO()):
        if nproc > 1:
            from invariants import invfile
            from invariants.app import ranks
            outcome = ranks.infer_launched(ref_script, ref_args, nproc, runs=runs, steps=steps,
                                           store_dir=store, quiet=True)
            invfile.dump(outcome.invariants, Path(store) / "invariants.json")
        else:
            outcome = workflow.infer(ref_script, ref_args, runs=runs, steps=steps, store_dir=store)
        invs = outcome.invariants

        def check(script: str, args: List[str], seed_offset: int = 0, budget: int = steps) -> Any:
            if nproc > 1:
                return ranks.check_launched(script, args, str(Path(store) / "invariants.json"), invs, nproc,
                                            steps=budget, store_dir=store, seed_offset=seed_offset, quiet=True)
            return workflow.check(script, args, invs, steps=budget, store_dir=store, seed_offset=seed_offset)
        counts = {"invariants": len(invs.invariants), "suppressed": outcome.mined.suppressed,
                  "discarded": len(outcome.mined.discarded),
                  "errors": sum(1 for i in invs.invariants if i.severity == "error"),
                  "graph": _graph_coverage(store, outcome.references)}
        def scored(variant: str, kind: str, v: Dict[str, Any], rep: Any) -> Row:
            row = _row_from(case.name, variant, kind, v, rep, _exit_code(rep))
            again = no_reference.replay(rep, builtin_set(), store)  # the same run, no reference
            row.no_reference = asdict(_row_from(case.name, variant, kind, v, again, _exit_code(again)))
            row.universal = bool((v.get("expect") or {}).get("universal"))
            if html_dir:
                row.html = _html_page(html_dir, case.name, variant, rep, invs, store)
            return row
        loo = check(ref_script, ref_args, seed_offset=workflow.FRESH_SEED_OFFSET)
        rows.append(scored("reference (new seed)", "loo", {}, loo))
        # The normal workflow: invariants from short reference runs, a whole run checked.
        whole = check(ref_script, ref_args, seed_offset=workflow.FRESH_SEED_OFFSET, budget=0)
        rows.append(scored("reference, whole run (new seed)", "whole", {}, whole))
        for v in meta.get("variants") or []:
            script = str(case / v["script"])
            args = [str(a) for a in v.get("args") or []]
            rows.append(scored(v["script"], v.get("kind", "bug"), v, check(script, args)))
    return {"rows": [asdict(r) for r in rows], "invariants": counts}


def _graph_coverage(store_dir: str, references: List[Any]) -> str:
    """How the reference's model graph was captured (fx, export, modules) and why not by
    fx: the first reference run's `graph` fact."""
    from invariants.app.store import Store
    with Store(store_dir, create=False) as store:
        for ref in references:
            summary = store.facts(ref.run_id).get("graph") if ref.run_id else None
            if summary:
                return str(summary)
    return "not captured"


def evaluate(corpus_dir: str, jobs: int = 1, runs: int = 3, steps: int = 30,
             progress: Callable[[str], None] = lambda s: None, threads: Optional[int] = None,
             html_dir: Optional[str] = None) -> EvalReport:
    """Evaluates every case, `jobs` cases at a time (one process each), each with `threads`
    torch intra-op threads (None: 1 when jobs > 1 — the cores are shared — else torch's
    default)."""
    if threads is None:
        threads = 1 if jobs > 1 else 0
    start = time.perf_counter()
    cases = load_cases(corpus_dir)
    report = EvalReport()
    results: Dict[str, Dict[str, Any]] = {}
    if jobs <= 1:
        for i, c in enumerate(cases, 1):
            progress(f"[{i}/{len(cases)}] {c.name} ...")
            results[c.name] = evaluate_case(str(c), runs, steps, threads, html_dir)
            progress(f"[{i}/{len(cases)}] {c.name} done")
    else:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(evaluate_case, str(c), runs, steps, threads, html_dir): c for c in cases}
            for i, f in enumerate(cf.as_completed(futures), 1):
                c = futures[f]
                results[c.name] = f.result()
                progress(f"[{i}/{len(cases)}] {c.name} done")
    for c in cases:
        res = results[c.name]
        report.rows += [Row(**r) for r in res["rows"]]
        report.invariants[c.name] = res["invariants"]
    report.seconds = time.perf_counter() - start
    return report


def _short_cause(cause: str) -> str:
    family, _, locus = cause.partition("@")
    loci = [x for x in locus.split(", ") if x]
    if len(loci) > 2:
        locus = ", ".join(loci[:2]) + ", …"
    return f"{family}@{locus}" if locus else family


def render_markdown(report: EvalReport) -> str:
    t = report.totals()
    out = ["| case | variant | expected cause | detected | reported root cause | exact | step | severity | checked | s "
           "| no reference |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report.rows:
        causes = r.root_causes
        if r.kind == "bug":
            exact = "yes" if r.matched else "no"
            det = "yes" if r.detected else "warning only" if r.warned else "**no**"
            if r.warned:  # what the report named, below the expected severity
                causes = [f"{c} (warning)" for c in r.warning_causes]
        else:
            exact = "-"
            det = ("**false alarm**" if r.errors else "**incomplete**" if r.incomplete else "clean") \
                + (f" ({r.warnings} warn.)" if r.warnings else "")
        out.append(f"| {r.case} | {r.variant} | {', '.join(r.expected) or '-'} | {det} | "
                   f"{', '.join(_short_cause(c) for c in causes[:3]) or '-'} | {exact} | "
                   f"{'-' if r.first_step is None else r.first_step} | {r.severity or '-'} | {r.checked} | {r.seconds} "
                   f"| {no_reference.cell(r)} |")
    out.append("")
    out.append(f"Recall {100 * t['recall']:.0f}% ({t['bugs']} bug variants), exact root cause "
               f"{100 * t['exact_root_cause']:.0f}%, error-level false alarms on {t['ok_variants']} ok "
               f"variants: {t['false_alarms']}, on {t['loo_runs']} leave-one-out reference runs: "
               f"{t['loo_false_alarms']}, on {t['whole_runs']} whole runs checked against invariants from "
               f"short reference runs: {t['whole_run_false_alarms']}; incomplete "
               f"checks of clean runs: {t['incomplete_clean_runs']}; "
               f"latest first detection of an error-level bug: step {t['structural_max_step']}. "
               f"Total {report.seconds:.0f} s.")
    out += [""] + no_reference.summary(t["no_reference"])
    out.append("")
    out.append("| case | invariants | error-level | suppressed (implied) | discarded candidates | graph |")
    out.append("|---|---|---|---|---|---|")
    for case, c in report.invariants.items():
        out.append(f"| {case} | {c['invariants']} | {c['errors']} | {c['suppressed']} | {c['discarded']} | "
                   f"{c.get('graph', '-')} |")
    closest = report.closest()
    if any(closest.values()):
        out += ["", "Consequence envelopes: the smallest margin a valid run (ok variant or fresh seed) kept to "
                    "the error threshold (x2: it could have moved twice as far before an error).", "",
                "| case | envelope | smallest margin | run |", "|---|---|---|---|"]
        for case, envs in closest.items():
            for key, (m, variant) in sorted(envs.items(), key=lambda kv: kv[1][0]):
                out.append(f"| {case} | {key} | x{m:.3g} | {variant} |")
    return "\n".join(out) + "\n"
