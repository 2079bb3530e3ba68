"""The static half: symbolic shapes, accepted sizes and cost, checked against eager ground
truth on real tensors."""
from __future__ import annotations

import json
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from solver import Counterexample, Proved, Unknown, analyse, confirm, prepool_stage, rules
from solver.call import CallSpec
from solver.symbolic import ConcreteRun, concrete_run, symbolic_run
from invariants.app.shapes import ShapesOutcome
from tests.conftest import ROOT
from tests.solver_models import (Branchy, CellLoop, FixedStateGRU, HiddenRNN, KeywordClassifier, LSTMClassifier,
                                 PositionalAttention, ResNet18, SeqFirstLSTM, SequenceLSTM, TinyEncoder, TinyGPT,
                                 TinyVGG, mlp)


def _effnet():
    sys.path.insert(0, str(ROOT / "corpus" / "efficientnet_finetune"))
    try:
        import common
        return common.EfficientNet(100)
    finally:
        sys.path.pop(0)


def test_private_torch_api_contract() -> None:
    """Fails loudly when a torch upgrade moves the private APIs the solver relies on."""
    try:
        import torch.fx.experimental._config as fx_config
        from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: F401
        from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext  # noqa: F401
        assert hasattr(fx_config, "backed_size_oblivious"), "backed_size_oblivious config flag"
        assert hasattr(DimDynamic, "DYNAMIC") and hasattr(DimDynamic, "STATIC"), "DimDynamic members"
        env = ShapeEnv(specialize_zero_one=False)
        assert hasattr(env, "guards"), "ShapeEnv.guards"
        assert isinstance(env.replacements, dict), "ShapeEnv.replacements (specialised sizes)"
        r = analyse(TinyVGG(), torch.randn(2, 3, 32, 32))
        assert r.output_shape == ("B", "10"), f"symbolic output {r.output_shape}"
        assert any("fc" == m for _, m in r.guards), "guard attribution to modules"
        assert "H" in r.flops, "symbolic FLOP counting"
        assert concrete_run(TinyVGG(), CallSpec.of([torch.randn(2, 3, 32, 32)]), {0: 1}).output == (1, 10), \
            "a concrete forward on static fake tensors"
    except (ImportError, AttributeError, AssertionError, TypeError) as e:
        pytest.fail(f"torch upgrade broke the symbolic path: {type(e).__name__}: {e}")


@pytest.mark.parametrize("make, x, width", [
    (lambda: ResNet18(37), torch.randn(4, 3, 64, 64), 37),
    (_effnet, torch.randn(4, 3, 32, 32), 100),
    (lambda: mlp(20, 3), torch.randn(4, 20), 3),
    (TinyVGG, torch.randn(4, 3, 32, 32), 10),
], ids=["resnet18", "efficientnet", "mlp", "vgg"])
def test_output_is_B_by_K_for_every_batch(make, x, width) -> None:
    r = analyse(make(), x)
    assert isinstance(r.batch_polymorphic, Proved), r.batch_polymorphic
    assert r.output_shape == ("B", str(width)) and r.output_width == width


def test_flatten_linear_domain_matches_eager_and_blames_the_linear() -> None:
    model = TinyVGG().eval()
    r = analyse(model, torch.randn(2, 3, 32, 32), probes=[(3, 32, 32), (3, 64, 64), (3, 35, 35)])

    def eager_ok(side: int) -> bool:
        try:
            with torch.no_grad():
                model(torch.randn(1, 3, side, side))
            return True
        except RuntimeError:
            return False

    accepted = [s for s in range(8, 80) if eager_ok(s)]
    assert (r.side_min, r.side_max) == (min(accepted), max(accepted)) == (32, 35)
    verdicts = {p.size: (p.accepted, p.blame) for p in r.probes}
    assert verdicts[(3, 32, 32)] == (True, ())
    assert verdicts[(3, 35, 35)] == (True, ())
    assert verdicts[(3, 64, 64)] == (False, ("fc",))


def test_resolution_cost_ratio_matches_flop_counter_and_prepool_map() -> None:
    model = _effnet().eval()
    r = analyse(model, torch.randn(8, 3, 32, 32))
    small, big = (8, 3, 32, 32), (8, 3, 146, 146)

    def measured(shape):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.randn(*shape))
        return counter.get_total_flops()

    predicted = r.cost_at(big)[0] / r.cost_at(small)[0]
    real = measured(big) / measured(small)
    assert abs(predicted / real - 1) < 0.10, (predicted, real)
    assert prepool_stage(r, small)[1] == (1, 1)
    assert prepool_stage(r, big)[1] == (5, 5)


