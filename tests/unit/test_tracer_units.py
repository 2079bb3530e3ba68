"""The tracer's parts that run no script: step kinds, losses and inputs wherever they are,
outputs, compiled models, and the private torch structure it reads (docs/observations.md)."""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pytest
import torch

from invariants.app.store import Store
from tracer import calls, stats
from tracer.blocks import block_map, block_prefixes, clean_name
from tracer.session import TraceConfig, TraceSession


def _values(rows, variable, phase="train"):
    return [r[3] if r[3] is not None else r[4] for r in rows if r[2] == variable and r[1] == phase]


def test_broadcast_detection() -> None:
    assert stats.broadcast_larger([8, 1], [8])
    assert not stats.broadcast_larger([8, 10], [8, 10])

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



def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _batch():
    return torch.randn(16, 4), torch.randint(0, 3, (16,))


def test_a_closure_step_observes_the_gradients_its_closure_computed() -> None:
    # Lightning's automatic optimization: forward, zero_grad and backward run inside
    # optimizer.step(closure); its gradients and zero_grad call belong to that step.
    model, rows = _mlp(), []
    with TraceSession(TraceConfig(steps=4), rows.extend), contextlib.suppress(BaseException):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(6):
            x, y = _batch()

            def closure():
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                return loss
            opt.step(closure=closure)
    assert _values(rows, "block.0.no_grad_fraction") == [0.0] * 4
    assert _values(rows, "optim.zero_grad_calls") == [1.0] * 3
    assert len(_values(rows, "loss.value")) == 4 and _values(rows, "block.0.update_ratio")


def test_a_loop_without_torch_optim_has_steps() -> None:
    # A backward, then the script's own update through .data (no version counter moves),
    # and a custom loss: steps, gradients, updates, zero_grad and the loss are all there.
    torch.manual_seed(0)
    model, rows = _mlp(), []
    with TraceSession(TraceConfig(steps=4), rows.extend) as session, contextlib.suppress(BaseException):
        for _ in range(6):
            x, y = _batch()
            model.zero_grad()
            loss = -torch.log_softmax(model(x), 1)[torch.arange(16), y].mean()
            loss.backward()
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-0.1)
    assert session.step == 4
    assert _values(rows, "block.0.no_grad_fraction") == [0.0] * 4
    assert _values(rows, "block.0.in_optimizer_fraction") == []  # no optimizer to hold them
    assert _values(rows, "block.0.update_ratio")[0] > 0
    assert _values(rows, "optim.zero_grad_calls") == [1.0] * 3
    assert len(_values(rows, "loss.value")) == 4  # from the tensor backward() was called on
    assert _values(rows, "input.batch") == [16.0] * 3  # from step 1: the root is known at the first backward


class _HFLike(torch.nn.Module):
    """Called with keywords only, computes its loss from labels=, returns a ModelOutput-like
    dataclass with the loss first."""

    @dataclasses.dataclass
    class Output:
        loss: torch.Tensor
        logits: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = torch.nn.Embedding(20, 8), torch.nn.Linear(8, 3)

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        logits = self.head((self.embed(input_ids) * attention_mask[..., None]).mean(1))
        return self.Output(torch.nn.functional.cross_entropy(logits, labels), logits)


def test_keyword_inputs_and_a_loss_computed_in_forward_are_observed() -> None:
    model, rows = _HFLike(), []
    with TraceSession(TraceConfig(), rows.extend):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for _ in range(2):
            mask = torch.ones(8, 6, dtype=torch.long)
            mask[:, 4:] = 0
            out = model(input_ids=torch.randint(0, 20, (8, 6)), attention_mask=mask,
                        labels=torch.randint(0, 3, (8,)), num_items_in_batch=torch.tensor(8))
            out.loss.backward()
            opt.step()
            opt.zero_grad()
    assert _values(rows, "input.shape") == ["6", "6"] and _values(rows, "input.dtype") == ["int64"] * 2
    assert _values(rows, "input.attention_mask.mean") == [pytest.approx(4 / 6)] * 2
    assert not [r for r in rows if "num_items_in_batch" in r[2]]  # a scalar, not an input
    assert _values(rows, "output.width") == [3.0, 3.0]  # the logits, not the scalar loss
    assert _values(rows, "loss.class_width") == [3.0, 3.0] and len(_values(rows, "loss.value")) == 2
    assert _values(rows, "label.shape") == ["()", "()"]


def test_the_output_stands_for_predictions_never_the_loss() -> None:
    logits, loss = torch.randn(4, 3), torch.tensor(1.0)
    assert calls.model_output((logits, loss)) is logits
    assert calls.model_output((loss, logits)) is logits
    assert calls.model_output({"loss": loss, "hidden": logits}) is logits
    per_sample = torch.rand(4)  # reduction="none": what a loss function returned in the forward
    assert calls.model_output((per_sample, logits), losses=(id(per_sample),)) is logits
    assert calls.model_output(_HFLike.Output(loss, logits)) is logits


def test_the_batch_dimension_of_time_major_input() -> None:
    assert calls.batch_dim(torch.zeros(35, 20), 20) == 1   # [T, B] with the loader's batch
    assert calls.batch_dim(torch.zeros(20, 35), 20) == 0
    assert calls.batch_dim(torch.zeros(10, 16, 16), 16) == 0  # ambiguous: dim 0 stands
    assert calls.batch_dim(torch.zeros(16, 32), 32) == 0  # a micro-batch of 16 from a loader's 32
    assert calls.primary_input((), {"labels": torch.zeros(2), "pixel_values": torch.ones(2, 3)}).sum() == 6


def test_compiled_modules_keep_their_eager_names() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    model.head = torch.compile(torch.nn.Linear(8, 2))  # a compiled submodule
    assert block_prefixes(model) == ["0", "1", "head"]
    assert block_map(model).names == ("0", "head")
    assert clean_name("head._orig_mod.weight") == "head.weight"

    from tracer.root import RootTracker
    roots, wrapper = RootTracker(), torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # held weakly by the tracker: kept here
    roots.optimizer_created(opt)
    roots.consider(wrapper)
    assert roots.root is model and roots.compiled and roots.is_root_call(wrapper)
    assert roots.name_of(model.head._orig_mod) == "head"


def test_private_torch_structure_the_tracer_reads() -> None:
    # Keyword arguments come from nn.Module._call_impl's `inner` frame, and compilation is
    # told by torch.compiler's flag: an upgrade that moves either must fail here, loudly.
    assert calls._INNER is not None and "kwargs" in calls._INNER.co_freevars
    assert isinstance(torch.compiler._is_compiling_flag, bool)
    seen = []

    def hook(module, args):
        seen.append(dict(calls.call_kwargs()))
    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        _HFLike()(input_ids=torch.zeros(1, 2, dtype=torch.long), attention_mask=torch.ones(1, 2),
                  labels=torch.zeros(1, dtype=torch.long))
    finally:
        handle.remove()
    assert sorted(seen[0]) == ["attention_mask", "input_ids", "labels"]
