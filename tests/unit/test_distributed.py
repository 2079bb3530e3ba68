"""Distributed runs (docs/distributed.md), in process: cross-rank digests and their
comparison, the payload layout, rank environment and the merge of per-rank runs
(tests/e2e/test_distributed.py runs two ranks under torchrun)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, List

import pytest
import torch
from torch import nn

from invariants.explain import explain
from invariants.app.ranks import RankRun, failure
from invariants.variables import block_of, family_of
from tests.conftest import ROOT, SCRIPTS
from tracer.blocks import block_map
from tracer.digests import sample_fingerprints, tensor_digest
from tracer.distributed import FINDINGS_FACT, CrossRankObserver
from tracer.rank_compare import compare
from tracer.rank_env import RankInfo
from tracer.rank_payload import Header, PayloadLayout
from tracer.session import TraceConfig
from invariants.app.store import RunInfo

CASE = ROOT / "corpus" / "ddp_mlp"
FAULTS = str(SCRIPTS / "ddp_faults.py")


# -- digests and comparison (fast) ---------------------------------------------------------------
def test_digest_is_equal_for_equal_tensors_and_moves_with_a_difference() -> None:
    w = torch.randn(300, 50)
    assert torch.equal(tensor_digest(w), tensor_digest(w.clone()))
    nudged = w.clone()
    nudged[17, 3] += 1e-3
    d0, d1 = tensor_digest(w), tensor_digest(nudged)
    assert abs(d0[1] - d1[1]) > 1e-4  # the weighted sum moves by about the difference
    big = torch.randn(10_000)  # longer than the weight pattern: folded, no float64 copy
    assert tensor_digest(big)[0].item() == pytest.approx(big.double().sum().item(), abs=1e-3)


def test_sample_fingerprints_match_per_sample() -> None:
    x = torch.randn(8, 3, 4, 4)
    fp = sample_fingerprints(x)
    assert fp.shape == (8,)
    # A sub-batch reduces in another order (vectorised differently on some CPUs): equal up
    # to rounding, which the comparison absorbs (12 significant digits).
    assert torch.allclose(sample_fingerprints(x[[2, 5]]), fp[[2, 5]], rtol=1e-12, atol=0)
    assert len(set(fp.tolist())) == 8


def _session(model: nn.Module, step: int = 3) -> Any:
    return SimpleNamespace(step=step, root=model, config=TraceConfig(), observed=lambda s: True)


def _payload(model: nn.Module, x: torch.Tensor, lr: float = 0.1) -> tuple:
    obs = CrossRankObserver()
    session = _session(model)
    model.train()
    obs.on_input(session, model, (x,), {})
    out = model(x).sum()
    out.backward()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    local, names = obs.payload(session, opt)
    return local.tolist(), names


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))


def _values(findings: List[Any]) -> dict:
    return {f.variable: (f.value, f.text()) for f in findings}


def _ranks(findings: List[Any]) -> dict:
    return {f.variable: (f.ranks, f.majority) for f in findings}


def test_identical_replicas_on_disjoint_data_compare_clean() -> None:
    x = torch.randn(16, 6)
    a, names = _payload(_model(), x[:8])
    b, _ = _payload(_model(), x[8:])
    got = _values(compare([a, b], names))
    assert names == ["0", "2"]
    assert got["dist.world_size"][0] == 2
    assert got["dist.batch_overlap"][0] == 0 and got["dist.shared_samples"][0] == 0
    assert got["dist.lr_divergence"][0] == 0 and got["dist.batch_size_divergence"][0] == 0
    assert got["dist.block.0.param_divergence"] == (0.0, "")
    # different data, unsynchronised here: the gradients differ, the parameters do not (yet)
    assert got["dist.block.0.grad_divergence"][0] > 1e-3


def test_a_diverged_rank_is_named_by_the_majority() -> None:
    x = torch.randn(8, 6)
    same, names = _payload(_model(), x)
    other, _ = _payload(_model(seed=1), x)
    found = compare([same, same, other, same], names)
    got, ranks = _values(found), _ranks(found)
    value, text = got["dist.block.2.param_divergence"]
    assert value > 1e-3
    assert ranks["dist.block.2.param_divergence"] == ((2,), (0, 1, 3))
    assert text == "ranks 2: parameters of rank 2 differ from ranks 0,1,3"  # rendered from the finding
    assert got["dist.batch_overlap"][0] == 6  # every pair of the 4 ranks got the same batch
    assert got["dist.shared_samples"][0] == 8 and ranks["dist.shared_samples"][0] == (0, 1, 2, 3)
    assert ranks["dist.world_size"] == ((), ()) and got["dist.world_size"] == (4.0, "")


def test_learning_rates_and_batch_sizes_must_agree() -> None:
    x = torch.randn(12, 6)
    a, names = _payload(_model(), x[:8], lr=0.1)
    b, _ = _payload(_model(), x[8:], lr=0.2)
    found = compare([a, b], names)
    got = _values(found)
    assert got["dist.lr_divergence"][0] == pytest.approx(0.5)
    assert _ranks(found)["dist.lr_divergence"] == ((0, 1), ())  # no majority of two
    assert got["dist.lr_divergence"][1] == ("ranks 0,1: learning rates differ between ranks 0 and 1 "
                                            "(largest per rank: rank 0: 0.1, rank 1: 0.2)")
    assert got["dist.batch_size_divergence"][0] == pytest.approx(0.5)  # 8 vs 4 samples


def test_a_local_fault_still_joins_the_collective_with_nans() -> None:
    # A rank whose digest fails sends NaNs (so no rank skips the all_gather) and is left out.
    x = torch.randn(8, 6)
    a, names = _payload(_model(), x)
    nan = [float("nan")] * len(a)
    nan[0] = a[0]
    got = _values(compare([a, nan], names))
    assert "dist.block.0.param_divergence" not in got  # one usable rank: nothing to compare


def test_the_payload_fields_are_where_the_layout_says() -> None:
    x = torch.randn(8, 6)
    values, names = _payload(_model(), x)
    row = PayloadLayout().read(values)
    assert row.ok and row[Header.STEP] == 3 and row[Header.BATCH] == 8 and row[Header.SAMPLES] == 8
    assert row[Header.BLOCKS] == len(names) == 2 and row[Header.LR_MAX] == pytest.approx(0.1)
    assert len(row.samples()) == 8
    numel, param, grad = row.block(1)
    assert numel == 5 * 2 + 2 and len(param) == len(grad) == 3


def test_findings_become_a_fact_naming_the_ranks() -> None:
    obs = CrossRankObserver()
    x = torch.randn(8, 6)
    same, names = _payload(_model(), x)
    other, _ = _payload(_model(seed=1), x)
    for finding in compare([same, other, same], names):
        if finding.ranks:
            obs.findings.append((3, finding))
    found = {f["variable"]: f for f in obs.facts()[FINDINGS_FACT]}
    assert found["dist.block.2.param_divergence"] == {"step": 3, "variable": "dist.block.2.param_divergence",
                                                      "ranks": [1], "majority": [0, 2]}
    assert CrossRankObserver().facts() == {}


def test_ddp_wrappers_are_not_a_block_level() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(2, 3), nn.Linear(3, 1)
    assert block_map(nn.DataParallel(Net())).names == ("module.fc1", "module.fc2")


def test_dist_variables_have_families_and_blocks() -> None:
    assert family_of("dist.block.module.fc1.param_divergence", "train") == "replica_divergence"
    assert family_of("dist.block.module.fc1.grad_divergence", "train") == "unsynced_gradients"
    assert family_of("dist.batch_overlap", "train") == "duplicate_shards"
    assert family_of("dist.lr_divergence", "train") == "rank_config_mismatch"
    assert block_of("dist.block.module.fc1.param_divergence") == "module.fc1"


def test_rank_info_from_torchrun_environment() -> None:
    assert RankInfo.from_env({}) is None
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_PORT": "29500",
           "TORCHELASTIC_RUN_ID": "abc"}
    a, b = RankInfo.from_env(env), RankInfo.from_env(dict(env, RANK="0", LOCAL_RANK="0"))
    assert (a.rank, a.world_size, a.local_rank) == (1, 2, 1) and a.group == b.group
    assert RankInfo.from_env(dict(env, INVAR_GROUP="g1")).group == "g1"


def test_torch_default_group_counter_is_still_there() -> None:
    # Re-running a script in one rank process moves it on (tracer.distributed.destroy_default_group):
    # a torch upgrade that drops this private counter must fail here, not hang in infer.
    from torch.distributed import distributed_c10d
    assert isinstance(distributed_c10d._world.group_count, int)


def test_each_rank_runs_the_command_without_the_launch_option() -> None:
    from invariants.app.cli.run import check
    from invariants.app.cli.distributed import rank_argv
    ctx = check.make_context("check", ["s.py", "--against", "i.yaml", "--nproc-per-node", "2", "--steps", "7",
                                       "--", "--lr", "1"])
    argv = rank_argv(ctx)
    assert "--nproc-per-node" not in argv
    assert argv[:4] == ["--against", "i.yaml", "--steps", "7"] and argv[-4:] == ["s.py", "--", "--lr", "1"]


def _run(rank: int, status: str, error: str | None = None, steps: int = 7, last: int | None = 5) -> RankRun:
    info = RunInfo(id=f"r{rank}", label=None, script="s.py", argv=[], started=0.0, ended=None, status=status,
                   steps=steps, seed_offset=0, rank=rank, world_size=2, error=error)
    return RankRun(rank, info, None, last)


def test_failure_names_the_rank_that_failed_first() -> None:
    peer = "RuntimeError: [gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:417. Check it"
    assert failure([_run(0, "budget"), _run(1, "budget")], 2) is None
    crashed = failure([_run(0, "crashed", peer), _run(1, "crashed", "RuntimeError: boom")], 2)
    assert crashed.startswith("rank 1 crashed at step 7: RuntimeError: boom") and "rank 0 lost its peer" in crashed
    killed = failure([_run(0, "crashed", peer), _run(1, "running", steps=0)], 2)
    assert killed.startswith("rank 1 was killed") and "step 5" in killed
    assert failure([_run(0, "budget")], 2).startswith("rank 1 recorded no run")


def test_explain_puts_the_rank_setting_before_its_divergence() -> None:
    from invariants.check import Violation

    def v(target: str, family: str) -> Violation:
        return Violation(id=target, template="range", target=(target,), severity="error", expected="",
                         observed="", step=0, phase="train", locus=None, family=family, message=target)
    causes = explain([v("dist.block.fc1.param_divergence", "replica_divergence"),
                      v("dist.lr_divergence", "rank_config_mismatch")])
    assert [c.family for c in causes] == ["rank_config_mismatch"]


# -- end to end on two ranks (slow) --------------------------------------------------------------