def test_label_check() -> None:
    r = analyse(ResNet18(128), torch.randn(2, 3, 64, 64), label_classes=37)
    assert isinstance(r.label_check, Counterexample) and "128" in str(r.label_check)


def test_analysis_never_mutates_the_model() -> None:
    model = ResNet18(37).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    analyse(model, torch.randn(4, 3, 64, 64))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert flags == [m.training for m in model.modules()]
    assert all(p.device.type == "cpu" for p in model.parameters())


@pytest.mark.parametrize("make, x", [(Branchy, torch.randn(4, 50)),
                                     (LSTMClassifier, torch.randint(0, 100, (4, 12)))],
                         ids=["branch-and-nonzero", "lstm"])
def test_unsupported_models_give_answers_or_unknown_never_raise(make, x) -> None:
    r = analyse(make(), x)
    assert r.batch_polymorphic.status in ("proved", "counterexample", "unknown")
    if isinstance(r.batch_polymorphic, Unknown):
        assert r.batch_polymorphic.reason
    json.dumps(r.to_json())


def test_lstm_over_sequences_is_batch_polymorphic_with_a_sequence_length_domain() -> None:
    """torch's path unrolls an RNN step by step, pinning B and T; the own rule keeps both
    symbolic with the same FLOPs."""
    r = analyse(SequenceLSTM(), torch.randn(32, 40, 6), probes=[(50, 6), (40, 5)])
    assert isinstance(r.batch_polymorphic, Proved), r.batch_polymorphic
    assert r.output_shape == ("B", "4") and r.input_names == ("B", "T", "6")
    assert r.domain_text() == "sequence length 1..unbounded"
    assert [p.accepted for p in r.probes] == [True, False]
    assert r.cost_at((32, 40, 6))[0] == 12460032  # what torch's unrolled path counts
    text = ShapesOutcome(r, (32, 40, 6), 4).text()
    assert "domain  sequence length 1..unbounded" in text and "square" not in text
    assert "square" not in analyse(mlp(20, 3), torch.randn(4, 20)).domain_text()


def _leaf_shapes(out):
    return [tuple(t.shape) for t in torch.utils._pytree.tree_leaves(out)]


@pytest.mark.parametrize("kind, batch_first, bidirectional, layers, proj, unbatched", [
    ("LSTM", True, False, 1, 0, False), ("LSTM", False, True, 2, 0, False), ("LSTM", True, True, 2, 3, False),
    ("GRU", False, False, 2, 0, False), ("GRU", True, True, 1, 0, True), ("RNN", True, False, 2, 0, False),
])
def test_rnn_rule_matches_eager_shapes_and_torch_flops(monkeypatch, kind, batch_first, bidirectional,
                                                       layers, proj, unbatched) -> None:
    rnn = getattr(torch.nn, kind)(5, 7, num_layers=layers, batch_first=batch_first,
                                  bidirectional=bidirectional, **({"proj_size": proj} if proj else {}))
    x = torch.randn(6, 5) if unbatched else torch.randn(*((4, 6, 5) if batch_first else (6, 4, 5)))
    with torch.no_grad():
        eager = _leaf_shapes(rnn(x))
    assert _leaf_shapes(rules.rnn_forward(rnn.to("meta"), x.to("meta"))) == eager
    ruled = symbolic_run(rnn, CallSpec.of([x]), concrete=True)
    monkeypatch.setattr(rules, "MODULE_RULES", {})
    unrolled = symbolic_run(rnn, CallSpec.of([x]), concrete=True)
    assert int(ruled.flops) == int(unrolled.flops) > 0


def test_size_pinned_on_torchs_path_is_unknown_with_the_module_not_no_output(monkeypatch) -> None:
    r = analyse(CellLoop(), torch.randn(4, 5, 6), probes=[(7, 6)])
    assert isinstance(r.batch_polymorphic, Unknown)
    reason = r.batch_polymorphic.reason
    assert "`cell` (LSTMCell) specialises the batch size to 4" in reason and "no tensor output" not in reason
    assert r.domain_text() == "sequence length unknown" and r.probes[0].accepted is None
    monkeypatch.setattr(rules, "MODULE_RULES", {})  # an LSTM on torch's own path
    r = analyse(SequenceLSTM(), torch.randn(32, 40, 6))
    assert "RNN `lstm` (LSTM) specialises the batch size to 32" in str(r.batch_polymorphic)
    assert any("sequence length to 40" in n for n in r.notes)


