"""The HTML report, the review page and the TensorBoard logs, rendered from data: a store
built in the test (small observation tables, no script runs), invariants mined from it and
checks evaluated on it."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from invariants import invfile
from invariants.app.store import Store
from invariants.check import Checker
from invariants.explain import explain
from invariants.mine import mine
from invariants.model import InvariantSet
from invariants.report import CheckReport
from tests.conftest import SCRIPTS
from tests.unit.test_cli_usage import invar
from tests.unit.tables import STEPS, reference_run

pytest.importorskip("matplotlib", reason="the HTML report needs the report extra: pip install 'torch-invar[report]'")

from invariants.app import outputs  # noqa: E402
from invariants.app.html import figures  # noqa: E402
from invariants.app.html.bounds import Context, bounds  # noqa: E402
from invariants.app.html.check_page import render_check_page  # noqa: E402
from invariants.app.html.review_page import render_review_page  # noqa: E402
from invariants.app.html.traces import Traces, RunSeries  # noqa: E402

PLAIN = str(SCRIPTS / "plain_train.py")
# Anything a browser would fetch: a URL in an attribute or CSS, a script, an import.
EXTERNAL = re.compile(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|<script|<link|<img|<iframe|@import|url\((?!#)", re.I)
GRADIENTS = {"block.fc.grad_norm": lambda s: 1.0 + 0.05 * s}


def _store_run(store: Store, label: str, rows: List[Any]) -> str:
    run = store.new_run(PLAIN, [], label=label)
    store.add_observations(run, rows)
    store.finish_run(run, "budget", STEPS)
    return run


@pytest.fixture
def world(tmp_path: Path) -> Tuple[Path, InvariantSet]:
    """A store with three reference runs and the invariants mined from them."""
    refs = [reference_run(seed, **GRADIENTS) for seed in range(3)]
    with Store(tmp_path / "store") as s:
        ids = [_store_run(s, f"infer {i + 1}/3", rows) for i, rows in enumerate(refs)]
    invs, _ = mine(refs, {"script": PLAIN, "steps": STEPS, "run_ids": ids})
    invfile.dump(invs, tmp_path / "inv.yaml")
    return tmp_path, invs


def _check(world: Tuple[Path, InvariantSet], **changes: Any) -> CheckReport:
    """A checked run with `changes` stored and evaluated, as `invar check` would report it."""
    root, invs = world
    rows = reference_run(5, **{**GRADIENTS, **changes})
    with Store(root / "store") as s:
        run = _store_run(s, "check", rows)
    checker = Checker(invs)
    checker.feed(rows)
    checker.finish()
    violations = sorted(checker.violations.values(), key=lambda v: (v.step, v.id))
    return CheckReport(script="bug.py", against=str(root / "inv.yaml"), run_id=run, run_status="budget",
                       steps=STEPS, invariants_total=len(invs.invariants), invariants_checked=len(checker.checked),
                       invariants_disabled=0, violations=violations, causes=explain(violations), seconds=1.0)


FROZEN = {"block.fc.trainable_fraction": lambda s: 0.0, "loss.value": lambda s: 2.3}


def _section(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}">')
    return page[start:page.index("</section>", start)]


def test_a_failed_check_leads_with_its_root_cause_and_plots_the_violated_variable(world: Any) -> None:
    r = _check(world, **FROZEN)
    assert r.verdict == "FAILED"
    started = time.perf_counter()
    page = render_check_page(r.to_json(), world[1], str(world[0] / "store"))
    print(f"check page: {len(page) / 1024:.0f} KiB in {time.perf_counter() - started:.2f} s")
    cause = r.causes[0]
    assert cause.family == "frozen"
    head = page[:page.index("<svg")]  # before the first plot: verdict, root cause, fix, step
    assert "FAILED" in head and "frozen" in head and "fix:" in head and "found at step 0" in head
    assert "unfreeze them" in head
    violations = _section(page, "violations")
    assert "block.fc.trainable_fraction (train)" in violations  # the plot of the violated variable
    assert "-envelope-" in violations and "-checked-" in violations  # its reference band and the run
    assert "violation (first step)" in violations
    assert "<svg" in _section(page, "blocks") and "<svg" in _section(page, "curves")
    assert "reference runs plotted: 3 of 3" in page


def test_the_page_is_self_contained(world: Any) -> None:
    page = render_check_page(_check(world, **FROZEN).to_json(), world[1], str(world[0] / "store"))
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "ids clash between inline figures"


def test_a_clean_check_says_clean_and_draws_the_curves(world: Any) -> None:
    r = _check(world)
    assert r.verdict == "ok"
    page = render_check_page(r.to_json(), world[1], str(world[0] / "store"))
    assert '<b>clean</b>' in _section(page, "causes").join(["", page[:page.index('id="causes"')]])
    curves = _section(page, "curves")
    assert "loss (train)" in curves and "learning rate" in curves and "-checked-" in curves
    assert "clean: no invariant violated" in _section(page, "causes")


def test_without_the_store_or_the_invariants_the_page_still_renders_and_says_why(world: Any, tmp_path: Path) -> None:
    doc = _check(world, **FROZEN).to_json()
    page = render_check_page(doc, world[1], str(tmp_path / "nowhere"))
    assert "no store at" in page
    assert "block.fc.trainable_fraction (train)" in _section(page, "violations")  # bounds and span still drawn
    bare = render_check_page(doc, None, str(world[0] / "store"), notes=["the invariant set could not be loaded"])
    assert "could not be loaded" in bare and "without the invariant set, plots show no bound" in bare
    assert "frozen" in bare[:bare.index("<svg")]


@pytest.mark.parametrize("template, expect, ctx, want", [
    ("range", {"min": 1.0, "max": None}, Context([]), [1.0]),
    ("magnitude", {"min": 0.1, "max": 10.0}, Context([]), [0.1, 10.0]),
    ("all_none", {"quantifier": "all"}, Context([]), [1.0]),
    ("constant", {"value": "3x8x8"}, Context([]), []),
    ("one_of", {"values": [16.0, 32.0]}, Context([]), [16.0, 32.0]),
    ("disjoint", {}, Context([]), [0.0]),
    ("progress", {"min": 0.1, "max": 0.5}, Context([(0, 2.0), (1, 2.0), (2, 2.0), (3, 1.0)]), [0.2, 1.0]),
    ("trend", {"direction": "decreasing", "min_change": 0.25}, Context([(0, 4.0), (1, 4.0), (2, 4.0)]), [3.0]),
    ("schedule", {"points": [[0, 0.1, 0.2], [5, 0.01, 0.02]], "factor": 2.0}, Context([]),
     [[(0, 0.05), (5, 0.005)], [(0, 0.4), (5, 0.04)]]),
    ("ceiling", {"points": [[0, 0.1]], "factor": 3.0}, Context([]), [[(0, 0.30000000000000004)]]),
    ("ratio", {"min": 1.0, "max": 2.0}, Context([(0, 5.0)], [(0, 10.0)]), [[(0, 10.0)], [(0, 20.0)]]),
    ("equal", {"offset": 1.0, "tolerance": 0.5}, Context([(0, 5.0)], [(0, 3.0)]), [[(0, 3.5)], [(0, 4.5)]]),
])
def test_bound_lines_per_template(template: str, expect: Dict[str, Any], ctx: Context, want: List[Any]) -> None:
    got = bounds(template, expect, ctx)
    assert got is not None
    assert [b.value if b.value is not None else list(b.points) for b in got] == want


def test_a_template_without_a_rule_draws_no_bound_and_a_broken_expect_no_line() -> None:
    assert bounds("nosuch", {}, Context([])) is None
    assert bounds("schedule", {"points": "garbage", "factor": None}, Context([])) == []


def test_the_block_panel_scales_to_200_blocks() -> None:
    names = [f"encoder.layers.{i}.mlp" for i in range(200)]
    rows = [figures.BlockRow(n, {"trainable_fraction": (1.0, 1.0), "grad_norm": (0.5 + i / 400, 0.9 + i / 400)},
                             {"trainable_fraction": 0.0 if i == 7 else 1.0, "grad_norm": 0.7, "update_ratio": None},
                             flagged=i == 7) for i, n in enumerate(names)]
    started = time.perf_counter()
    svg = figures.to_svg(figures.blocks_figure(rows, (("trainable_fraction", "trainable"), ("grad_norm", "grad"),
                                                      ("update_ratio", "update"))), "b")
    print(f"200-block panel: {len(svg) / 1024:.0f} KiB in {time.perf_counter() - started:.2f} s")
    assert all(f">{n}<" in svg for n in names)  # every block is named (text, not glyph paths)
    assert len(svg) < 1_000_000


def test_review_page_plots_reference_envelopes_per_block(world: Any, tmp_path: Path) -> None:
    root, invs = world
    page = render_review_page(invs, str(root / "store"))
    assert "Block fc" in page and "block.fc.grad_norm (train)" in page and "-envelope-" in page
    assert "Blocks at a glance" in page and "invariant bounds" in _section(page, "blocks")
    assert not EXTERNAL.search(page)
    bare = render_review_page(invs, str(tmp_path / "nowhere"))
    assert "no store at" in bare and "block.fc.grad_norm (train)" in bare  # the fitted span instead


def test_the_review_page_of_many_blocks_plots_them_in_one_overview(monkeypatch: pytest.MonkeyPatch) -> None:
    from invariants.app.html import review_page
    from invariants.model import Invariant, Support, When
    blocks = [f"layers.{i}" for i in range(60)]  # past the blocks that get per-step plots
    rows = [(s, "train", f"block.{b}.grad_norm", 1.0 + 0.01 * s + 0.001 * i, None)
            for i, b in enumerate(blocks) for s in range(30)]
    monkeypatch.setattr(review_page, "load_traces", lambda *a: Traces(references=[RunSeries.of("r", rows)]))
    invs = InvariantSet(1, {"script": "big.py"}, tuple(
        Invariant(id=f"range:block.{b}.grad_norm@train", template="range", target=(f"block.{b}.grad_norm",),
                  expect={"min": 0.5, "max": 2.0}, when=When(), severity="warning", status="proposed",
                  support=Support(1, 30, (1.0, 1.3)), why="w", locus=b) for b in blocks))
    started = time.perf_counter()
    page = review_page.render_review_page(invs, "store")
    print(f"60-block review page: {len(page) / 1024:.0f} KiB in {time.perf_counter() - started:.2f} s")
    overview = _section(page, "blocks")
    assert all(f">{b}<" in overview for b in blocks) and page.count("<svg") == 1  # one figure, every block
    assert "per-step envelopes are plotted for the whole run only" in overview and len(page) < 2_000_000


def test_a_kept_report_renders_again_by_run_id_and_from_its_json(world: Any, capsys: Any, tmp_path: Path) -> None:
    root, invs = world
    r = _check(world, **FROZEN)
    store = str(root / "store")
    assert outputs.keep(store, r.to_json(), invs) == []
    (root / "inv.yaml").unlink()  # the file may be gone: the store kept the invariants
    others = [i for i in invs.meta["run_ids"] if i.startswith(r.run_id[:-1])]
    prefix = r.run_id if others else r.run_id[:-1]  # a unique prefix works as the id
    code, _, err = invar(capsys, "report", prefix, "--store", store, "-o", str(tmp_path / "a.html"))
    assert code == 0, err
    page = (tmp_path / "a.html").read_text()
    assert "frozen" in page and "bound: expected == 1 (all)" in page
    code, out, _ = invar(capsys, "report", r.run_id, "--store", store, "--format", "json")
    assert code == 0 and json.loads(out)["summary"]["verdict"] == "FAILED"
    (tmp_path / "r.json").write_text(out)
    code, _, err = invar(capsys, "report", str(tmp_path / "r.json"), "--store", store, "-o", str(tmp_path / "b.html"))
    assert code == 0 and "could not be loaded" in (tmp_path / "b.html").read_text()  # against was deleted


def test_kept_invariants_that_no_longer_load_fall_back_to_the_reports_against(world: Any, capsys: Any,
                                                                               tmp_path: Path) -> None:
    root, invs = world
    r = _check(world, **FROZEN)
    store = str(root / "store")
    outputs.keep(store, r.to_json(), invs)
    with Store(store) as s:  # as an older invar might have kept them
        s.set_fact(r.run_id, outputs.INVARIANTS_FACT, {"schema": 1, "invariants": [{"id": "x"}]})
    code, _, err = invar(capsys, "report", r.run_id, "--store", store, "-o", str(tmp_path / "a.html"))
    page = (tmp_path / "a.html").read_text()
    assert code == 0, err
    assert "do not load" in page and "bound: expected == 1 (all)" in page  # bounds from the report's own file


@pytest.mark.parametrize("argv, fragment", [
    (["report", "nosuch"], "no run 'nosuch'"),
    (["report", "{json}"], "not a check report"),
    (["report", "{yaml}"], "is not JSON"),
    (["report", "{ref}"], "holds no check report"),
    (["report", "{good}", "--against", "missing.yaml"], "no such file or invariant set"),
    (["report", "{mangled}"], "violations[0] lacks step, severity"),
])
def test_report_refuses_what_it_cannot_render_with_exit_2(world: Any, capsys: Any, tmp_path: Path,
                                                          argv: List[str], fragment: str) -> None:
    root, invs = world
    (tmp_path / "x.json").write_text('{"summary": 1}')
    (tmp_path / "good.json").write_text('{"summary": {}, "violations": []}')
    (tmp_path / "mangled.json").write_text('{"summary": {}, "violations": [{"id": "a", "target": ["x"], '
                                           '"phase": "train", "observed": "1", "expected": "0"}]}')
    subs = {"{json}": str(tmp_path / "x.json"), "{good}": str(tmp_path / "good.json"), "{yaml}": str(root / "inv.yaml"),
            "{ref}": invs.meta["run_ids"][0], "{mangled}": str(tmp_path / "mangled.json")}
    code, _, err = invar(capsys, *[subs.get(a, a) for a in argv], "--store", str(root / "store"))
    assert code == 2 and fragment in err, err


def test_html_without_matplotlib_exits_2_before_anything_runs(world: Any, capsys: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    root, _ = world
    for argv in (["check", PLAIN, "--against", str(root / "inv.yaml"), "--format", "html"],
                 ["export", str(root / "inv.yaml"), "-o", str(root / "review.html")],
                 ["report", "anything"]):
        code, _, err = invar(capsys, *argv, "--store", str(root / "store"))
        assert code == 2 and "pip install 'torch-invar[report]'" in err, (argv, err)
    assert not (root / "review.html").exists()


def test_tensorboard_scalars_average_a_steps_values_and_the_verdict_names_cause_and_fix(world: Any) -> None:
    from invariants.app.tensorboard_log import scalars, verdict_text, violation_text
    got = scalars([(3, "eval", "loss.value", 1.0, None), (3, "eval", "loss.value", 3.0, None),
                   (0, "train", "input.shape", None, "3x8x8")])
    assert got == {("eval", "loss.value"): {3: 2.0}}  # text is no scalar
    doc = _check(world, **FROZEN).to_json()
    verdict = verdict_text(doc)
    assert verdict.startswith("**FAILED**") and "frozen" in verdict and "unfreeze" in verdict
    assert "block.fc.trainable_fraction" in violation_text(doc["violations"][0])


def test_the_models_structural_diff_is_shown_with_the_static_phase(world: Any) -> None:
    doc = _check(world, **FROZEN).to_json()
    doc["structural_diff"] = {"total": 1, "changes": [{"block": "head", "fact": "ops", "change": "+ softmax (after `9`)",
                                                       "severity": "error"}]}
    static = _section(render_check_page(doc, world[1], str(world[0] / "store")), "static")
    assert "Model graph against the reference" in static and "+ softmax (after `9`)" in static


def test_an_instance_of_a_quantified_invariant_is_drawn_with_the_entrys_bound(world: Any) -> None:
    from invariants.app.html.evidence import invariant_of, violation_panel
    root, invs = world
    entry = next(i for i in invs.invariants if i.template == "all_none")
    by_id = invs.by_id()
    assert invariant_of(f"{entry.id}[fc]", by_id) is entry and invariant_of(f"{entry.id}[fc", by_id) is None
    v = {"id": f"{entry.id}[fc]", "target": list(entry.target), "phase": "train", "step": 0, "observed": "0"}
    panel = violation_panel([v], by_id, Traces())
    assert panel is not None and panel.bounds and panel.mark_value == 0.0


def test_run_series_keeps_every_value_of_a_step_and_averages_them() -> None:
    s = RunSeries.of("r", [(3, "eval", "loss.value", 1.0, None), (3, "eval", "loss.value", 3.0, None),
                           (0, "train", "input.shape", None, "3x8x8")])
    assert s.points("eval", "loss.value") == [(3, 2.0)] and len(s.raw("eval", "loss.value")) == 2
    t = Traces(references=[s, RunSeries.of("q", [(3, "eval", "loss.value", 5.0, None)])])
    env = t.envelope("eval", "loss.value")
    assert env is not None and (env.low, env.high, env.runs) == ((1.0,), (5.0,), 2)
    assert t.envelope("train", "loss.value") is None
