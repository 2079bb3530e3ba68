"""Beyond one node (docs/distributed.md), in process: runs exported from one store and
imported into another, the gather's blob, its roll call and side group (two threads
standing in for two ranks), a rank that never reaches it, restarted attempts kept apart,
and `invar merge` (tests/e2e/test_distributed_nodes.py runs two torchrun "nodes")."""
from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Dict, List

import pytest

from invariants.app import merge
from invariants.app.cli.distributed import merge as merge_command
from invariants.app.ranks import failure, group_runs, launches
from invariants.app.store import Store, StoreCorrupt
from invariants.errors import UsageError
from invariants.observation import Observation
from tracer.rank_env import RankInfo
from tracer.rank_gather import gather_to_rank0, gather_wanted


def _run(store: Store, rank: int, group: str, steps: int = 3, attempt: int = 0, end: bool = True,
         world: int = 2) -> str:
    run_id = store.new_run("/x/train.py", ["--a"], label=f"check rank {rank}/{world}", rank=rank, world_size=world)
    for key, value in {"group": group, "rank": rank, "world_size": world, "attempt": attempt}.items():
        store.set_fact(run_id, key, value)
    store.add_observations(run_id, [Observation(s, "train", "loss.value", 1.0 / (s + 1), None) for s in range(steps)]
                           + [Observation(0, "train", "note", None, "text")])
    store.set_graph(run_id, {"nodes": [1, 2]})
    if end:
        store.finish_run(run_id, "budget", steps)
    return run_id


def test_a_run_exported_and_imported_is_the_same_run(tmp_path: Path) -> None:
    with Store(tmp_path / "a") as a, Store(tmp_path / "b") as b:
        rid = _run(a, 1, "g")
        assert b.import_run(a.export_run(rid)) == "added"
        assert b.run(rid) == a.run(rid)
        assert b.facts(rid) == a.facts(rid) and b.graph(rid) == a.graph(rid)
        assert list(b.observations(rid)) == list(a.observations(rid))
        assert b.import_run(a.export_run(rid)) == "kept"  # idempotent: rank 0's node shares the store
        assert b.observation_count(rid) == 4


def test_an_import_replaces_a_copy_that_had_not_ended(tmp_path: Path) -> None:
    with Store(tmp_path / "a") as a, Store(tmp_path / "b") as b:
        rid = _run(a, 1, "g", end=False)
        b.import_run(a.export_run(rid))
        a.add_observations(rid, [Observation(3, "train", "loss.value", 0.2, None)])
        a.finish_run(rid, "budget", 4)
        assert b.import_run(a.export_run(rid)) == "replaced"
        assert b.run(rid).status == "budget" and b.observation_count(rid) == 5
        stale = {**a.export_run(rid), "run": [rid, *[None] * 5, "running", 0, 0, 1, 2, None]}
        assert b.import_run(stale) == "kept"  # a copy that never ended does not undo an ending


def test_a_blob_that_is_not_a_packed_run_list_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "a") as a:
        rid = _run(a, 0, "g")
        records = merge.unpack(merge.pack(a, [rid]))
    assert [r["run"][0] for r in records] == [rid]
    with pytest.raises(StoreCorrupt, match="not a packed run list"):
        merge.unpack(b"garbage")
    with Store(tmp_path / "b") as b, pytest.raises(StoreCorrupt, match="version"):
        b.import_run({**records[0], "version": 99})


@pytest.mark.parametrize("env, wanted", [
    ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4", "GROUP_WORLD_SIZE": "1"}, False),  # one node
    ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "GROUP_WORLD_SIZE": "2"}, True),   # two nodes
    ({"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1"}, True),
    ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "INVAR_GATHER": "0"}, False),
    ({"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "INVAR_GATHER": "1"}, True),
])
def test_ranks_gather_when_the_job_spans_nodes_or_when_told(env: Dict[str, str], wanted: bool) -> None:
    assert gather_wanted(env) is wanted


