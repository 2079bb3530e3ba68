"""The "no reference" column of `invar eval`: every checked run checked a second time, against
the built-in invariant set (invariants/builtin.py), from the observations it stored — no
second run of the script.

A bug is *universal* when its case says so (`expect.universal`, docs/corpus.md): it breaks
a fact that holds for virtually every correct pipeline and must be found without a
reference; the others (a learning rate, a batch size, a scale drifting from a previous run)
need one.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Dict, List, Sequence, Tuple

from invariants import builtin
from invariants.allow import Allow
from invariants.model import InvariantSet


def replay(report: Any, invariants: InvariantSet, store_dir: str, rules: Sequence[Allow] = ()) -> Any:
    """The report of the runs behind `report` (its run ids: one per rank) checked against
    `invariants` from the store, step by step as they flushed; violations of the same
    invariant on several ranks are reported once, at the earliest step."""
    from invariants.app.store import Store
    from invariants.app.workflow import with_coverage
    from invariants.check import Checker
    from invariants.explain import explain
    merged: Dict[str, Any] = {}
    checked: set = set()
    seen: Dict[Tuple[str, str], Tuple[int, int]] = {}
    with Store(store_dir, create=False) as store:
        for run_id in filter(None, (report.run_id or "").split(",")):
            checker = Checker(invariants)
            for _, rows in itertools.groupby(store.observations(run_id), key=lambda r: r.step):
                checker.feed(list(rows))
            checker.finish()
            checked |= checker.checked
            for v in checker.violations.values():
                if v.id not in merged or v.step < merged[v.id].step:
                    merged[v.id] = v
            for key, (lo, hi) in store.variable_steps(run_id).items():
                old = seen.get(key, (lo, hi))
                seen[key] = (min(lo, old[0]), max(hi, old[1]))
    violations = sorted(merged.values(), key=lambda v: (v.step, v.id))
    again = dataclasses.replace(
        report, against=builtin.NAME, violations=violations, causes=explain(violations),
        invariants_total=len(invariants.invariants), invariants_checked=len(checked),
        invariants_disabled=sum(1 for i in invariants.invariants if i.status == "disabled"),
        notes=[], margins={}, unchecked=[])
    return with_coverage(builtin.annotate(again, invariants, rules), invariants, checked, seen)


def totals(rows: Sequence[Any]) -> Dict[str, Any]:
    """The column's scores: recall and exact root causes on universal bugs, detections of
    the others, and error-level false alarms on every kind of valid run."""
    bugs = [r for r in rows if r.kind == "bug" and r.no_reference]
    uni = [r.no_reference for r in bugs if r.universal]
    rest = [r.no_reference for r in bugs if not r.universal]
    valid = {kind: [r.no_reference for r in rows if r.kind == kind and r.no_reference] for kind in ("ok", "loo", "whole")}
    return {
        "universal_bugs": len(uni),
        "recall": sum(r["detected"] for r in uni) / len(uni) if uni else 0.0,
        "exact_root_cause": sum(bool(r["matched"]) for r in uni) / len(uni) if uni else 0.0,
        "reference_bugs": len(rest),
        "reference_bugs_detected": sum(r["detected"] for r in rest),
        "reference_bugs_warned": sum(r["detected"] or r["warned"] for r in rest),
        "false_alarms": sum(1 for r in valid["ok"] if r["errors"]),
        "loo_false_alarms": sum(1 for r in valid["loo"] if r["errors"]),
        "whole_run_false_alarms": sum(1 for r in valid["whole"] if r["errors"]),
        "warnings_on_valid_runs": sum(r["warnings"] for rs in valid.values() for r in rs),
        "incomplete_clean_runs": sum(1 for rs in valid.values() for r in rs if r["incomplete"]),
        "max_step": max((r["first_step"] or 0 for r in uni if r["detected"]), default=0),
    }


def cell(row: Any) -> str:
    """The table cell: what the check against the built-in set said of this run (bold: a
    false alarm, or a universal bug not found as an error with its cause)."""
    r = row.no_reference
    if not r:
        return "-"
    causes = ", ".join(c.split("@")[0] for c in r["root_causes"][:2])
    if row.kind != "bug":
        return ("**false alarm**: " + causes if r["errors"] else "clean") + (f" ({r['warnings']} warn.)" if r["warnings"] else "")
    if r["detected"] and r["matched"]:
        return f"yes: {causes} (step {r['first_step']})"
    if row.universal:
        return f"**wrong cause**: {causes}" if r["detected"] else "**no**"
    seen = causes if r["detected"] else ", ".join(c.split("@")[0] for c in r["warning_causes"][:2]) if r["warned"] else ""
    return "needs a reference" + (f" (reported: {seen})" if seen else "")


def summary(t: Dict[str, Any]) -> List[str]:
    """The column's totals in words, under the table."""
    n = len(builtin.builtin_set().invariants)
    return [f"No reference (the built-in set, {n} invariants, checked from the same runs): recall "
            f"{100 * t['recall']:.0f}% on {t['universal_bugs']} universal bug variants, exact root cause "
            f"{100 * t['exact_root_cause']:.0f}%, latest first detection at step {t['max_step']}; "
            f"{t['reference_bugs_detected']} of {t['reference_bugs']} bugs that need a reference found anyway "
            f"({t['reference_bugs_warned']} with warnings); error-level false alarms on ok variants: "
            f"{t['false_alarms']}, fresh-seed references: {t['loo_false_alarms']}, whole runs: "
            f"{t['whole_run_false_alarms']}; warnings on valid runs: {t['warnings_on_valid_runs']}; incomplete "
            f"checks of clean runs: {t['incomplete_clean_runs']}."]
