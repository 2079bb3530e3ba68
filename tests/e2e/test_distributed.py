"""Distributed runs (docs/distributed.md) end to end on two CPU ranks (gloo) under
torchrun: the ddp_mlp corpus bugs are reported with the ranks and blocks that diverged, ok
variants are clean, and a crashed or killed rank leaves the others' traces and makes check exit 3 naming it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from tests.conftest import ROOT, SCRIPTS, run_invar

CASE = ROOT / "corpus" / "ddp_mlp"
FAULTS = str(SCRIPTS / "ddp_faults.py")


# -- digests and comparison (fast) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ddp")
    r = run_invar("infer", "--nproc-per-node", "2", str(CASE / "reference.py"), "--runs", "3", "--steps", "20",
                  "-o", str(d / "inv.yaml"), "--store", str(d / "store"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "replica_divergence" in r.stdout and "duplicate_shards" in r.stdout
    return d


def _check(learned: Path, script: str, *args: str) -> tuple:
    r = run_invar("check", str(CASE / script), "--against", str(learned / "inv.yaml"),
                  "--store", str(learned / "store"), "--format", "json", *args)
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip().startswith("{") else None), r


@pytest.mark.slow
@pytest.mark.parametrize("script, family, blocks, first_step", [
    ("bug_raw_module.py", "replica_divergence", True, 10),  # unsynced at step 7, sampled at 10
    ("bug_no_sampler.py", "duplicate_shards", False, 0),
    ("bug_rank_lr.py", "rank_config_mismatch", False, 0),
    ("bug_clip_rank0.py", "unsynced_gradients", True, 0),
])
def test_distributed_bug_is_reported_with_ranks_and_blocks(learned: Path, script: str, family: str,
                                                           blocks: bool, first_step: int) -> None:
    code, doc, r = _check(learned, script)
    assert code == 1, r.stderr
    assert doc["summary"]["steps"] == 20 and doc["summary"]["crash"] is None
    top = doc["causes"][0]
    assert top["family"] == family and top["severity"] == "error", doc["causes"]
    mine = [v for v in doc["violations"] if v["family"] == family]
    assert min(v["step"] for v in mine) == first_step
    assert all(v["ranks"] == [0, 1] for v in mine), mine  # the ranks that differ
    assert "ranks 0,1" in top["summary"]
    if blocks:
        assert "module.fc1" in top["locus"] and "module.head" in top["locus"]


@pytest.mark.slow
@pytest.mark.parametrize("script", ["ok_seed.py", "ok_batch16.py", "ok_no_sync_accum.py"])
def test_distributed_ok_variant_is_clean(learned: Path, script: str) -> None:
    code, doc, r = _check(learned, script)
    assert code == 0, r.stdout
    assert doc["summary"]["errors"] == 0
    assert not [v for v in doc["violations"] if v["target"][0].startswith("dist.")]


def _runs_of(store: Path) -> List[dict]:
    from invariants.app.store import Store
    with Store(store) as s:
        return [dict(rank=i.rank, status=i.status, observations=s.observation_count(i.id),
                     last=s.last_step(i.id)) for i in s.runs() if i.label and i.label.startswith("check")]


@pytest.mark.slow
@pytest.mark.parametrize("how, phrase", [("raise", "rank 1 crashed at step 7: RuntimeError: boom on rank 1"),
                                         ("kill", "rank 1 was killed")])
def test_a_failed_rank_exits_3_naming_it_and_keeps_the_traces(learned: Path, tmp_path: Path, how: str,
                                                              phrase: str) -> None:
    store = tmp_path / "store"
    r = run_invar("check", FAULTS, "--against", str(learned / "inv.yaml"), "--store", str(store),
                  "--steps", "20", "--", "--fail-rank", "1", "--fail-at", "7", "--how", how)
    assert r.returncode == 3, r.stdout + r.stderr
    assert phrase in r.stderr and phrase in r.stdout
    runs = {x["rank"]: x for x in _runs_of(store)}
    assert set(runs) == {0, 1}
    for rank in (0, 1):  # both ranks' observations up to the failure are in the store
        assert runs[rank]["observations"] > 0 and runs[rank]["last"] >= 5
    assert runs[1]["status"] == ("crashed" if how == "raise" else "running")  # a killed run never ends


@pytest.mark.slow
def test_direct_torchrun_invocation_merges_on_rank_0(learned: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "invariants.cli", "check", str(CASE / "bug_no_sampler.py"), "--against",
           str(learned / "inv.yaml"), "--store", str(learned / "store")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode != 0  # rank 0 exits 1; torchrun reports the failed worker
    assert "duplicate_shards" in r.stdout and "rank 0: run" in r.stdout and "rank 1: run" in r.stdout
    assert "rank 0 prints the merged report" in r.stderr
