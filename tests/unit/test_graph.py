"""The model graph as invariants: capture (fx, export, module calls), static gradient flow,
the head before the loss, and the template and diffs that read them (docs/graph.md)."""
from __future__ import annotations

import inspect
from typing import Any, List, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from invariants import diff as diffmod
from invariants import structure
from invariants.check import Violation
from invariants.model import Invariant, InvariantSet, Support, When
from invariants.registry import template
from invariants.templates.base import Discard, Fit, Sample, Series
from tests.solver_models import BasicBlock, KeywordClassifier, ResNet18, TinyEncoder, TinyGPT
from tracer import graph_facts
from tracer.blocks import block_prefixes
from tracer.graph_build import capture_modules, capture_traced


def _line(marker: str, obj: Any) -> str:
    """`test_graph.py:N`: the line of `obj`'s source holding `marker`."""
    lines, start = inspect.getsourcelines(obj)
    return f"test_graph.py:{start + next(i for i, text in enumerate(lines) if marker in text)}"


def capture(model: nn.Module, *args: Any, **kwargs: Any):
    record, why = capture_traced(model, args, kwargs, tuple(block_prefixes(model)))
    assert record is not None, why
    return record


class DetachedBlock(BasicBlock):
    """ResNet's BasicBlock with its shortcut projection detached (the corpus bug)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x).detach()  # cut
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class DetachedGPT(TinyGPT):
    """A GPT-style model whose attention output is detached before the residual add: fx
    cannot trace `b, t = idx.shape`, so this goes through torch.export."""

    def forward(self, idx: torch.Tensor, targets: Any = None):
        b, t = idx.shape
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        att = (q @ k.transpose(-2, -1)).masked_fill(~self.mask[:t, :t], float("-inf")).softmax(-1)
        return self.head(x + (att @ v).detach()), None  # cut


def test_a_detached_shortcut_cuts_off_the_downsample_naming_the_detach_and_its_line() -> None:
    model = ResNet18(10, width=8)
    model.layer2[0] = DetachedBlock(8, 16, 2)
    record = capture(model, torch.randn(2, 3, 32, 32))
    assert record.kind == "fx" and record.reason is None
    where = _line("# cut", DetachedBlock.forward)
    cuts = graph_facts.gradient_cuts(record, model)
    assert [(c.block, c.module, c.by, c.where) for c in cuts] == [("layer2.0", "layer2.0.downsample", "detach", where)]
    assert graph_facts.blocking_ops(record)["layer2.0"] == f"detach @ {where}"
    assert graph_facts.blocking_ops(record)["layer3.0"] == "none"
    kinds = graph_facts.op_kinds(record)
    assert kinds["layer2.0"] == kinds["layer3.0"] == "add; batch_norm*3; conv2d*3; relu*2"  # detach left out
    assert graph_facts.cut_off(record, model)["layer3.0"] == []
    assert not graph_facts.gradient_cuts(capture(ResNet18(10, width=8), torch.randn(2, 3, 32, 32)), ResNet18(10, 8))


def test_a_second_architecture_through_export_is_cut_off_too() -> None:
    model, idx = DetachedGPT(), torch.randint(0, 40, (4, 12))
    record = capture(model, idx)
    assert record.kind == "export" and record.reason.startswith("fx: ")
    cuts = graph_facts.gradient_cuts(record, model)
    assert [(c.module, c.by, c.where) for c in cuts] == [("qkv", "detach", _line("# cut", DetachedGPT.forward))]
    assert not graph_facts.gradient_cuts(capture(TinyGPT(), idx), TinyGPT())


class Blockers(nn.Module):
    """Each branch's parameters lose their gradient differently."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c, self.d, self.e = (nn.Linear(4, 4) for _ in range(5))
        self.unused = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            a = self.a(x)
        b = self.b(x).data
        c = self.c(x).argmax(dim=1, keepdim=True).float()
        d = (self.d(x) > 0).long()
        self.e(x)  # computed, never used
        return self.out(a + b + c + d * x)


def test_every_kind_of_gradient_block_is_found() -> None:
    model = Blockers()
    record = capture(model, torch.randn(3, 4))
    by = {c.module: c.by for c in graph_facts.gradient_cuts(record, model)}
    assert by == {"a": "no_grad", "b": "data", "c": "argmax", "d": "gt", "e": "unreached", "unused": "unused"}
    assert "out" not in by


