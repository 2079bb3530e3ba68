"""A check's outcome and its verdict, rendered as text (root causes first), JSON, SARIF and
JUnit, with what could not be checked and how close the run came to each consequence
envelope.

Verdicts: CRASHED (the pipeline raised), FAILED (a violation at or above --fail-on, or
nothing could be checked), INCOMPLETE (no such violation, but error-level invariants could
not be evaluated because their variables were never recorded), ok."""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional
from xml.sax.saxutils import escape, quoteattr

from invariants import structure
from invariants.check import Violation
from invariants.coverage import NOT_APPLICABLE, REASONS, Unchecked, Unobserved, unobserved

if TYPE_CHECKING:
    from invariants.explain import Cause  # explain imports networkx: only the checks that explain need it

UNCHECKED_NAMED = 3  # error-level unchecked invariants the text report names

def short_path(path: str) -> str:
    """A script path as people tell runs apart: relative to the working directory when
    inside it, else `parent/name`."""
    p = Path(path)
    try:
        rel = Path(os.path.relpath(p.resolve(), Path.cwd()))
    except ValueError:  # another drive (Windows)
        rel = Path("..")
    if rel.parts and rel.parts[0] != "..":
        return str(rel)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


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
    unchecked: List[Unchecked] = field(default_factory=list)
    reference: Optional[str] = None  # the script the invariants were learned from (meta.script)
    observed: Optional[int] = None   # (phase, variable) pairs the run observed; None: not known
    active_errors: int = 0           # active error-level invariants (with `unchecked`: coverage)
    allow_unchecked: bool = False    # --allow-unchecked: an incomplete check may pass
    # per consequence envelope that held: the smallest factor the run could still have moved
    # by before it violated (invariant id -> factor; Checker.margins)
    margins: Dict[str, float] = field(default_factory=dict)

    @property
    def unobserved(self) -> List[Unobserved]:
        """Error-level invariants whose variables the run never recorded, by family."""
        return [] if self.nothing_checked else unobserved(self.unchecked)

    @property
    def incomplete(self) -> bool:
        """The check could not look at some error-level facts (and was not told to accept that)."""
        return bool(self.unobserved) and not self.allow_unchecked and not self.crash

    @property
    def errors(self) -> int:
        return sum(1 for v in self.violations if v.severity == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for v in self.violations if v.severity == "warning")

    @property
    def nothing_checked(self) -> bool:
        """The file has active invariants and the run gave none of them a value to check."""
        return self.invariants_checked == 0 and self.invariants_total > self.invariants_disabled

    @property
    def failure(self) -> Optional[str]:
        """Why the check failed although no invariant was violated (nothing was checked);
        None as well when the pipeline crashed, which is then the reason."""
        if not self.nothing_checked or self.crash:
            return None
        active = self.invariants_total - self.invariants_disabled
        if self.steps == 0:
            what = "no optimizer step was observed" + (" and nothing was recorded" if self.observed == 0 else "")
            return (f"nothing could be checked: {what} (0 of {active} active invariants checked); "
                    f"does the script train with these arguments?")
        learned = f" (learned from {short_path(self.reference)})" if self.reference else ""
        return (f"nothing could be checked: the run observed none of the variables of the {active} active "
                f"invariants; the invariant file may describe another pipeline{learned}")

    @property
    def coverage_warning(self) -> Optional[str]:
        """A warning when more than half of the error-level invariants went unchecked in a
        run that ended on its own or at its budget (a crash or --fail-fast explains itself)."""
        errors = sum(1 for u in self.unchecked if u.severity == "error" and u.reason != NOT_APPLICABLE)
        if self.nothing_checked or not errors or 2 * errors <= self.active_errors \
                or self.crash or self.run_status in ("stopped", "interrupted"):
            return None
        head = f"{errors} of {self.active_errors} error-level invariants were never checked: "
        if self.steps == 0:
            return head + "no optimizer step was observed"
        learned = f" (learned from {short_path(self.reference)})" if self.reference else ""
        return head + f"the invariant file may describe another pipeline{learned}"

    @property
    def failed(self) -> bool:
        """Whether `check` exits 1: a violation at or above --fail-on, or nothing checked."""
        return bool(self.errors or (self.fail_on == "warning" and self.warnings) or self.nothing_checked)

    @property
    def verdict(self) -> str:
        return "CRASHED" if self.crash else "FAILED" if self.failed else "INCOMPLETE" if self.incomplete else "ok"

    def to_json(self) -> Dict[str, Any]:
        reasons = Counter(u.reason for u in self.unchecked)
        return {
            "summary": {"verdict": self.verdict, "errors": self.errors, "warnings": self.warnings,
                        "steps": self.steps,
                        "invariants_checked": self.invariants_checked,
                        "invariants_total": self.invariants_total,
                        "invariants_disabled": self.invariants_disabled,
                        "unchecked": {"total": len(self.unchecked),
                                      "errors": sum(1 for u in self.unchecked if u.severity == "error"),
                                      **{r: reasons.get(r, 0) for r in REASONS}},
                        "nothing_checked": self.nothing_checked, "failure": self.failure,
                        "incomplete": self.incomplete, "allow_unchecked": self.allow_unchecked,
                        "coverage_warning": self.coverage_warning, "reference": self.reference,
                        "run_status": self.run_status, "run_id": self.run_id,
                        "seconds": round(self.seconds, 3), "crash": self.crash},
            "script": self.script, "against": self.against,
            "violations": [v.to_json() for v in self.violations],
            "causes": [c.to_json() for c in self.causes],
            "unchecked": [u.to_json() for u in self.unchecked],
            "unobserved": [u.to_json() for u in self.unobserved],
            "margins": {k: round(v, 4) for k, v in sorted(self.margins.items())},
            "static": self.static,
            "structural_diff": structure.to_json(self.violations),
            "notes": self.notes,
        }


