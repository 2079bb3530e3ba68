"""The built-in set and what it needs from the core: targets that quantify over variables
(validated, round-tripped, evaluated per matching variable), the templates it introduces,
declared exceptions, and a learned file that keeps the built-in entries."""
from __future__ import annotations

import dataclasses
from typing import Any, List, Tuple

import pytest

from invariants import allow, builtin, invfile
from invariants.check import Checker
from invariants.coverage import NEVER_OBSERVED, NOT_APPLICABLE, unchecked
from invariants.errors import UsageError
from invariants.explain import HINTS
from invariants.invfile import InvariantFileError
from invariants.model import Invariant, InvariantSet, Support, When
from invariants.registry import template

pytestmark = pytest.mark.unit
Row = Tuple[int, str, str, Any, Any]


def entry(template_name: str, target: List[str], expect: dict, phase: str = "train", steps=(0, None),
          origin: str = "mined", iid: str = "") -> Invariant:
    return Invariant(id=iid or f"{template_name}:{','.join(target)}@{phase}", template=template_name,
                     target=tuple(target), expect=expect, when=When(phase, steps), severity="error",
                     status="accepted", support=Support(0, 0, None), why="", origin=origin)


def check(*invs: Invariant, rows: List[Row]) -> Checker:
    c = Checker(InvariantSet(schema=1, invariants=invs))
    for step in sorted({r[0] for r in rows}):  # step by step, as a run flushes
        c.feed([r for r in rows if r[0] == step])
    c.finish()
    return c


# -- the file format ---------------------------------------------------------------------
PATTERN_FILE = """\
schema: 1
meta: {}
invariants:
  - id: grads
    template: all_none
    target: [block.*.no_grad_fraction]
    expect: {quantifier: none}
    when: {phase: train, steps: [1, null]}
    severity: error
    status: accepted
    origin: builtin
    support: {runs: 0, observations: 0, span: null}
    why: every block gets a gradient
"""


def test_a_quantified_target_and_its_origin_round_trip_byte_identically() -> None:
    s = invfile.loads(PATTERN_FILE)
    inv = s.invariants[0]
    assert inv.quantified and inv.origin == "builtin"
    text = invfile.dumps(s)
    assert invfile.dumps(invfile.loads(text)) == text and "origin: builtin" in text
    mined = dataclasses.replace(inv, origin="mined")
    assert "origin" not in invfile.dumps(dataclasses.replace(s, invariants=(mined,)))  # old files stay as they were


@pytest.mark.parametrize("target, message, field", [
    ("[block.**.no_grad_fraction]", "holds one *", "target[0]"),
    ("[block.*.x.*]", "holds one *", "target[0]"),
    ("['*']", "would match every variable", "target[0]"),
    ("['block.* .x']", "no spaces", "target[0]"),
])
def test_a_malformed_pattern_names_the_entry_and_the_field(target: str, message: str, field: str) -> None:
    with pytest.raises(InvariantFileError) as e:
        invfile.loads(PATTERN_FILE.replace("[block.*.no_grad_fraction]", target))
    assert e.value.entry == "invariants[0] (id grads)" and e.value.field == field and message in str(e.value)


def test_a_later_wildcard_needs_one_in_the_first_target_and_an_unknown_origin_is_refused() -> None:
    text = PATTERN_FILE.replace("template: all_none", "template: ratio").replace(
        "[block.*.no_grad_fraction]", "[loss.class_width, block.*.x]").replace("{quantifier: none}", "{min: 0, max: 1}")
    with pytest.raises(InvariantFileError, match="target\\[0\\] has none to bind it") as e:
        invfile.loads(text)
    assert e.value.field == "target[1]"
    with pytest.raises(InvariantFileError, match="expected one of mined, builtin") as e:
        invfile.loads(PATTERN_FILE.replace("origin: builtin", "origin: learned"))
    assert e.value.field == "origin"