def test_fixed_initial_state_really_pins_the_batch_and_no_output_is_said_only_when_true() -> None:
    r = analyse(FixedStateGRU(), torch.randn(8, 10, 6))
    poly = r.batch_polymorphic
    assert isinstance(poly, Counterexample) and poly.model["B"] != 8
    assert [m for _, m in r.guards] == ["gru"]
    b = poly.model["B"]  # the text says which B fails and why, and eager agrees
    assert str(poly).startswith(f"counterexample: B={b} is rejected by guard Eq(B, 8) of module `gru` (GRU)")
    assert "every" not in str(poly)
    with pytest.raises(RuntimeError), torch.no_grad():
        FixedStateGRU()(torch.randn(b, 10, 6))

    class Keyed(torch.nn.Module):
        def __init__(self, tensor_out: bool):
            super().__init__()
            self.fc, self.tensor_out = torch.nn.Linear(4, 2), tensor_out

        def forward(self, x):
            return (None, self.fc(x)) if self.tensor_out else self.fc(x).sum().item()

    assert isinstance(analyse(Keyed(True), torch.randn(3, 4)).batch_polymorphic, Proved)
    no_tensor = analyse(Keyed(False), torch.randn(3, 4)).batch_polymorphic
    assert str(no_tensor) == "unknown: the model has no tensor output"


@pytest.fixture(scope="module")
def positional():
    model = PositionalAttention().eval()
    return model, analyse(model, torch.randint(0, 50, (8, 12)))


def test_batch_one_guarded_only_by_the_symbolic_path_is_not_a_counterexample(positional) -> None:
    """[B, T, D] + a [1, T, D] parameter, then MultiheadAttention: torch's symbolic path
    guards B != 1 (a contiguity test on the attention's transposed input); a concrete
    forward at B=1 works, as eager does, so the answer is a proof with a note."""
    model, r = positional
    poly = r.batch_polymorphic
    assert isinstance(poly, Proved), poly
    assert ("Ne(B, 1)", "attn") in r.guards
    assert "guard Ne(B, 1) of module `attn` (MultiheadAttention)" in poly.note and "B=1" in poly.note
    with torch.no_grad():
        assert tuple(model(torch.randint(0, 50, (1, 12)))["logits"].shape) == (1, 3)
    assert r.output_shape == ("B", "3")
    text = ShapesOutcome(r, (8, 12), 3).text()
    assert "counterexample" not in text and "  attn " in text


def test_attention_modules_are_stages_though_their_children_never_run(positional) -> None:
    """MultiheadAttention is not a leaf (out_proj) and never calls out_proj's forward: it
    records its own output. The encoder layer's T != 1 guard is confirmed away concretely."""
    r = positional[1]
    assert [m for m, _ in r.stages] == ["embed", "attn", "norm", "head"]
    assert dict(r.stages)["attn"] == ("B", "12", "16")
    model = TinyEncoder().eval()
    r = analyse(model, torch.randint(0, 50, (4, 9)), probes=[(1,), (30,)])
    assert isinstance(r.batch_polymorphic, Proved), r.batch_polymorphic
    assert r.stage_shape_at("enc.self_attn", (4, 9)) == (4, 9, 16)
    assert ("Ne(T, 1)", "enc.self_attn") in r.guards
    assert r.domain_text() == "sequence length 1..unbounded"  # the guards alone say 2..
    assert [p.accepted for p in r.probes] == [True, True]
    with torch.no_grad():
        assert tuple(model(torch.randint(0, 50, (1, 1)))[0].shape) == (1, 3)


def test_wrong_output_form_is_confirmed_and_unconfirmable_guards_are_unknown(monkeypatch) -> None:
    class Refold(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x).reshape(-1, 2)

    poly = analyse(Refold(), torch.randn(3, 4)).batch_polymorphic
    assert isinstance(poly, Counterexample), poly
    assert "output [2*B, 2] is not [B, K] for every B: at B=" in str(poly) and "concrete forward gives [" in str(poly)
    # a concrete forward accepting every size: the guard is an artefact each time, and after
    # MAX_CONFIRMATIONS of them the answer is Unknown naming the guard, never a counterexample
    monkeypatch.setattr(confirm, "concrete_run", lambda model, spec, sizes: ConcreteRun(
        tuple(spec.shapes(sizes)), (spec.shapes(sizes)[0][0], 3)))
    poly = analyse(FixedStateGRU(), torch.randn(8, 10, 6)).batch_polymorphic
    assert isinstance(poly, Unknown), poly
    assert "guard Eq(B, 8) of module `gru` (GRU)" in poly.reason and "artefacts of the symbolic path" in poly.reason
    # a concrete forward failing even at the example's sizes confirms nothing
    monkeypatch.setattr(confirm, "concrete_run", lambda model, spec, sizes: ConcreteRun(
        tuple(spec.shapes(sizes)), None, "no meta kernel"))
    poly = analyse(FixedStateGRU(), torch.randn(8, 10, 6)).batch_polymorphic
    assert isinstance(poly, Unknown) and "could not confirm it" in poly.reason, poly


