"""Templates as data: small tables of reference values, the invariant each template learns
from them (or why it refuses), and what it says of new observations."""
from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Sequence

import pytest

from invariants import policy
from invariants.explain import CAUSAL_EDGES, HINTS
from invariants.registry import known_templates, template
from invariants.templates.base import Discard, Fit, Sample, Series, Template
from invariants.variables import _RULES


def sample(*runs: Sequence[Any], variable: str = "x", once: bool = False, n_runs: Optional[int] = None,
           second: Optional[Sequence[Sequence[Any]]] = None) -> Sample:
    """A Sample from per-run value lists (one value per step, steps from 0)."""
    def series(name: str, values: Sequence[Sequence[Any]]) -> Series:
        return Series(name, "train", tuple(tuple((i, v) for i, v in enumerate(run)) for run in values))

    targets = (series(variable, runs),) + ((series("y", second),) if second is not None else ())
    return Sample(targets, len(runs) if n_runs is None else n_runs, once=once)


# template, fit parameters, reference runs, what is learned: the expect mapping, or a
# fragment of the discard reason
FITS: List[tuple] = [
    ("constant", {}, [[3.0] * 3] * 3, {"value": 3.0}),
    ("constant", {}, [[3.0] * 3, [4.0] * 3], "falsified: 2 distinct values"),
    ("constant", {}, [[3.0] * 3, []], "seen in 1 of 2 runs"),
    ("one_of", {}, [["a", "b", "a"], ["b", "a", "b"]] * 2, {"values": ["a", "b"]}),
    ("one_of", {}, [list("abcde")] * 3, "falsified: 5 distinct values"),
    ("one_of", {}, [["a", "b"]], "too few observations (2) for 2 values"),
    # spread: the within-run std of [1, 2, 3] (0.8165); bounds 4 spreads beyond the extremes
    ("range", dict(margin=4.0), [[1.0, 2.0, 3.0]] * 3, {"min": -2.26599, "max": 6.26599}),
    ("range", dict(margin=4.0, floor=1.0), [[2.0] * 3] * 3, {"min": -2.0, "max": 6.0}),
    ("range", dict(margin=4.0, floor=1.0, clip=(0.0, 1.0)), [[0.5] * 3] * 3, {"min": 0.0, "max": 1.0}),
    ("range", dict(log=True, margin=1.0, floor=1.0), [[10.0] * 3] * 3, {"min": 1.0, "max": 100.0}),
    ("range", dict(log=True), [[0.0, 1.0, 2.0]] * 3, "not positive"),
    ("range", dict(margin=0.0, lower_only=True), [[2.0, 3.0]] * 3, {"min": 2.0, "max": None}),
    ("range", dict(margin=0.0, lower_only=True, positive=True), [[0.0, 3.0]] * 3, "trivial"),
    ("range", {}, [[1.0]] * 3, "too few observations (3 < 6)"),
    ("magnitude", {}, [[2.0, 4.0]] * 3, {"min": 0.2, "max": 40.0}),
    ("magnitude", dict(below=None), [[2.0, 4.0]] * 3, {"min": 0.0, "max": 40.0}),
    ("magnitude", dict(below=100.0, top=1.0), [[0.5, 1.0]] * 3, {"min": 0.005, "max": 1.0}),
    ("all_none", {}, [[1.0] * 3] * 3, {"quantifier": "all"}),
    ("all_none", {}, [[0.0] * 3] * 3, {"quantifier": "none"}),
    ("all_none", {}, [[1.0, 0.5, 1.0]] * 3, "falsified: fractions 0.5, 1"),
    ("disjoint", {}, [[0.0] * 3] * 3, {}),
    ("disjoint", {}, [[0.0, 2.0]] * 3, "falsified"),
    # from the mean of the first three (9) to the last three (2): -78 %; a third of it must hold
    ("trend", {}, [[10.0 - i for i in range(10)]] * 3, {"direction": "decreasing", "min_change": 0.259}),
    ("trend", {}, [[10.0] * 10] * 3, "are not all falling"),
    ("trend", {}, [[10.0, 9.0]] * 3, "too few runs"),
    ("schedule", dict(factor=3.0), [[1.0, 1.0, 0.5, 0.5, 0.25, 0.25]] * 3,
     {"points": [[0, 1.0, 1.0], [1, 1.0, 1.0], [2, 0.5, 0.5], [3, 0.5, 0.5], [4, 0.25, 0.25], [5, 0.25, 0.25]],
      "factor": 3.0}),
    ("schedule", dict(factor=3.0), [[1.0] * 8] * 3, "obvious: constant"),
]