def test_capture_falls_back_to_export_for_keyword_forwards_and_to_module_calls() -> None:
    ids = torch.randint(0, 50, (8, 10))
    record = capture(KeywordClassifier(), input_ids=ids, labels=torch.randint(0, 3, (8,)))
    assert record.kind == "export" and record.reason.startswith("fx: ")
    assert graph_facts.op_kinds(record)["head"] == "linear"

    class DataBranch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    model = DataBranch()
    record, why = capture_traced(model, (torch.randn(3, 4),), None, ("fc",))
    assert record is None and why.startswith("fx: ") and "; export: " in why
    modules = capture_modules(model, [("fc", "Linear", ((3, 2),))], ("fc",), why)
    assert modules.kind == "modules" and modules.nodes[0].shape == ((3, 2),)
    assert graph_facts.op_kinds(modules) == {"fc": "linear"}


def test_a_data_parallel_wrapper_has_its_modules_graph_under_its_names() -> None:
    model = nn.DataParallel(Blockers())
    record = capture(model, torch.randn(3, 4))
    assert record.kind == "fx" and record.model == "DataParallel(Blockers)"
    by = {c.module: (c.block, c.by) for c in graph_facts.gradient_cuts(record, model)}
    assert by["module.a"] == ("module.a", "no_grad") and "module.out" not in by


def test_op_kinds_do_not_change_with_the_spectral_norm_api() -> None:
    def mlp(norm: Any) -> nn.Module:
        return nn.Sequential(norm(nn.Linear(4, 8)), nn.ReLU(), norm(nn.Linear(8, 2)))

    kinds = [graph_facts.op_kinds(capture(mlp(norm), torch.randn(3, 4)))
             for norm in (lambda m: m, nn.utils.spectral_norm, nn.utils.parametrizations.spectral_norm)]
    assert kinds[0] == kinds[1] == kinds[2] == {"0": "linear", "1": "relu", "2": "linear"}


def test_capture_changes_nothing_of_the_model_nor_the_random_streams() -> None:
    for model, x in ((ResNet18(10, width=8).train(), torch.randn(2, 3, 32, 32)),
                     (TinyEncoder().train(), torch.randint(0, 50, (4, 9)))):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        rng = torch.get_rng_state()
        capture(model, x)
        assert torch.equal(rng, torch.get_rng_state())
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert model.training and all(p.device.type == "cpu" for p in model.parameters())


class FakeSession:
    def __init__(self) -> None:
        self.rows: List[Tuple[str, str, Any]] = []

    def record(self, phase: str, variable: str, value: Any) -> None:
        self.rows.append((phase, variable, value))

    def value(self, variable: str) -> Any:
        return next(v for _, name, v in self.rows if name == variable)


def _head(model: nn.Module, loss: str) -> FakeSession:
    session = FakeSession()
    graph_facts.record_head(session, capture(model, torch.randn(4, 8)), loss, 0)  # type: ignore[arg-type]
    return session


def test_the_head_before_the_loss_is_judged_by_what_the_loss_expects() -> None:
    body = [nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)]
    softmax = _head(nn.Sequential(*body, nn.Softmax(dim=1)), "cross_entropy")
    assert softmax.value("graph.head") == "softmax @ after `2`"
    assert softmax.value("graph.loss_head") == "softmax @ after `2`, before cross_entropy, which expects logits"
    assert _head(nn.Sequential(*body, nn.LogSoftmax(dim=1)), "nll_loss").value("graph.loss_head") == "none"
    assert _head(nn.Sequential(*body), "cross_entropy").value("graph.head") == "none"
    assert _head(nn.Sequential(*body, nn.Sigmoid()), "mse_loss").value("graph.loss_head") == "none"

    class OwnLoss(nn.Module):  # computes its loss in forward: the graph holds the loss
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(F.softmax(self.fc(x), dim=1), torch.zeros(x.shape[0], dtype=torch.long))

    assert _head(OwnLoss(), "").value("graph.loss_head").startswith("softmax @ after `fc`, before cross_entropy")


def _series(*values: str) -> Sample:
    return Sample((Series("graph.block.b.ops", "train", tuple(((0, v),) for v in values)),), len(values), once=True)


