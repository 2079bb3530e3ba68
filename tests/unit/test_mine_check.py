"""Mining and checking on small observation tables: which invariants a reference yields,
which candidates are discarded or suppressed and why, and what a changed run violates."""
from __future__ import annotations

from typing import List

import pytest

from invariants.check import Checker
from invariants.explain import explain
from invariants.mine import mine
from invariants.model import InvariantSet
from invariants.observation import Observation
from tests.unit.tables import STEPS, reference_run

@pytest.fixture(scope="module")
def mined() -> tuple:
    return mine([reference_run(seed) for seed in range(3)], {"script": "train.py"})


def test_each_kind_of_variable_gets_its_templates(mined: tuple) -> None:
    invs, _ = mined
    by_id = {i.id: i for i in invs.invariants}
    assert by_id["constant:input.shape@train"].expect == {"value": "3x8x8"}
    assert by_id["all_none:block.fc.trainable_fraction@train"].expect == {"quantifier": "all"}
    assert by_id["all_none:block.fc.no_grad_fraction@train"].expect == {"quantifier": "none"}
    assert by_id["all_none:block.fc.trainable_fraction@train"].locus == "fc"
    progress = by_id["progress:loss.value@train"]  # a consequence envelope: an error
    assert progress.severity == "error" and progress.when.steps == (0, STEPS - 1)
    assert progress.expect["max"] < 1 and progress.expect["min"] < progress.support.span[0]
    assert by_id["magnitude:optim.lr_max@train"].expect["min"] == 0.0  # a low learning rate is no error
    # dropout settings while training are configuration: a warning
    assert by_id["constant:model.dropout_active@train"].severity == "warning"
    # a once-per-run fact is justified by three runs of one observation each
    assert by_id["range:data.train.mean@train"].support.observations == 3
    assert by_id["range:input.mean@train"].severity == "error" and by_id["range:input.mean@train"].when.steps[1] is None


def test_discarded_and_implied_candidates_keep_their_reason(mined: tuple) -> None:
    _, result = mined
    why = dict(result.discarded)
    assert why["*:label.min@train"] == "not mined: recorded for reports only"
    assert why["schedule:optim.lr_max@train"] == "obvious: constant, the range covers it"
    assert why["constant:input.side@train"] == "implied by constant input.shape"
    assert result.suppressed == 1


def test_the_class_score_width_is_held_against_the_classes_seen(mined: tuple) -> None:
    invs, _ = mined
    ratio = {i.id: i for i in invs.invariants}["ratio:loss.class_width,label.classes_seen@train"]
    checker = Checker(InvariantSet(1, {}, (ratio,)))
    checker.feed(reference_run(1, **{"loss.class_width": lambda s: 128.0}))  # a 128-wide head for 10 classes
    v = checker.violations[ratio.id]
    assert (v.step, v.family, v.observed) == (0, "output_width", "128 / 10 = 12.8")


def test_the_same_reference_checks_clean_and_a_frozen_block_fails_at_step_0(mined: tuple) -> None:
    invs, _ = mined
    clean = Checker(invs)
    clean.feed(reference_run(1))
    clean.finish()
    assert not clean.violations and len(clean.checked) > 10

    frozen = Checker(invs)
    frozen.feed(reference_run(1, **{"block.fc.trainable_fraction": lambda s: 0.0,
                                    "loss.value": lambda s: 2.3}))
    frozen.finish()
    v = frozen.violations["all_none:block.fc.trainable_fraction@train"]
    assert (v.step, v.severity, v.family, v.locus, v.count) == (0, "error", "frozen", "fc", STEPS)
    assert v.observed == "0" and v.expected == "== 1 (all)"
    progress = frozen.violations["progress:loss.value@train"]  # decided once the window passed
    assert progress.step == STEPS - 1 and progress.observed.startswith("ended at 1x its start")
    causes = explain(sorted(frozen.violations.values(), key=lambda v: (v.step, v.id)))
    assert causes[0].family == "frozen" and {x.family for x in causes[0].violations} >= {"frozen", "loss_trend"}