def render_text(r: CheckReport) -> str:
    out: List[str] = []
    out.append(f"invar check {r.script} against {r.against}: {r.verdict}")
    out.append(f"  {r.steps} optimizer steps traced ({r.run_status}), {r.invariants_checked} of "
               f"{r.invariants_total} invariants checked ({r.invariants_disabled} disabled), "
               f"{r.errors} error(s), {r.warnings} warning(s), {r.seconds:.1f} s")
    if r.crash:
        out.append(f"  the pipeline crashed: {r.crash}")
    if r.failure:
        out.append(f"  {r.failure}")
    if r.coverage_warning:
        out.append(f"  WARNING: {r.coverage_warning}")
    if not r.causes:  # the unobserved groups are the verdict: they come first
        out += _unobserved_lines(r)
        out += _unchecked_lines(r)
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
        diff = structure.render_lines(r.violations)
        if diff:  # what changed in the model, next to what changed in training
            out += [""] + diff
        out.append("")
        out.append("Evidence")
        for c in r.causes:
            for v in sorted(c.violations, key=lambda v: (v.step, v.id))[:12]:
                more = f" (x{v.count})" if v.count > 1 else ""
                where = f" rank {','.join(map(str, v.ranks))}" if v.ranks else ""
                why = f" (escalated: explains {v.escalated_by})" if v.escalated_by else ""
                out.append(f"  [{v.severity}] step {v.step} {v.phase}{where}: {' vs '.join(v.target)}"
                           f" observed {v.observed}, expected {v.expected}{more}  ({v.id}){why}")
            if len(c.violations) > 12:
                out.append(f"  ... {len(c.violations) - 12} more for {c.family}")
        # after the causes: often their consequence (a block left out of the optimizer has no lr)
        out += _unobserved_lines(r)
        unchecked = _unchecked_lines(r)
        if unchecked:
            out += ["", "Not checked"] + unchecked
    elif not r.crash and not r.nothing_checked:
        out.append("  no invariant violated")
    return "\n".join(out)