# -- the checker -------------------------------------------------------------------------
def test_a_quantified_invariant_is_checked_per_matching_variable_with_its_own_id_and_locus() -> None:
    inv = invfile.loads(PATTERN_FILE).invariants[0]
    c = check(inv, rows=[(0, "train", "block.fc.no_grad_fraction", 1.0, None),  # step 0: outside the window
                         (1, "train", "block.fc.no_grad_fraction", 0.0, None),
                         (1, "train", "block.layer2.0.no_grad_fraction", 0.25, None),
                         (2, "train", "block.layer2.0.no_grad_fraction", 0.25, None),
                         (2, "train", "block.layer2.0.grad_norm", 1.0, None)])
    assert list(c.violations) == ["grads[layer2.0]"]
    v = c.violations["grads[layer2.0]"]
    assert v.locus == "layer2.0" and v.target == ("block.layer2.0.no_grad_fraction",) and v.count == 2
    assert c.checked == {"grads"} and c.evaluations["grads"] == 3


def test_variable_names_are_matched_once_not_per_row() -> None:
    c = Checker(invfile.loads(PATTERN_FILE))
    calls = []
    original = c._index
    c._index = lambda name: (calls.append(name), original(name))  # type: ignore[method-assign]
    c.feed([(s, "train", "block.fc.no_grad_fraction", 0.0, None) for s in range(1, 50)])
    assert calls == ["block.fc.no_grad_fraction"]


def test_a_bound_second_target_takes_the_first_targets_match() -> None:
    inv = entry("eval_shift", ["input.c*.mean", "input.c*.std"], {"noise": 4.0, "scales": 1.0}, phase="eval")
    train = [(s, "train", f"input.c{ch}.{stat}", v, None) for s in range(4) for ch in (0, 1)
             for stat, v in (("mean", 0.01 * s), ("std", 1.0))]
    c = check(inv, rows=train + [(4, "eval", "input.c0.mean", 0.02, None), (4, "eval", "input.c1.mean", 3.5, None)])
    assert list(c.violations) == ["eval_shift:input.c*.mean,input.c*.std@eval[1]"]
    assert "+3.48 training scales" in c.violations["eval_shift:input.c*.mean,input.c*.std@eval[1]"].observed


def test_evaluation_before_training_is_decided_once_training_batches_arrive() -> None:
    inv = entry("eval_scale", ["input.std"], {"noise": 4.0, "factor": 2.0}, phase="eval")
    rows = [(0, "eval", "input.std", 0.25, None)] + [(s, "train", "input.std", 1.0 + 0.01 * s, None) for s in range(4)]
    c = check(inv, rows=rows)
    assert list(c.violations) and c.violations[inv.id].step == 2  # the third training batch decides


# -- the templates it introduces --------------------------------------------------------
@pytest.mark.parametrize("name, expect, values, ok", [
    ("finite", {}, (1.5,), True),
    ("finite", {}, ("nan",), False),
    ("finite", {}, ("inf",), False),
    ("window", {"statistic": "max", "min": 0.0, "max": None, "strict": True}, ([(0, 0.0), (1, 1e-4)],), True),
    ("window", {"statistic": "max", "min": 0.0, "max": None, "strict": True}, ([(0, 0.0), (5, 0.0)],), False),
    ("window", {"statistic": "mean", "min": 0.5, "max": None}, ([(1, 0.13), (2, 0.13)],), False),
    ("window", {"statistic": "mean", "min": 0.5, "max": None}, ([],), True),  # no evidence
])
def test_universal_templates_hold_or_not(name: str, expect: dict, values: tuple, ok: bool) -> None:
    assert template(name).holds(expect, values) is ok


def history(ev: List[float], tr: List[float]) -> dict:
    return {"eval": ev, "train": tr}


def test_eval_shift_tolerates_batch_noise_and_a_fraction_of_the_data_scale() -> None:
    shift, e = template("eval_shift"), {"noise": 4.0, "scales": 1.0}
    train = [0.05, 0.0, 0.1, 0.03, 0.08]
    scale = history([], [1.0] * 5)
    assert shift.holds(e, (history([0.3], train), scale))       # augmentation-sized: a third of a std
    assert not shift.holds(e, (history([3.5], train), scale))   # normalised with the wrong mean
    assert shift.holds(e, (history([3.5], train[:2]), scale))   # too few training batches to tell
    noisy = [0.0, 2.0, -2.0, 1.5]                               # batches that wander: a wider tolerance
    assert shift.holds(e, (history([3.5], noisy), scale))


def test_eval_scale_catches_unnormalised_evaluation_data() -> None:
    scale, e = template("eval_scale"), {"noise": 4.0, "factor": 2.0}
    assert not scale.holds(e, (history([0.25], [1.0, 1.01, 0.99]),))
    assert scale.holds(e, (history([0.87, 0.93], [0.9, 0.91, 0.89]),))
    assert "allowed x2" in scale.observed(e, (history([0.25], [1.0, 1.01, 0.99]),))