def test_a_relation_reads_its_second_target_in_that_targets_phase() -> None:
    # The eval data's fraction in [0, 1] against the *training* data's, observed in train.
    refs = []
    for seed in range(3):
        refs.append([Observation(0, "train", "data.train.unit_fraction", 0.5 + 0.01 * seed, None),
                     Observation(0, "eval", "data.eval.unit_fraction", 0.52 + 0.01 * seed, None),
                     Observation(5, "eval", "data.eval.unit_fraction", 0.53 + 0.01 * seed, None)])
    invs, _ = mine(refs)
    rel = {i.id: i for i in invs.invariants}["equal:data.eval.unit_fraction,data.train.unit_fraction@eval"]
    assert rel.template == "equal" and rel.severity == "error"
    checker = Checker(InvariantSet(1, {}, (rel,)))
    checker.feed([Observation(0, "train", "data.train.unit_fraction", 0.5, None),
                  Observation(0, "eval", "data.eval.unit_fraction", 1.0, None)])  # normalised differently
    v = checker.violations[rel.id]
    assert v.family == "eval_input_mismatch" and v.observed == "1 - 0.5 = 0.5"


def test_disabled_invariants_are_not_evaluated(mined: tuple) -> None:
    invs, _ = mined
    target = "all_none:block.fc.trainable_fraction@train"
    checker = Checker(invs.with_status(target, "disabled"))
    checker.feed(reference_run(7, **{"block.fc.trainable_fraction": lambda s: 0.0}))
    assert target not in checker.violations and target not in checker.checked and checker.skipped == 1


def test_fail_fast_hears_of_each_invariant_once(mined: tuple) -> None:
    invs, _ = mined
    heard: List[str] = []
    checker = Checker(invs, on_violation=lambda v: heard.append(v.id))
    checker.feed(reference_run(7, **{"block.fc.trainable_fraction": lambda s: 0.5}))
    assert heard.count("all_none:block.fc.trainable_fraction@train") == 1


def test_a_drift_that_explains_a_failed_consequence_becomes_its_root_cause_and_an_error() -> None:
    # lr 1/50 of the reference's: a warning on its own (a schedule may start low) ...
    def slow(s: int) -> float:
        return 0.002

    invs = mine([reference_run(seed) for seed in range(3)])[0]
    low_lr = Checker(invs)
    low_lr.feed(reference_run(1, **{"optim.lr_max": slow}))
    low_lr.finish()
    causes = explain(list(low_lr.violations.values()))
    assert causes and all(v.severity == "warning" for c in causes for v in c.violations)
    # ... an error when the run then does not learn: the loss stays flat
    stuck = Checker(invs)
    stuck.feed(reference_run(1, **{"optim.lr_max": slow, "loss.value": lambda s: 2.3}))
    stuck.finish()
    root = explain(sorted(stuck.violations.values(), key=lambda v: (v.step, v.id)))[0]
    assert root.family == "learning_rate" and root.severity == "error"
    own = [v for v in root.violations if v.family == "learning_rate"]
    assert own and all(v.severity == "error" and v.escalated_by == "progress:loss.value@train" for v in own)
    assert "an error because it explains loss trend" in root.summary


def test_weight_decay_is_structure_only_where_the_reference_exempts_some_blocks() -> None:
    def run(seed: int, decay: dict) -> List[Observation]:
        return [Observation(s, "train", f"block.{b}.decay_fraction", v, None) for s in range(8)
                for b, v in decay.items()] + reference_run(seed)

    # a no-decay group for the norm: which blocks decay is the recipe's structure
    mixed = mine([run(seed, {"fc": 0.99, "norm": 0.0}) for seed in range(3)])[0]
    ids = {i.id for i in mixed.invariants}
    assert {"constant:block.fc.decay_fraction@train", "all_none:block.norm.decay_fraction@train"} <= ids
    checker = Checker(mixed)
    checker.feed(run(1, {"fc": 1.0, "norm": 1.0}))  # everything decayed
    assert checker.violations["all_none:block.norm.decay_fraction@train"].family == "weight_decay"
    # the same decay everywhere (or none): an optimizer-wide setting, not mined per block
    uniform, result = mine([run(seed, {"fc": 0.0, "norm": 0.0}) for seed in range(3)])
    assert not any("decay_fraction" in i.id for i in uniform.invariants)
    assert dict(result.discarded)["*:block.norm.decay_fraction@train"].startswith("not mined: every block")
