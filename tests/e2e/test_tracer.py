"""The tracer observes without changing anything, survives its own faults, and records
what docs/observations.md promises."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import SCRIPTS, run_invar
from tracer import stats
from tracer.runner import run_script
from tracer.session import TraceConfig
from invariants.app.store import Store

PLAIN = str(SCRIPTS / "plain_train.py")


def _rows(*args: str, steps: int = 0, **kw):
    rows = []
    res = run_script(PLAIN, list(args), TraceConfig(steps=steps), rows.extend, **kw)
    return res, rows


def _values(rows, variable, phase="train"):
    return [r[3] if r[3] is not None else r[4] for r in rows if r[2] == variable and r[1] == phase]


# aot_eager: torch.compile's own tracing and AOTAutograd (the tracer must be absent from
# both) without inductor's C++ build, which the slow group adds.
@pytest.mark.parametrize("compiled", [[], ["--compile", "aot_eager"],
                                      pytest.param(["--compile", "inductor"], marks=pytest.mark.slow)],
                         ids=["eager", "compiled", "inductor"])
def test_traced_run_is_bitwise_identical_to_untraced(tmp_path: Path, store: Path, compiled: list) -> None:
    plain, traced = tmp_path / "plain.pt", tmp_path / "traced.pt"
    subprocess.run([sys.executable, PLAIN, "--out", str(plain), *compiled], check=True, capture_output=True,
                   cwd=SCRIPTS)
    # every step observed (trace) and most lifted (check's sampling): both must leave the run alone
    for sampling in ([], ["--dense-steps", "2", "--sample-every", "5"]):
        r = run_invar("trace", PLAIN, "--steps", "0", "--store", str(store), *sampling, "--",
                      "--out", str(traced), *compiled)
        assert r.returncode == 0, r.stderr
        _assert_same_parameters(plain, traced)


def _assert_same_parameters(plain: Path, traced: Path) -> None:
    a, b = torch.load(plain), torch.load(traced)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        assert a[k].numpy().tobytes() == b[k].numpy().tobytes(), k


def test_observer_fault_never_reaches_the_script(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(x):
        raise ValueError("observer bug")
    monkeypatch.setattr(stats, "input_stats", broken)
    res, rows = _rows("--epochs", "1")
    assert res.status == "complete"
    assert res.steps == 12
    faults = _values(rows, "tracer.fault")
    assert faults and "observer bug" in faults[0]
    assert _values(rows, "block.head.grad_norm")  # other observers keep working


def test_script_crash_exits_3_keeps_partial_trace_and_prints_traceback(store: Path) -> None:
    r = run_invar("trace", PLAIN, "--store", str(store), "--", "--crash-at", "3")
    assert r.returncode == 3, r.stderr
    assert "RuntimeError: boom at step 3" in r.stderr
    assert "plain_train.py" in r.stderr and "tracer/runner.py" not in r.stderr
    with Store(store) as s:
        (run,) = s.runs()
        assert run.status == "crashed" and run.steps == 3
        assert s.observation_count(run.id) > 100


def test_script_features_are_supported() -> None:
    # __main__ guard, argparse after --, sibling import, functional loss, two param groups,
    # a shape-dependent `if` (fx fails, torch.export captures the graph), sys.exit(0).
    from tracer.graph import GraphCapture
    graph = GraphCapture()
    res, rows = _rows("--functional", "--exit-zero", extensions=[graph])
    assert res.status == "complete", res.error
    assert res.steps == 12
    assert _values(rows, "optim.groups")[0] == 2.0
    assert _values(rows, "optim.g1.lr")[0] == 0.1
    assert _values(rows, "loss.value")
    assert _values(rows, "label.max")
    assert "torch.export graph" in graph.summary() and "control flow" in graph.summary()
    assert graph.record is not None and graph.record.kind == "export" and res.root_model


def test_step_budget_and_recorded_variables() -> None:
    res, rows = _rows("--overlap", steps=5)
    assert res.status == "budget" and res.steps == 5
    assert _values(rows, "input.shape")[0] == "3x8x8"
    assert _values(rows, "output.width")[0] == 4.0
    assert _values(rows, "block.features.0.trainable_fraction") == [1.0] * 5
    assert _values(rows, "block.head.in_optimizer_fraction") == [1.0] * 5
    assert _values(rows, "block.head.no_grad_fraction") == [0.0] * 5
    assert all(v > 0 for v in _values(rows, "block.head.update_ratio"))
    assert _values(rows, "data.overlap", "eval") == [128.0]  # Subset indices over one base
    assert _values(rows, "loader.train.batch_size")[0] == 32.0
    assert _values(rows, "act.features.2.dead_fraction")
    assert max(r[0] for r in rows) == 4


def test_no_overlap_when_splits_are_disjoint() -> None:
    _, rows = _rows(steps=2)
    assert _values(rows, "data.overlap", "eval") == [0.0]


@pytest.mark.parametrize("case, code, message", [
    ("missing", 2, "no such script"),
    ("syntax", 4, "SyntaxError"),
    ("unwritable", 5, "cannot create or write the store"),
    ("corrupt", 6, "not a usable SQLite database"),
])
def test_bad_input_gives_one_line_and_distinct_exit(tmp_path: Path, case: str, code: int, message: str) -> None:
    script, store = PLAIN, tmp_path / "store"
    if case == "missing":
        script = str(tmp_path / "nope.py")
    elif case == "syntax":
        script = str(tmp_path / "bad.py")
        Path(script).write_text("def broken(:\n    pass\n")
    elif case == "unwritable":
        (tmp_path / "file").write_text("not a directory")
        store = tmp_path / "file" / "store"
    elif case == "corrupt":
        store.mkdir()
        (store / "traces.sqlite").write_bytes(b"garbage" * 1000)
    r = run_invar("trace", script, "--steps", "1", "--store", str(store))
    assert r.returncode == code, (r.returncode, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_runs_and_show(store: Path) -> None:
    r = run_invar("trace", PLAIN, "--steps", "2", "--label", "smoke", "--store", str(store))
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.split()[1]
    listing = run_invar("runs", "--store", str(store))
    assert run_id in listing.stdout and "smoke" in listing.stdout
    shown = run_invar("show", run_id[:17], "--store", str(store))
    assert shown.returncode == 0 and "block:" in shown.stdout and "optim:" in shown.stdout


def test_store_accepts_concurrent_writers(tmp_path: Path) -> None:
    # The writers open the new store at the same instant (as the ranks of a torchrun launch
    # do): the switch to WAL mode is contended, and SQLite does not wait for it by itself.
    import time
    code = (
        "import sys, time; from invariants.app.store import Store\n"
        "while time.time() < float(sys.argv[3]): pass\n"
        "s = Store(sys.argv[1]); rid = s.new_run('x.py', [], label=sys.argv[2])\n"
        "for k in range(20): s.add_observations(rid, [(k, 'train', 'v', float(i), None) for i in range(50)])\n"
        "s.finish_run(rid, 'complete', 20)\n")
    for round_ in range(3):
        store, start = tmp_path / f"st{round_}", time.time() + 2.0
        procs = [subprocess.Popen([sys.executable, "-c", code, str(store), str(i), str(start)],
                                  cwd=Path(__file__).resolve().parents[1], stderr=subprocess.PIPE, text=True)
                 for i in range(6)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), "\n".join(errors)
        with Store(store) as s:
            runs = s.runs()
            assert len(runs) == 6
            assert all(s.observation_count(r.id) == 1000 for r in runs)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch 2.13 deprecates torch.jit.script
def test_extensions_see_the_run_in_order_and_their_faults_stay_inside() -> None:
    from tracer.extension import Extension

    class Watcher(Extension):
        name = "watcher"

        def __init__(self) -> None:
            self.events: list = []

        def attach(self, session) -> None:
            self.events.append("attach")

        def on_first_call(self, session, root, args, kwargs) -> None:
            self.events.append("first")

        def on_input(self, session, root, args, kwargs) -> None:
            self.events.append("input")

        def on_output(self, session, root, output) -> None:
            self.events.append("output")

        def on_step(self, session, optimizer) -> None:
            self.events.append("step")
            session.record("train", "watch.step", session.step)

        def on_end(self, session) -> None:
            self.events.append("end")

        def facts(self) -> dict:
            return {"steps_watched": self.events.count("step")}

    class Broken(Extension):
        name = "broken"

        def on_input(self, session, root, args, kwargs) -> None:
            raise ValueError("extension bug")

    watcher = Watcher()
    res, rows = _rows(steps=2, extensions=[Broken(), watcher])
    assert res.status == "budget" and res.steps == 2
    assert watcher.events[:4] == ["attach", "first", "input", "output"] and watcher.events[-1] == "end"
    assert _values(rows, "watch.step") == [0.0, 1.0]
    assert res.faults == ["broken: ValueError: extension bug"]  # recorded once, then silenced
    assert res.facts == {"steps_watched": 2}
    assert _values(rows, "input.shape")  # the built-in observers are not affected