def test_the_copy_is_called_the_way_the_script_called_the_model() -> None:
    """A target tied to the input's batch and sequence sizes, a hidden state tied to the
    batch, keyword-only arguments and a sequence-first RNN: no false counterexample, and
    every rejection agrees with eager."""
    gpt = TinyGPT().eval()
    idx, targets = torch.randint(0, 40, (32, 12)), torch.randint(0, 40, (32, 12))
    r = analyse(gpt, (idx, targets), probes=[(16,), (17,)])
    assert r.call == "model(Tensor[32, 12], Tensor[32, 12])"
    assert isinstance(r.batch_polymorphic, Proved), r.batch_polymorphic
    assert r.output_shape == ("B", "T", "40") and r.domain_text() == "sequence length 1..16"
    assert ("T <= 16", "pos") in r.guards  # arange(T) indexes a 16-row positional table
    assert [p.accepted for p in r.probes] == [True, False]
    with torch.no_grad():
        gpt(idx[:1], targets[:1])  # B=1 runs, with a target of that batch size
        with pytest.raises((RuntimeError, IndexError)):
            gpt(torch.randint(0, 40, (2, 17)), torch.randint(0, 40, (2, 17)))

    rnn = HiddenRNN().eval()
    r = analyse(rnn, (torch.randint(0, 30, (35, 20)), rnn.init_hidden(20)))
    assert r.input_names == ("T", "B") and r.output_shape == ("T", "B", "30")
    assert isinstance(r.batch_polymorphic, Proved) and "dim 1 = B" in str(r.batch_polymorphic)

    kw = KeywordClassifier().eval()
    r = analyse(kw, (), {"input_ids": torch.randint(0, 50, (8, 10)), "attention_mask": torch.ones(8, 10),
                         "labels": torch.randint(0, 3, (8,))})
    assert r.call == "model(input_ids=Tensor[8, 10], attention_mask=Tensor[8, 10], labels=Tensor[8])"
    assert isinstance(r.batch_polymorphic, Proved) and r.output_shape == ("B", "3")

    r = analyse(SeqFirstLSTM(), torch.randn(40, 32, 6), probes=[(50, 6)])
    assert r.input_names == ("T", "B", "6") and r.output_shape == ("B", "4") and r.batch_index == 1
    assert isinstance(r.batch_polymorphic, Proved) and r.probes[0].accepted


def test_unknown_reasons_are_plain_words_never_a_torch_exception_name() -> None:
    class DataBranch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) * 2 if (x > 0).sum() == 1 else self.fc(x)

    class NeedsState(torch.nn.Module):
        def forward(self, x, hidden):
            return x + hidden

    for model, x in ((DataBranch(), torch.randn(3, 4)), (NeedsState(), torch.randn(3, 4))):
        poly = analyse(model, x).batch_polymorphic
        assert isinstance(poly, Unknown), poly
        assert "GuardOnDataDependentSymNode" not in poly.reason and "TypeError" not in poly.reason
        assert "Eq(u0" not in poly.reason
    assert "value computed from the input's data" in str(analyse(DataBranch(), torch.randn(3, 4)).batch_polymorphic)
    assert "not called with the arguments it needs" in str(analyse(NeedsState(), torch.randn(3, 4)).batch_polymorphic)


def test_the_analysis_never_runs_the_users_hooks() -> None:
    """Global and module hooks the user registered see no forward of the meta copies
    (symbolic run, concrete confirmations); torch's own hooks (spectral_norm) still run."""
    calls = []
    model = TinyVGG()
    handles = [torch.nn.modules.module.register_module_forward_hook(lambda m, a, o: calls.append("global")),
               torch.nn.modules.module.register_module_forward_pre_hook(lambda m, a: calls.append("global pre")),
               model.fc.register_forward_hook(lambda m, a, o: calls.append("module")),
               model.register_forward_pre_hook(lambda m, a: calls.append("root pre"))]
    try:
        r = analyse(model, torch.randn(2, 3, 32, 32), probes=[(3, 64, 64), (3, 33, 33)])
        assert r.probes[0].accepted is False and r.side_max == 35  # concrete forwards ran
        assert calls == []
        with torch.no_grad():
            model(torch.randn(1, 3, 32, 32))
        assert "global" in calls and "module" in calls and "root pre" in calls  # still registered
    finally:
        for h in handles:
            h.remove()
    normed = torch.nn.Sequential(torch.nn.utils.spectral_norm(torch.nn.Linear(4, 8)), torch.nn.Linear(8, 2))
    assert isinstance(analyse(normed, torch.randn(3, 4)).batch_polymorphic, Proved)
