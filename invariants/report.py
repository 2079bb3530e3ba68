"""Render a check's outcome: text (root causes first), JSON, SARIF and JUnit."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional
from xml.sax.saxutils import escape, quoteattr

from invariants.check import Violation
from invariants.explain import Cause


@dataclass
class CheckReport:
    """Everything `invar check` found, ready to render."""

    script: str
    against: str
    run_id: Optional[str]
    run_status: str
    steps: int
    invariants_total: int
    invariants_checked: int
    invariants_disabled: int
    violations: List[Violation]
    causes: List[Cause]
    seconds: float
    fail_on: str = "error"
    crash: Optional[str] = None
    static: Optional[Dict[str, Any]] = None
    notes: List[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(1 for v in self.violations if v.severity == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for v in self.violations if v.severity == "warning")

    def to_json(self) -> Dict[str, Any]:
        return {
            "summary": {"errors": self.errors, "warnings": self.warnings, "steps": self.steps,
                        "invariants_checked": self.invariants_checked,
                        "invariants_total": self.invariants_total,
                        "invariants_disabled": self.invariants_disabled,
                        "run_status": self.run_status, "run_id": self.run_id,
                        "seconds": round(self.seconds, 3), "crash": self.crash},
            "script": self.script, "against": self.against,
            "violations": [v.to_json() for v in self.violations],
            "causes": [c.to_json() for c in self.causes],
            "static": self.static,
            "notes": self.notes,
        }


def render_text(r: CheckReport) -> str:
    out: List[str] = []
    verdict = "FAILED" if r.errors or (r.fail_on == "warning" and r.warnings) else "ok"
    if r.crash:
        verdict = "CRASHED"
    out.append(f"invar check {r.script} against {r.against}: {verdict}")
    out.append(f"  {r.steps} optimizer steps traced ({r.run_status}), {r.invariants_checked} of "
               f"{r.invariants_total} invariants checked ({r.invariants_disabled} disabled), "
               f"{r.errors} error(s), {r.warnings} warning(s), {r.seconds:.1f} s")
    if r.crash:
        out.append(f"  the pipeline crashed: {r.crash}")
    for note in r.notes:
        out.append(f"  note: {note}")
    if r.causes:
        out.append("")
        out.append("Root causes")
        for i, c in enumerate(r.causes, 1):
            out.append(f"  {i}. [{c.severity}] {c.family}" + (f" @ {c.locus}" if c.locus else ""))
            out.append(f"     {c.summary}")
            out.append(f"     fix: {c.hint}")
            if len(c.violations) > 1:
                out.append(f"     explains {len(c.violations)} violations: "
                           + ", ".join(sorted({v.family for v in c.violations})))
        out.append("")
        out.append("Evidence")
        for c in r.causes:
            for v in sorted(c.violations, key=lambda v: (v.step, v.id))[:12]:
                more = f" (x{v.count})" if v.count > 1 else ""
                where = f" rank {','.join(map(str, v.ranks))}" if v.ranks else ""
                out.append(f"  [{v.severity}] step {v.step} {v.phase}{where}: {' vs '.join(v.target)}"
                           f" observed {v.observed}, expected {v.expected}{more}  ({v.id})")
            if len(c.violations) > 12:
                out.append(f"  ... {len(c.violations) - 12} more for {c.family}")
    elif not r.crash:
        out.append("  no invariant violated")
    return "\n".join(out)


def render_json(r: CheckReport) -> str:
    return json.dumps(r.to_json(), indent=2, sort_keys=False)


def render_sarif(r: CheckReport) -> str:
    rules = {v.template: {"id": v.template, "shortDescription": {"text": f"invar {v.template} invariant"}}
             for v in r.violations}
    results = [{
        "ruleId": v.template,
        "level": "error" if v.severity == "error" else "warning",
        "message": {"text": f"{v.message}. {v.hint}".strip()},
        "locations": [{"physicalLocation": {"artifactLocation": {"uri": r.script}},
                       "logicalLocations": [{"name": v.locus or v.target[0]}]}],
        "properties": {"invariant": v.id, "step": v.step, "phase": v.phase, "family": v.family},
    } for v in r.violations]
    sarif = {"version": "2.1.0",
             "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
             "runs": [{"tool": {"driver": {"name": "invar", "rules": list(rules.values())}},
                       "results": results}]}
    return json.dumps(sarif, indent=2)


def render_junit(r: CheckReport) -> str:
    failures = len(r.violations)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuite name={quoteattr("invar " + r.script)} tests="{max(r.invariants_checked, failures)}" '
             f'failures="{failures}" errors="{1 if r.crash else 0}" time="{r.seconds:.3f}">']
    for v in r.violations:
        lines.append(f'  <testcase classname={quoteattr(v.family)} name={quoteattr(v.id)}>')
        lines.append(f'    <failure type={quoteattr(v.severity)} message={quoteattr(v.message)}>'
                     f'{escape(v.hint)}</failure>')
        lines.append("  </testcase>")
    if r.crash:
        lines.append(f'  <testcase classname="pipeline" name="run"><error message={quoteattr(r.crash)}/></testcase>')
    lines.append("</testsuite>")
    return "\n".join(lines)


RENDERERS = {"text": render_text, "json": render_json, "sarif": render_sarif, "junit": render_junit}
