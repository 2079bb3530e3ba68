"""The tracer observes without changing anything, survives its own faults, and records
what docs/observations.md promises."""
from __future__ import annotations

import contextlib
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


def test_traced_run_is_bitwise_identical_to_untraced(tmp_path: Path, store: Path) -> None:
    plain, traced = tmp_path / "plain.pt", tmp_path / "traced.pt"
    subprocess.run([sys.executable, PLAIN, "--out", str(plain)], check=True, capture_output=True,
                   cwd=SCRIPTS)
    r = run_invar("trace", PLAIN, "--steps", "0", "--store", str(store), "--", "--out", str(traced))
    assert r.returncode == 0, r.stderr
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


def test_broadcast_detection() -> None:
    assert stats.broadcast_larger([8, 1], [8])
    assert not stats.broadcast_larger([8, 10], [8, 10])


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


class _FunctionalNet(torch.nn.Module):
    """Rectifiers called as functions, as a method and as a module."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(4, 8), torch.nn.Linear(8, 8)
        self.block = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.relu(self.fc1(x))
        h = self.fc2(h).relu()
        return self.head(self.block(h))


def _trace_steps(model: torch.nn.Module, steps: int, eval_mode: bool = False):
    from tracer.session import TraceSession
    rows: list = []
    with TraceSession(TraceConfig(), rows.extend):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)  # inside: the session learns of it
        if eval_mode:
            model.eval()
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(torch.randn(16, 4)), torch.randint(0, 2, (16,))).backward()
            opt.step()
    return rows


def test_functional_rectifiers_are_observed_once_each() -> None:
    rows = _trace_steps(_FunctionalNet(), 1)
    dead = sorted({r[2] for r in rows if r[2].endswith("dead_fraction")})
    # F.relu and x.relu() in the root's forward, the nn.ReLU module once (not again as a function)
    assert dead == ["act.F.relu1.dead_fraction", "act.F.relu2.dead_fraction", "act.block.1.dead_fraction"]


def test_training_in_eval_mode_is_recorded_as_training() -> None:
    # No loader and model.eval() left on: each forward is undecided until optimizer.step()
    # shows it was a training step.
    rows = _trace_steps(_FunctionalNet(), 3, eval_mode=True)
    assert _values(rows, "model.training") == [0.0, 0.0, 0.0]
    assert _values(rows, "model.train_mode_fraction") == [0.0, 0.0, 0.0]
    assert _values(rows, "input.shape", "eval") == []
    assert len(_values(rows, "loss.value")) == 3


def _train_then_evaluate(model: torch.nn.Module, session, steps: int, no_grad: bool) -> None:
    """Training steps on batches of 16, each followed by an evaluation on 8, no loaders."""
    with session:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(steps):
            model.train()
            opt.zero_grad()
            model(torch.randn(16, 4)).sum().backward()
            opt.step()
            model.eval()
            with torch.no_grad() if no_grad else contextlib.nullcontext():
                model(torch.randn(8, 4))


def test_eval_forward_with_gradients_stays_eval() -> None:
    from tracer.session import TraceSession
    model, rows = _FunctionalNet(), []
    _train_then_evaluate(model, TraceSession(TraceConfig(), rows.extend), 2, no_grad=False)
    assert _values(rows, "input.batch") == [16.0, 16.0]
    assert _values(rows, "input.batch", "eval") == [8.0, 8.0]


def test_module_hooks_are_lifted_only_for_unobserved_training_steps() -> None:
    # Every module call is slower while a global module hook exists, so an unobserved
    # training step runs without them; what follows its optimizer step (an evaluation
    # without a loader, at a step nobody samples) is still observed.
    import torch.nn.modules.module as module_mod
    from tracer.session import TraceSession
    hooked: list = []

    class Probe(torch.nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hooked.append((session.step, torch.is_grad_enabled(), bool(module_mod._global_forward_hooks)))
            return super().forward(x)

    model, rows = torch.nn.Sequential(Probe(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)), []
    session = TraceSession(TraceConfig(dense_steps=2, sample_every=3), rows.extend)
    _train_then_evaluate(model, session, 5, no_grad=True)
    # steps 0, 1 and 3 are observed; every evaluation is (the graph capture at step 0 aside)
    training = {step: on for step, grad, on in hooked if grad}
    assert training == {0: True, 1: True, 2: False, 3: True, 4: False}
    assert all(on for _, grad, on in hooked if not grad)
    assert _values(rows, "input.batch") == [16.0, 16.0, 16.0]
    assert _values(rows, "input.batch", "eval") == [8.0] * 5
    assert not module_mod._global_forward_hooks and not module_mod._global_forward_pre_hooks

class _TwoHeads(torch.nn.Module):
    """An autoencoder with a classifier: the output tuple's first element is not the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.dec, self.head = torch.nn.Linear(4, 3), torch.nn.Linear(3, 4), torch.nn.Linear(3, 6)

    def forward(self, x: torch.Tensor):
        z = self.enc(x)
        return self.dec(z), self.head(z)