def test_a_restarted_attempt_is_a_launch_of_its_own() -> None:
    env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1", "TORCHELASTIC_RUN_ID": "j"}
    first = RankInfo.from_env({**env, "TORCHELASTIC_RESTART_COUNT": "0"})
    second = RankInfo.from_env({**env, "TORCHELASTIC_RESTART_COUNT": "1"})
    assert first and second and first.group != second.group and (first.attempt, second.attempt) == (0, 1)
    given = RankInfo.from_env({**env, "INVAR_GROUP": "g", "TORCHELASTIC_RESTART_COUNT": "2"})
    assert given and given.group == "g-attempt2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_in_threads(monkeypatch: pytest.MonkeyPatch, world: int, ranks: List[int], wait_s: float) -> Dict:
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)  # rank 0 hosts the store
    out: Dict[int, object] = {}

    def rank(r: int) -> None:
        out[r] = gather_to_rank0("job-1", r, world, f"blob of rank {r}".encode() * (r + 1), wait_s=wait_s)

    threads = [threading.Thread(target=rank, args=(r,)) for r in ranks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_the_gather_brings_every_rank_blob_to_rank_0(monkeypatch: pytest.MonkeyPatch) -> None:
    got = _gather_in_threads(monkeypatch, 3, [0, 1, 2], wait_s=20)
    assert got[0].received == {r: f"blob of rank {r}".encode() * (r + 1) for r in range(3)}
    assert not got[0].missing and got[1].sent and got[2].sent


def test_a_rank_that_never_reaches_the_gather_is_named_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    got = _gather_in_threads(monkeypatch, 3, [0, 1], wait_s=1.0)  # rank 2 is gone
    assert set(got[0].received) == {0, 1}
    assert "did not reach the gather within 1 s" in got[0].missing[2]
    assert got[0].seconds < 15


def test_failure_names_a_rank_rank_0_heard_nothing_from(tmp_path: Path) -> None:
    with Store(tmp_path / "s") as s:
        _run(s, 0, "g")
        runs = group_runs(s, "g")
    why = failure(runs, 2, unreached={1: "it did not reach the gather within 20 s"})
    assert why and why.startswith("rank 1 sent no trace to rank 0: it did not reach the gather")
    assert "invar merge" in why


def test_merge_copies_node_stores_and_keeps_attempts_apart(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with Store(tmp_path / "node0") as n0, Store(tmp_path / "node1") as n1:
        _run(n0, 0, "job-a0", attempt=0)
        _run(n1, 1, "job-a0", attempt=0, end=False)  # killed in the first attempt
        _run(n0, 0, "job-a1", attempt=1)
        _run(n1, 1, "job-a1", attempt=1)
    merge_command.main([str(tmp_path / "node0"), str(tmp_path / "node1"), "--store", str(tmp_path / "all")],
                       standalone_mode=False)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("job-a0  check  attempt 0  2 ranks  2 runs  FAILED: rank 1 was killed")
    assert out[1] == "job-a1  check  attempt 1  2 ranks  2 runs  complete"
    with Store(tmp_path / "all") as s:
        assert [len(r) for r in launches(s).values()] == [2, 2]


def test_merge_refuses_a_directory_without_a_store(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="holds no store"):  # exit 2
        merge_command.main([str(tmp_path / "nothing"), "--store", str(tmp_path / "all")], standalone_mode=False)


def test_a_failed_rank_leaves_its_blob_and_does_not_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    got: Dict[int, object] = {}
    zero = threading.Thread(target=lambda: got.setdefault(0, gather_to_rank0("job-2", 0, 2, b"zero", wait_s=20)))
    zero.start()
    failed = gather_to_rank0("job-2", 1, 2, b"one", wait_s=20, failed=True)  # returns before rank 0 reads it
    assert failed.sent
    zero.join(60)
    assert got[0].received == {0: b"zero", 1: b"one"} and not got[0].missing