def _unobserved_lines(r: CheckReport) -> List[str]:
    """The groups of error-level invariants the run never showed, each with its blocks."""
    if not r.unobserved:
        return []
    state = "incomplete" if r.incomplete else "accepted"
    title = "accepted" if not r.incomplete else "the check is also incomplete" if r.causes \
        else "the verdict is incomplete"
    out = ["", f"Not observed ({title})"]
    for i, u in enumerate(r.unobserved, 1):
        out.append(f"  {i}. [{state}] {u.family}" + (f" @ {', '.join(u.loci[:6])}" if u.loci else ""))
        out.append(f"     {u.summary}")
    out.append(f"     why and what to do: {r.unobserved[0].hint}")
    return out


def _unchecked_lines(r: CheckReport) -> List[str]:
    """`not checked: N (counts by reason)`, then a few by name, error-level ones first."""
    if not r.unchecked or (r.nothing_checked and r.steps == 0):
        return []  # with no step at all, the failure line already says why
    reasons = Counter(u.reason for u in r.unchecked)
    out = [f"  not checked: {len(r.unchecked)} invariant(s) — "
           + ", ".join(f"{reasons[k]} {text}" for k, text in REASONS.items() if reasons[k])]
    gaps = [u for u in r.unchecked if u.reason != NOT_APPLICABLE]  # a built-in about what is not there is none
    errors = [u for u in gaps if u.severity == "error"]
    named = errors or gaps
    for u in named[:UNCHECKED_NAMED]:
        out.append(f"    [{u.severity}] {u.id}: {u.detail}")
    if len(named) > UNCHECKED_NAMED:
        kind = " error-level" if errors else ""
        out.append(f"    ... {len(named) - UNCHECKED_NAMED} more{kind} (--format json lists every id)")
    return out


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
    notices = [(r.failure, "error"), (r.coverage_warning, "warning"), (r.crash, "error")]
    notices += [(f"incomplete: {u.summary}", "error" if r.incomplete else "note") for u in r.unobserved]
    invocation = {"executionSuccessful": not (r.crash or r.nothing_checked or r.incomplete),
                  "toolExecutionNotifications": [{"level": level, "message": {"text": text}}
                                                 for text, level in notices if text]}
    sarif = {"version": "2.1.0",
             "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
             "runs": [{"tool": {"driver": {"name": "invar", "rules": list(rules.values())}},
                       "invocations": [invocation], "results": results}]}
    return json.dumps(sarif, indent=2)


def render_junit(r: CheckReport) -> str:
    failures = len(r.violations) + (1 if r.nothing_checked else 0) + (len(r.unobserved) if r.incomplete else 0)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuite name={quoteattr("invar " + r.script)} tests="{max(r.invariants_checked, failures)}" '
             f'failures="{failures}" errors="{1 if r.crash else 0}" time="{r.seconds:.3f}">']
    for v in r.violations:
        lines.append(f'  <testcase classname={quoteattr(v.family)} name={quoteattr(v.id)}>')
        lines.append(f'    <failure type={quoteattr(v.severity)} message={quoteattr(v.message)}>'
                     f'{escape(v.hint)}</failure>')
        lines.append("  </testcase>")
    if r.nothing_checked:  # else a CI reads an empty suite as passed
        lines.append(f'  <testcase classname="coverage" name="invariants checked">'
                     f'<failure type="error" message={quoteattr(r.failure or "")}/></testcase>')
    if r.incomplete:  # a check that could not look is no pass
        for u in r.unobserved:
            lines.append(f'  <testcase classname="coverage" name={quoteattr(f"{u.family}@{u.phase} observed")}>'
                         f'<failure type="incomplete" message={quoteattr(u.summary)}/></testcase>')
    if r.crash:
        lines.append(f'  <testcase classname="pipeline" name="run"><error message={quoteattr(r.crash)}/></testcase>')
    lines.append("</testsuite>")
    return "\n".join(lines)


RENDERERS = {"text": render_text, "json": render_json, "sarif": render_sarif, "junit": render_junit}