@pytest.mark.parametrize("name, params, runs, learned", FITS, ids=[f"{f[0]}-{i}" for i, f in enumerate(FITS)])
def test_fit(name: str, params: Dict[str, Any], runs: List[List[Any]], learned: Any) -> None:
    result = template(name).fit(sample(*runs), **params)
    if isinstance(learned, str):
        assert isinstance(result, Discard) and learned in result.reason, result
    else:
        assert isinstance(result, Fit), result
        assert result.expect == learned


def test_once_per_run_facts_are_justified_by_runs_not_observations() -> None:
    one_each = [[5.0]] * 3
    assert isinstance(template("range").fit(sample(*one_each)), Discard)
    assert isinstance(template("range").fit(sample(*one_each, once=True)), Fit)
    assert isinstance(template("magnitude").fit(sample(*one_each, once=True)), Fit)


# template, expect, observed values (one per target), step -> holds?
HOLDS: List[tuple] = [
    ("constant", {"value": 3.0}, (3.0,), 0, True),
    ("constant", {"value": 3.0}, (3.1,), 0, False),
    ("constant", {"value": "3x32x32"}, ("3x32x32",), 0, True),
    ("one_of", {"values": ["a", "b"]}, ("c",), 0, False),
    ("range", {"min": 0.0, "max": 1.0}, (1.5,), 0, False),
    ("range", {"min": 0.0, "max": None}, (1e9,), 0, True),
    ("range", {"min": 0.0, "max": 1.0}, ("nan",), 0, False),  # non-finite values arrive as text
    ("magnitude", {"min": 0.0, "max": 10.0}, (5.0,), 0, True),
    ("all_none", {"quantifier": "all"}, (0.9,), 0, False),
    ("all_none", {"quantifier": "none"}, (0.0,), 0, True),
    ("disjoint", {}, (3.0,), 0, False),
    ("equal", {"offset": 0.0, "tolerance": 0.1}, (0.5, 0.45), 0, True),
    ("equal", {"offset": 0.0, "tolerance": 0.1}, (0.9, 0.45), 0, False),
    ("ratio", {"min": 0.9, "max": 1.1}, (10.0, 10.0), 0, True),
    ("ratio", {"min": 0.9, "max": 1.1}, (128.0, 10.0), 0, False),
    ("ratio", {"min": 0.9, "max": 1.1}, (10.0, 0.0), 0, False),
    # a windowed template gets the (step, value) pairs of its window
    ("trend", {"direction": "decreasing", "min_change": 0.1}, (list(enumerate([10.0, 9, 8, 7, 6, 5])),), 5, True),
    ("trend", {"direction": "decreasing", "min_change": 0.1}, (list(enumerate([10.0] * 6)),), 5, False),
    ("trend", {"direction": "decreasing", "min_change": 0.1}, (list(enumerate([10.0] * 3)),), 5, True),
    ("schedule", {"points": [[0, 1.0, 1.0], [10, 0.1, 0.1]], "factor": 3.0}, (1.0,), 5, True),
    ("schedule", {"points": [[0, 1.0, 1.0], [10, 0.1, 0.1]], "factor": 3.0}, (1.0,), 10, False),
]


@pytest.mark.parametrize("name, expect, values, step, ok", HOLDS, ids=[f"{h[0]}-{i}" for i, h in enumerate(HOLDS)])
def test_holds(name: str, expect: Dict[str, Any], values: tuple, step: int, ok: bool) -> None:
    assert template(name).holds(expect, values, step) is ok