def test_the_multiset_template_compares_kinds_and_reads_as_a_diff() -> None:
    multiset = template("multiset")
    fit = multiset.fit(_series("add; conv2d*2 @ a.py:3", "add; conv2d*2 @ a.py:9", "conv2d*2; add"))
    assert isinstance(fit, Fit) and fit.expect == {"value": "add; conv2d*2 @ a.py:3"}
    falsified = multiset.fit(_series("add; conv2d", "conv2d", "conv2d"))
    assert isinstance(falsified, Discard) and "- add" in falsified.reason
    assert isinstance(multiset.fit(_series("none", "none")), Discard)  # 2 runs: too few
    expect = {"value": "add; batch_norm*2; conv2d*2"}
    assert multiset.holds(expect, ("conv2d*2; batch_norm*2; add @ x.py:1",))
    got = ("batch_norm*2; conv2d*2; softmax @ after `fc`",)
    assert not multiset.holds(expect, got)
    assert multiset.observed(expect, got) == "+ softmax (after `fc`); - add"
    assert multiset.deviation(expect, got) == 2.0
    assert multiset.observed({"value": "none"}, ("detach*3 @ m.py:7",)) == "+ detach x3 (m.py:7)"
    assert multiset.check_expect({"value": "add; ; relu"}) is not None
    assert multiset.check_expect({"value": "none"}) is None


def _violation(variable: str, observed: str, locus: Any) -> Violation:
    return Violation(id=f"multiset:{variable}@train", template="multiset", target=(variable,), severity="error",
                     expected="== none", observed=observed, step=0, phase="train", locus=locus,
                     family="no_gradient", message="")


def test_the_report_lists_the_structural_diff_per_block_capped() -> None:
    vs = [_violation(f"graph.block.layer{i}.0.blocking", f"+ detach (m.py:{i}); - relu", f"layer{i}.0")
          for i in range(1, 9)]
    lines = structure.render_lines(vs, shown=4)
    assert lines[0].startswith("Structural diff")
    assert lines[1] == "  layer1.0  gradient-blocking ops: + detach (m.py:1)"
    assert lines[2] == "  layer1.0  gradient-blocking ops: - relu"
    assert lines[-1] == "  ... 12 more (--format json lists every change)"
    assert structure.to_json(vs)["total"] == 16
    assert structure.render_lines([]) == []


def _inv(variable: str, value: str, locus: Any = None) -> Invariant:
    return Invariant(id=f"multiset:{variable}@train", template="multiset", target=(variable,),
                     expect={"value": value}, when=When(), severity="error", status="proposed",
                     support=Support(3, 3), why="", locus=locus)


def test_invar_diff_has_a_graph_section() -> None:
    a = InvariantSet(1, {}, (_inv("graph.block.layer2.0.ops", "add; conv2d*2", "layer2.0"),
                             _inv("graph.head", "none"), _inv("graph.block.fc.ops", "linear", "fc")))
    b = InvariantSet(1, {}, (_inv("graph.block.layer2.0.ops", "conv2d*2; softmax", "layer2.0"),
                             _inv("graph.head", "none"), _inv("graph.block.fc2.ops", "linear", "fc2")))
    text = diffmod.render_diff(diffmod.diff(a, b))
    graph = text[text.index("graph (the model's structure"):].splitlines()
    assert graph[1:] == ["  - fc ops: linear", "  + fc2 ops: linear", "  ~ layer2.0 ops: + softmax; - add"]
    assert "graph (" not in diffmod.render_diff(diffmod.diff(a, a))


@pytest.mark.parametrize("variable, family, severity", [
    ("graph.block.layer2.0.ops", "architecture", "error"), ("graph.block.layer2.0.cut_off", "no_gradient", "error"),
    ("graph.block._root.blocking", "no_gradient", "error"), ("graph.loss_head", "output_scale", "error"),
    ("graph.head", "architecture", "warning"), ("graph.blocks", "architecture", "warning")])
def test_graph_facts_are_mined_once_per_run_into_their_cause_family(variable, family, severity) -> None:
    from invariants.variables import kind_of, once_per_run
    k = kind_of(variable, "train")
    assert (k.kind, k.family, k.severity) == ("graph", family, severity) and once_per_run(variable)