def test_classifier_scores_are_what_the_classification_loss_gets() -> None:
    from tracer.session import TraceSession
    model, rows = _TwoHeads(), []
    with TraceSession(TraceConfig(), rows.extend):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(2):
            opt.zero_grad()
            x = torch.randn(8, 4)
            recon, logits = model(x)
            loss = torch.nn.functional.mse_loss(recon, x) + torch.nn.functional.cross_entropy(
                logits.softmax(1), torch.randint(0, 6, (8,)))  # probabilities: a bug
            loss.backward()
            opt.step()
    assert _values(rows, "output.width") == [4.0, 4.0]          # the reconstruction
    assert _values(rows, "loss.class_width") == [6.0, 6.0]      # the classifier's scores
    assert _values(rows, "loss.probabilities") == [1.0, 1.0]
    assert _values(rows, "loss.input_shapes") == ["Bx4,Bx4", "Bx4,Bx4"]  # the step's first loss


def test_dataset_labels_are_read_whole_from_conventional_attributes() -> None:
    from tracer.data import peek

    class Images(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.labels = [i % 10 for i in range(1000)]

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int):
            return torch.full((3, 2, 2), float(i)), self.labels[i]

    pk = peek(Images())
    assert pk.labels_exact and int(pk.labels.max()) == 9 and len(pk.labels) == 1000
    subset = peek(torch.utils.data.Subset(Images(), list(range(0, 1000, 10))))  # only class 0
    assert subset.labels_exact and set(subset.labels.tolist()) == {0}


def test_a_reading_store_never_creates_one(tmp_path: Path) -> None:
    from invariants.app.store import StoreError, StoreMissing
    with pytest.raises(StoreError) as e:
        Store(tmp_path / "none", create=False)
    assert isinstance(e.value, StoreMissing) and "no store at" in str(e.value)
    assert not (tmp_path / "none").exists()
    with Store(tmp_path / "s") as s:
        rid = s.new_run("x.py", [])
        s.add_observations(rid, [(0, "train", "v", 1.0, None), (3, "train", "v", 2.0, None),
                                 (2, "eval", "w", 1.0, None)])
    with Store(tmp_path / "s", create=False) as s:
        assert s.variable_steps(rid) == {("train", "v"): (0, 3), ("eval", "w"): (2, 2)}


def test_ids_resolve_by_prefix_and_name_some_of_many_matches(tmp_path: Path) -> None:
    from invariants.app.store import StoreError
    with Store(tmp_path / "s") as s:
        ids = [s.new_run("x.py", []) for _ in range(7)]
        for n in ("set-20260101-000000-aaaa", "set-20260101-000001-bbbb", "set_x"):
            s.save_invariant_set(n, "f.yaml", "{}")
        assert s.find_invariant_set("set-20260101-000001").id == "set-20260101-000001-bbbb"
        assert s.find_invariant_set("set-2027") is None
        assert s.find_invariant_set("set_").id == "set_x"  # `_` is literal, not a wildcard
        with pytest.raises(StoreError, match="2 match"):
            s.find_invariant_set("set-2026")
        with pytest.raises(StoreError) as e:
            s.run(ids[0][:2])
        assert "7 match" in str(e.value) and "(+2 more)" in str(e.value)
        assert [i.id for i in s.invariant_sets()][:1] == ["set-20260101-000000-aaaa"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch 2.13 deprecates torch.jit.script
def test_torchscript_compiles_inside_a_traced_run() -> None:
    # TorchScript compiles the source of what it finds; the tracer's wrappers (relu,
    # dropout, losses) must not be what it finds.
    from tracer.session import TraceSession

    class Scripted(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.drop, self.act = torch.nn.Linear(4, 3), torch.nn.Dropout(0.1), torch.nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.nn.functional.relu(self.drop(self.act(self.fc(x))))
            return torch.nn.functional.cross_entropy(h, torch.zeros(x.shape[0], dtype=torch.long))

    with TraceSession(TraceConfig(), lambda rows: None):
        scripted = torch.jit.script(Scripted())
        assert torch.isfinite(scripted(torch.randn(2, 4)))
    assert torch.nn.functional.relu is not None and torch.jit.script.__module__.startswith("torch")


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