def test_a_window_without_bounds_is_refused_in_the_file() -> None:
    text = PATTERN_FILE.replace("template: all_none", "template: window").replace(
        "{quantifier: none}", "{statistic: mean, min: null, max: null}")
    with pytest.raises(InvariantFileError, match="give min or max"):
        invfile.loads(text)


# -- the shipped set -----------------------------------------------------------------------
def test_the_shipped_set_is_canonical_builtin_and_names_its_exceptions() -> None:
    s = builtin.builtin_set()
    assert builtin.PATH.read_text() == invfile.dumps(s)  # written by invar: reviewable diffs
    assert s.invariants and all(i.origin == "builtin" and i.id.startswith("builtin:") for i in s.invariants)
    assert all(len(i.why) > 40 for i in s.invariants)
    families = {template(i.template).FAMILY or i.template for i in s.invariants}
    assert "non_finite" in families and "non_finite" in HINTS


def test_a_builtin_never_observed_is_not_applicable_a_mined_one_is_a_gap() -> None:
    inv = invfile.loads(PATTERN_FILE).invariants[0]
    seen = {("train", "loss.value"): (0, 29)}
    [u] = unchecked(InvariantSet(schema=1, invariants=(inv,)), set(), seen)
    assert u.reason == NOT_APPLICABLE and "no variable matching block.*.no_grad_fraction" in u.detail
    [u] = unchecked(InvariantSet(schema=1, invariants=(dataclasses.replace(inv, origin="mined"),)), set(), seen)
    assert u.reason == NEVER_OBSERVED


def test_a_learned_file_keeps_the_builtins_disabling_those_the_reference_violates() -> None:
    learned = InvariantSet(schema=1, invariants=(entry("constant", ["input.shape"], {"value": "3x8x8"}),))
    ok_run = [(s, "train", "optim.zero_grad_calls", 1.0, None) for s in range(1, 6)]
    hand_zeroed = [(s, "train", "optim.zero_grad_calls", 0.0, None) for s in range(1, 6)]
    kept, conf = builtin.with_builtins(learned, [ok_run, ok_run])
    assert len(kept.invariants) == 1 + len(builtin.builtin_set().invariants)
    zero = kept.by_id()["builtin:gradients-zeroed"]
    assert "builtin:gradients-zeroed" in conf.confirmed and zero.support.runs == 2 and zero.status == "accepted"
    kept, conf = builtin.with_builtins(kept, [ok_run, hand_zeroed])  # re-mining replaces, never duplicates
    zero = kept.by_id()["builtin:gradients-zeroed"]
    assert zero.status == "disabled" and "in 1 of 2 runs" in zero.why
    assert any("disabled builtin:gradients-zeroed" in line for line in conf.lines())
    assert invfile.dumps(invfile.loads(invfile.dumps(kept))) == invfile.dumps(kept)


# -- declared exceptions -------------------------------------------------------------------
def test_allow_rules_cover_a_family_in_a_block_and_its_sub_blocks(tmp_path) -> None:
    inv = invfile.loads(PATTERN_FILE).invariants[0]
    rows = [(1, "train", f"block.{b}.no_grad_fraction", 0.5, None) for b in ("backbone.0", "backbone.1", "head")]
    violations = list(check(inv, rows=rows).violations.values())
    listed = tmp_path / "allow.txt"
    listed.write_text("# deliberate\n\nno_gradient@backbone   # frozen on purpose\n")
    rules = allow.rules_from([], [str(listed)])
    kept, allowed = allow.split(violations, rules)
    assert [v.locus for v in kept] == ["head"] and len(allowed) == 2
    [line] = allow.notes(allowed, rules)
    assert line.startswith(f"allowed by {listed}:3 no_gradient@backbone (frozen on purpose): 2 no gradient")
    assert allow.notes([], allow.rules_from(["leakage"])) == ["allowed by --allow leakage: nothing this run"]


@pytest.mark.parametrize("rule, message", [("frozn@backbone", "unknown cause family 'frozn'"),
                                           ("frozen@", "expected FAMILY or FAMILY@BLOCK")])
def test_a_bad_allow_rule_is_a_usage_error_naming_it(rule: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        allow.rules_from([rule])
