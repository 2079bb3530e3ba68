"""The static half: symbolic shapes, accepted sizes, cost and broadcasts, checked against
eager ground truth on real tensors."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from solver import Counterexample, Proved, Unknown, analyse, broadcast_check, prepool_stage
from tests.conftest import ROOT, SCRIPTS, run_invar
from tests.solver_models import Branchy, LSTMClassifier, ResNet18, TinyVGG, mlp


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
        r = analyse(TinyVGG(), torch.randn(2, 3, 32, 32))
        assert r.output_shape == ("B", "10"), f"symbolic output {r.output_shape}"
        assert any("fc" == m for _, m in r.guards), "guard attribution to modules"
        assert "H" in r.flops, "symbolic FLOP counting"
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


def test_label_check_and_broadcast() -> None:
    r = analyse(ResNet18(128), torch.randn(2, 3, 64, 64), label_classes=37)
    assert isinstance(r.label_check, Counterexample) and "128" in str(r.label_check)
    bad = broadcast_check(["B", "1"], ["B"])
    assert isinstance(bad, Counterexample) and "larger than either" in str(bad) and bad.model["B"] >= 2
    assert isinstance(broadcast_check(["B"], ["B"]), Proved)
    assert isinstance(broadcast_check(["B", "10"], ["B", "10"]), Proved)


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


def test_shapes_command_json(tmp_path: Path) -> None:
    r = run_invar("shapes", str(SCRIPTS / "plain_train.py"), "--probe", "3x8x8", "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["output"]["shape"] == ["B", "4"]
    assert doc["output"]["batch_polymorphic"] in ("proved", "unknown")
    assert set(doc) >= {"output", "domain", "probes", "stages", "cost"}
    assert doc["probes"][0]["size"] == [3, 8, 8]
