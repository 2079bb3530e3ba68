"""Quality: known silent bugs injected into a small pipeline are found with the right root
cause at the first steps; valid changes and a fresh seed stay clean. Independent of the
corpus (which has its own end-to-end test)."""
from __future__ import annotations

import contextlib
import io
from typing import List

import pytest

from invariants.check import Checker
from invariants.explain import explain
from invariants.mine import mine
from invariants.model import InvariantSet
from invariants.app.workflow import CHECK_SAMPLING
from tests.conftest import SCRIPTS
from tracer.runner import run_script
from tracer.session import TraceConfig

PLAIN = str(SCRIPTS / "plain_train.py")
STEPS = 30


def _check(invariants: InvariantSet, args: List[str], seed_offset: int = 999):
    checker = Checker(invariants)
    with contextlib.redirect_stdout(io.StringIO()):
        # the sampling `invar check` uses: dense for the first steps only
        cfg = TraceConfig(steps=STEPS, dense_steps=CHECK_SAMPLING.dense, sample_every=CHECK_SAMPLING.every)
        res = run_script(PLAIN, args, cfg, checker.feed, seed_offset=seed_offset)
    checker.finish()
    assert res.status == "budget", res.error
    violations = list(checker.violations.values())
    return violations, explain(violations)


@pytest.fixture(scope="module")
def invariants() -> InvariantSet:
    runs = []
    with contextlib.redirect_stdout(io.StringIO()):
        for i in range(3):
            rows: list = []
            run_script(PLAIN, [], TraceConfig(steps=STEPS), rows.extend, seed_offset=i * 101)
            runs.append(rows)
    inv, result = mine(runs)
    assert result.suppressed > 0 and result.discarded
    return inv


@pytest.mark.quality
@pytest.mark.parametrize("args", [[], ["--functional"], ["--batch", "24"], ["--lr-scale", "1.5"],
                                  ["--zero-grad-after-forward"]],
                         ids=["new-seed", "functional-loss", "batch-24", "lr-x1.5", "zero-grad-after-forward"])
def test_valid_changes_have_no_errors(invariants: InvariantSet, args: List[str]) -> None:
    violations, _ = _check(invariants, args)
    assert [v for v in violations if v.severity == "error"] == []


@pytest.mark.quality
@pytest.mark.parametrize("args, family, locus, max_step", [
    (["--freeze"], "frozen", "features.0", 0),
    (["--late-head"], "not_in_optimizer", "head", 0),
    (["--detach-features"], "no_gradient", "features.0", 0),
    (["--no-zero-grad"], "stale_gradients", None, 1),
    (["--eval-scale", "3"], "eval_input_mismatch", None, 0),
    (["--upsample", "4"], "input_size", None, 0),
    (["--classes", "16"], "output_width", None, 0),
    (["--overlap"], "leakage", None, 0),
    (["--batch", "2"], "batch_size", None, 0),
    (["--lr-scale", "20"], "learning_rate", None, 0),
    (["--no-eval-mode"], "eval_mode", None, STEPS),
    (["--train-in-eval-mode"], "eval_mode", None, 0),
    (["--lr-step-per-batch"], "learning_rate", None, 10),
    (["--dead-units"], "dead_units", "features.2", 0),
    # both splits rescaled alike: the training data's scale, not an eval/train mismatch
    (["--scale-all", "255"], "input_scale", None, 0),
    (["--sorted"], "data_order", None, 1),
], ids=lambda a: a if isinstance(a, str) else None)
def test_bug_is_found_with_its_root_cause(invariants: InvariantSet, args: List[str], family: str,
                                           locus: str, max_step: int) -> None:
    violations, causes = _check(invariants, args)
    assert causes, f"{args}: nothing reported"
    top = causes[0]
    assert top.severity == "error"
    assert top.family == family, [(c.family, c.summary) for c in causes]
    if locus:
        assert locus in (top.locus or "")
    assert min(v.step for v in top.violations if v.family == family) <= max_step


def test_a_flat_loss_is_reported_when_check_observed_most_of_the_window() -> None:
    # check observes every 5th step after the first five, so a 30-step run's last loss is
    # seen at step 25 while the reference's trend window ends at 29.
    from invariants.model import Invariant, Support, When
    trend = Invariant(id="trend:loss.value@train", template="trend", target=("loss.value",),
                      expect={"direction": "decreasing", "min_change": 0.2}, when=When("train", (0, 29)),
                      severity="warning", status="proposed", support=Support(3, 90, None), why="falls")
    checker = Checker(InvariantSet(schema=1, meta={}, invariants=(trend,)))
    checker.feed([(s, "train", "loss.value", 1.0, None) for s in (0, 1, 2, 3, 4, 5, 10, 15, 20, 25)])
    assert checker.violations == {}
    assert [v.id for v in checker.finish()] == ["trend:loss.value@train"]
