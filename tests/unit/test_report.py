"""Reports from data: what was not checked and why, verdicts, and the four renderings."""
from __future__ import annotations

import json

from invariants.check import Checker
from invariants.explain import explain
from invariants.model import InvariantSet
from invariants.report import RENDERERS, CheckReport
from tests.unit.tables import reference_run, small_set


def test_unchecked_reasons_and_verdicts_from_data() -> None:
    from invariants.model import Invariant, Support, When
    from invariants.coverage import unchecked
    from invariants.report import CheckReport, render_junit, render_text

    def inv(iid: str, target: tuple, phase: str = "train", steps: tuple = (0, None), template: str = "range",
            severity: str = "error") -> Invariant:
        return Invariant(id=iid, template=template, target=target, expect={"min": 0.0, "max": 1.0},
                         when=When(phase, steps), severity=severity, status="proposed",
                         support=Support(3, 30), why="w")

    invs = InvariantSet(1, {"script": "ref/train.py"}, (
        inv("seen", ("a",)), inv("no_eval", ("a",), "eval"), inv("late", ("a",), steps=(9, None)),
        inv("early", ("a",), steps=(0, 1)), inv("trend", ("loss",), template="trend", steps=(0, 20)),
        inv("pair", ("a", "b"), severity="warning")))
    seen = {("train", "a"): (3, 5), ("train", "loss"): (0, 5)}
    got = {u.id: (u.reason, u.detail) for u in unchecked(invs, {"seen"}, seen)}
    assert got["no_eval"][0] == "never_observed" and "a was never observed in eval" == got["no_eval"][1]
    assert got["late"][0] == "window_not_reached" and "last observed at step 5" in got["late"][1]
    assert got["early"][0] == "not_evaluated" and got["trend"][0] == "window_not_reached"
    assert got["pair"] == ("never_observed", "b was never observed in train")

    def report(checked: int, steps: int, n_unchecked: int) -> CheckReport:
        r = CheckReport(script="s.py", against="i.yaml", run_id="r", run_status="complete", steps=steps,
                        invariants_total=6, invariants_checked=checked, invariants_disabled=0, violations=[],
                        causes=[], seconds=0.1, reference="ref/train.py", observed=0 if not steps else 3,
                        active_errors=5)
        r.unchecked = unchecked(invs, {"seen"}, seen)[:n_unchecked]
        return r

    nothing = report(0, 0, 6)
    assert nothing.failed and nothing.nothing_checked and "no optimizer step was observed" in nothing.failure
    assert "FAILED" in render_text(nothing) and 'failures="1"' in render_junit(nothing)
    most = report(1, 5, 5)
    assert not most.failed and "4 of 5 error-level" in most.coverage_warning
    assert "another pipeline (learned from ref/train.py)" in render_text(most)
    assert report(4, 5, 2).coverage_warning is None


def test_a_failed_check_renders_root_cause_first_in_every_format() -> None:
    invs = small_set()
    checker = Checker(invs)
    checker.feed(reference_run(1, **{"block.fc.trainable_fraction": lambda s: 0.0}))
    violations = sorted(checker.violations.values(), key=lambda v: (v.step, v.id))
    r = CheckReport(script="bug.py", against="inv.yaml", run_id="r1", run_status="budget", steps=12,
                    invariants_total=len(invs.invariants), invariants_checked=len(checker.checked),
                    invariants_disabled=0, violations=violations, causes=explain(violations), seconds=1.0)
    assert r.failed and r.verdict == "FAILED" and r.errors == 1
    text = RENDERERS["text"](r)
    assert text.index("Root causes") < text.index("Evidence")
    assert "1. [error] frozen @ fc" in text and "fix: parameters were frozen" in text
    doc = json.loads(RENDERERS["json"](r))
    assert doc["summary"]["verdict"] == "FAILED" and doc["causes"][0]["family"] == "frozen"
    sarif = json.loads(RENDERERS["sarif"](r))
    assert sarif["runs"][0]["results"][0]["properties"]["family"] == "frozen"
    junit = RENDERERS["junit"](r)
    assert 'failures="1"' in junit and "all_none:block.fc.trainable_fraction@train" in junit


def test_a_check_that_could_not_observe_error_level_invariants_is_incomplete() -> None:
    from invariants.coverage import unchecked
    invs = small_set()
    checker = Checker(invs)
    rows = [r for r in reference_run(1) if not r.variable.startswith("block.")]  # the blocks never observed
    checker.feed(rows)
    seen = {(r.phase, r.variable): (0, 11) for r in rows}
    r = CheckReport(script="s.py", against="inv.yaml", run_id="r1", run_status="budget", steps=12,
                    invariants_total=len(invs.invariants), invariants_checked=len(checker.checked),
                    invariants_disabled=0, violations=[], causes=[], seconds=1.0, active_errors=20)
    r.unchecked = unchecked(invs, checker.checked, seen)
    assert not r.failed and r.incomplete and r.verdict == "INCOMPLETE"
    groups = {(g.family, g.phase): g.loci for g in r.unobserved}
    assert groups == {("architecture", "train"): ["fc"], ("frozen", "train"): ["fc"], ("no_gradient", "train"): ["fc"]}
    text = RENDERERS["text"](r)
    assert "Not observed (the verdict is incomplete)" in text and "--allow-unchecked" in text
    doc = json.loads(RENDERERS["json"](r))
    assert doc["summary"]["incomplete"] and {u["family"] for u in doc["unobserved"]} >= {"frozen"}
    assert 'type="incomplete"' in RENDERERS["junit"](r)
    r.allow_unchecked = True
    assert r.verdict == "ok" and "Not observed (accepted)" in RENDERERS["text"](r)


def test_a_failed_check_puts_its_root_causes_before_what_it_could_not_observe() -> None:
    from invariants.coverage import unchecked
    invs = small_set()
    checker = Checker(invs)
    rows = [r for r in reference_run(1, **{"block.fc.trainable_fraction": lambda s: 0.0})
            if r.variable != "block.fc.no_grad_fraction"]
    checker.feed(rows)
    violations = sorted(checker.violations.values(), key=lambda v: (v.step, v.id))
    r = CheckReport(script="bug.py", against="inv.yaml", run_id="r1", run_status="budget", steps=12,
                    invariants_total=len(invs.invariants), invariants_checked=len(checker.checked),
                    invariants_disabled=0, violations=violations, causes=explain(violations), seconds=1.0,
                    active_errors=20)
    r.unchecked = unchecked(invs, checker.checked, {(x.phase, x.variable): (0, 11) for x in rows})
    text = RENDERERS["text"](r)
    assert r.verdict == "FAILED" and r.unobserved, text
    # the verdict is the failure: its cause first, what was not observed after the evidence
    assert text.index("Root causes") < text.index("Evidence") < text.index("Not observed (the check is also")