# template, expect, violating values, step, span -> observed text, deviation
OBSERVED: List[tuple] = [
    ("range", {"min": 0.0, "max": 1.0}, (3.0,), 0, (0.2, 0.5), "3 (6x the reference maximum 0.5)", 2.0),
    ("magnitude", {"min": 0.1, "max": 10.0}, (0.001,), 0, (1.0, 2.0), "0.001 (1/1e+03 of the reference minimum 1)",
     0.01),
    ("all_none", {"quantifier": "all"}, (0.25,), 0, None, "0.25", 0.75),
    ("ratio", {"min": 0.9, "max": 1.1}, (128.0, 10.0), 0, None, "128 / 10 = 12.8", 1.0),
    ("equal", {"offset": 0.0, "tolerance": 0.1}, (0.9, 0.4), 0, None, "0.9 - 0.4 = 0.5", 1.0),
    ("trend", {"direction": "decreasing", "min_change": 0.1}, (list(enumerate([4.0] * 6)),), 5, None,
     "changed +0.0% (4 -> 4)", 1.0),
    ("schedule", {"points": [[0, 1.0, 1.0], [10, 0.1, 0.1]], "factor": 3.0}, (1.0,), 12, None,
     "1 (10x the reference's 0.1 at step 10)", 1.0),
]


@pytest.mark.parametrize("name, expect, values, step, span, text, deviation", OBSERVED,
                         ids=[o[0] for o in OBSERVED])
def test_a_violation_reads_as_what_was_seen(name: str, expect: Dict[str, Any], values: tuple, step: int,
                                            span: Any, text: str, deviation: float) -> None:
    cls = template(name)
    assert not cls.holds(expect, values, step)
    assert cls.observed(expect, values, step, span) == text
    assert cls.deviation(expect, values) == pytest.approx(deviation, rel=1e-2)


def test_spans_read_as_what_the_reference_showed() -> None:
    assert template("range").describe_span([0.5, 2.0]) == "ranged over [0.5, 2]"
    assert template("constant").describe_span(["3x32x32"]) == "was 3x32x32"
    assert template("one_of").describe_span(["a", "b"]) == "took the values a, b"
    assert template("trend").describe_span([-0.5, -0.2]) == "changed by -50.0% to -20.0% over the window"
    assert template("disjoint").describe_span(None) == "held"


def test_every_template_implements_the_protocol_and_declares_what_it_fits() -> None:
    """A new template is checked against the registry, the policy and the file format."""
    for name, cls in known_templates().items():
        assert issubclass(cls, Template) and cls.NAME == name
        for method in ("fit", "holds", "expected"):
            assert getattr(cls, method).__func__ is not getattr(Template, method).__func__, (name, method)
        assert cls.ARITY in (1, 2) and (cls.ARITY == 1) == (cls.OPERATOR == "")


def test_the_policy_names_registered_templates_with_parameters_they_take() -> None:
    def accepts(name: str, params: Dict[str, Any]) -> None:
        signature = inspect.signature(template(name).fit)
        unknown = set(params) - set(signature.parameters)
        assert not unknown, f"{name}.fit takes no {sorted(unknown)}"

    kinds = {k.kind for _, _, k in _RULES}
    assert kinds - {"skip"} <= set(policy.CANDIDATES), kinds - set(policy.CANDIDATES)
    for candidates in policy.CANDIDATES.values():
        for c in candidates:
            while c is not None:
                accepts(c.template, c.params)
                assert c.window in (policy.OPEN, policy.TRACED, policy.TRACED_FOR_WARNINGS, policy.TRACED_UNLESS_ONCE)
                c = c.fallback
    for rel in policy.RELATIONS:
        assert template(rel.template).ARITY == 2
        accepts(rel.template, {"floor": rel.floor})


def test_every_cause_family_has_a_fix_hint() -> None:
    families = {k.family for _, _, k in _RULES} | set(CAUSAL_EDGES) | {e for es in CAUSAL_EDGES.values() for e in es}
    families -= {"tracer", "other", "activations"}  # never mined
    assert families <= set(HINTS), sorted(families - set(HINTS))


