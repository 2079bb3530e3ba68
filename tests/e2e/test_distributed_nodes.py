"""Beyond one node (docs/distributed.md), end to end: two torchrun launches on this machine
act as two nodes (--nnodes 2, c10d rendezvous on 127.0.0.1), each rank with its own store
in its own temp directory. Rank 0 gathers the other node's runs over invar's side group and
its report equals the single-node launcher's on the ddp_mlp case: the same invariants
learned, the same verdicts on a bug and an ok variant, and every rank's observations in
rank 0's store (tests/unit/test_distributed_nodes.py covers the pieces in process)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Tuple

import pytest

from benchmarks.ddp_nodes import two_nodes, verdict
from invariants import invfile
from invariants.app.store import Store
from tests.conftest import ROOT, SCRIPTS, run_invar
from tests.e2e import test_distributed as one_node

CASE = ROOT / "corpus" / "ddp_mlp"
learned = one_node.learned  # the single-node launcher's invariants (its fixture, shared)


def _ids(path: Path) -> Dict[str, Tuple[str, str]]:
    return {i.id: (i.template, i.severity) for i in invfile.load(str(path)).invariants}


@pytest.fixture(scope="module")
def nodes_learned(learned: Path) -> Path:
    """The single-node launcher's invariants (test_distributed's fixture) and two nodes' (here)."""
    code, _, err, _ = two_nodes(learned, "infer", str(CASE / "reference.py"), "--runs", "3", "--steps", "20",
                                "-o", str(learned / "two.yaml"))
    assert code == 0, err
    stores = []
    for node in ("node0", "node1"):
        with Store(learned / node) as s:
            stores.append(sorted(r.rank for r in s.runs()))
    assert sorted(stores) == [[0, 0, 0, 1, 1, 1], [1, 1, 1]]  # rank 0's node has every rank's runs
    return learned


@pytest.mark.slow
def test_two_nodes_learn_the_invariants_one_node_learns(nodes_learned: Path) -> None:
    one, two = _ids(nodes_learned / "inv.yaml"), _ids(nodes_learned / "two.yaml")
    assert one == two
    assert any(i.startswith("range:dist.block.") for i in two)


@pytest.mark.slow
@pytest.mark.parametrize("script, code", [("bug_raw_module.py", 1), ("ok_seed.py", 0)])
def test_two_nodes_check_reports_what_one_node_reports(nodes_learned: Path, tmp_path: Path, script: str,
                                                       code: int) -> None:
    against = str(nodes_learned / "two.yaml")
    r = run_invar("check", str(CASE / script), "--against", against, "--store", str(tmp_path / "one"),
                  "--format", "json")
    one = verdict(r.returncode, r.stdout)
    code2, out, err, _ = two_nodes(tmp_path, "check", str(CASE / script), "--against", against, "--format", "json")
    two = verdict(code2, out)
    assert one == two and one["exit"] == code, (one, two)
    gathered = re.search(r"gathered 1 run\(s\) from 1 other rank\(s\) in ([\d.]+) s", err)
    assert gathered and float(gathered.group(1)) < 1.0, err  # the gather adds under 1 s
    # Nothing is lost: the other node's runs are in rank 0's store, every observation.
    stores = sorted(tmp_path.glob("node*"))
    with Store(stores[0]) as a, Store(stores[1]) as b:
        counts = [{r.id: (r.rank, s.observation_count(r.id)) for r in s.runs()} for s in (a, b)]
    rank0 = max(counts, key=len)
    other = min(counts, key=len)
    assert len(rank0) == 2 and len(other) == 1 and all(rank0[k] == v for k, v in other.items())


@pytest.mark.slow
def test_a_killed_rank_on_the_other_node_is_named_and_merge_recovers_its_trace(nodes_learned: Path,
                                                                              tmp_path: Path) -> None:
    code, out, err, _ = two_nodes(tmp_path, "check", str(SCRIPTS / "ddp_faults.py"), "--against",
                                  str(nodes_learned / "two.yaml"), "--steps", "20", "--", "--fail-rank", "1",
                                  "--fail-at", "7", "--how", "kill", env={"INVAR_GATHER_WAIT": "5"})
    assert code != 0 and "(exitcode: 3) local_rank: 0" in err, err  # torchrun reports rank 0's exit 3
    assert "rank 1 sent no trace to rank 0: it did not reach the gather within 5 s" in err
    m = run_invar("merge", str(tmp_path / "node0"), str(tmp_path / "node1"), "--store", str(tmp_path / "all"))
    assert m.returncode == 0, m.stderr
    assert "FAILED: rank 1 was killed (its run never ended; its last observation is at step 5)" in m.stdout


@pytest.mark.slow
def test_a_restarted_attempt_is_kept_apart_from_the_failed_one(tmp_path: Path) -> None:
    # One node, gathering forced: attempt 0 fails on rank 1, torchrun restarts, attempt 1 runs clean.
    # Without a store per attempt, torch 2.13's restarted gloo group reads the failed attempt's
    # keys in torchrun's shared store and cannot connect (a plain script fails the same way).
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", INVAR_GATHER="1",
               TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--max-restarts", "1", "-m", "invariants.cli", "trace", "--steps", "12", "--store", str(tmp_path / "s"),
           str(SCRIPTS / "ddp_restart.py")]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    m = run_invar("merge", str(tmp_path / "s"), "--store", str(tmp_path / "merged"))
    assert m.returncode == 0, m.stderr
    first, second = m.stdout.splitlines()
    assert "trace  attempt 0  2 ranks  2 runs  FAILED: rank 1 crashed at step 5" in first
    assert second.endswith("trace  attempt 1  2 ranks  2 runs  complete")