def test_fitted_expectations_are_what_the_file_format_declares() -> None:
    """What `fit` writes into `expect` is exactly the template's EXPECT fields."""
    for name, params, runs, learned in FITS:
        if isinstance(learned, dict):
            fields = template(name).EXPECT
            required = {k for k, f in fields.items() if f.required}
            assert required <= set(learned) <= set(fields), name
            assert all(fields[k].accepts(v) for k, v in learned.items()), (name, learned)


# -- consequence envelopes -----------------------------------------------------------------
def falling(start: float, rate: float, steps: int = 30, wobble: float = 0.0) -> List[float]:
    """A loss curve start * rate**step, with a deterministic +-wobble (relative) per step."""
    return [start * rate ** s * (1 + wobble * (-1) ** s) for s in range(steps)]


def pairs(values: Sequence[float]) -> List[tuple]:
    """(step, value) pairs sampled as a check observes them (every step before 5, then every 5th)."""
    return [(s, v) for s, v in enumerate(values) if s < 5 or s % 5 == 0]


def test_progress_fails_a_flat_loss_and_a_leaking_one_but_not_a_slower_one() -> None:
    progress = template("progress")
    fit = progress.fit(sample(falling(2.3, 0.97), falling(2.4, 0.968), falling(2.2, 0.972)))
    assert isinstance(fit, Fit) and 0 < fit.expect["min"] < fit.expect["max"] < 1
    e = fit.expect
    assert not progress.holds(e, (pairs(falling(2.3, 1.0)),))      # a loss that does not fall
    assert not progress.holds(e, (pairs(falling(2.3, 0.75)),))     # falls to 0.1 % of its start
    slower = (pairs(falling(2.3, 0.985)),)                         # falls half as fast: fine
    assert progress.holds(e, slower) and progress.margin(e, slower) > 1
    assert "ended at 1x its start" in progress.observed(e, (pairs(falling(2.3, 1.0)),), 29, fit.support_span)


def test_progress_learns_no_lower_bound_on_the_fall_when_the_reference_barely_moves() -> None:
    # each reference run falls ~5 % while the batch-to-batch noise is +-10 %: within the noise
    runs = [falling(2.3, 0.998, wobble=0.1), falling(2.3, 0.998, wobble=0.1), falling(2.4, 0.998, wobble=0.1)]
    fit = template("progress").fit(sample(*runs))
    assert isinstance(fit, Fit) and fit.expect["max"] is None
    assert template("progress").holds(fit.expect, (pairs(falling(2.3, 1.0)),))


def test_level_catches_collapsed_and_exploded_updates() -> None:
    level = template("level")
    fit = level.fit(sample([0.01, 0.012, 0.009, 0.011] * 8, [0.011, 0.01, 0.012, 0.009] * 8, [0.01] * 32))
    assert isinstance(fit, Fit)
    e = fit.expect
    assert level.holds(e, (pairs([0.003] * 30),))                  # 3x smaller: a change, not a collapse
    assert not level.holds(e, (pairs([0.0001] * 30),))             # 100x smaller: starved updates
    assert not level.holds(e, (pairs([0.0] * 30),))                # no update at all
    assert not level.holds(e, (pairs([1.0] * 30),))                # exploded
    assert "1/100 of the reference's smallest" in level.observed(e, (pairs([0.0001] * 30),), 29, fit.support_span)


def test_ceiling_compares_the_learning_rate_with_the_reference_at_the_same_step() -> None:
    warmup = [0.1 * min(1.0, (s + 1) / 5) for s in range(30)]     # 5 warm-up steps to 0.1
    fit = template("ceiling").fit(sample(warmup, warmup, warmup), factor=3.0)
    assert isinstance(fit, Fit)
    ceiling, e = template("ceiling"), fit.expect
    assert not ceiling.holds(e, (0.1,), 0)                         # no warm-up: 5x at step 0
    assert ceiling.holds(e, (0.1,), 10) and ceiling.holds(e, (0.004,), 0)
    assert ceiling.margin(e, (0.05,), 10) == pytest.approx(6.0)
    assert ceiling.observed(e, (0.1,), 0) == "0.1 (5x the reference's 0.02 at step 0)"
