"""Distributed runs (docs/distributed.md): invar runs once per rank under torchrun, every
rank records its own run in the shared store, and the ranks' runs are merged from there.

Two ways in, one path. `invar check --nproc-per-node N SCRIPT ...` launches
`python -m torch.distributed.run --standalone --nproc-per-node N -m invariants.cli check ...`
and merges once torchrun returns. The per-rank command also works under a torchrun the
user starts; rank 0 then waits for the other ranks' runs to end and merges. Merging reads
the store, not the ranks' processes: a rank that was killed still left its trace up to
its last observed step, and the merge names it. On several nodes each node has its own
store: the ranks first send their runs to rank 0's store (merge.gather_runs), and the
merge reads that one; `invar merge` copies node stores together offline.
"""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from invariants.app.record import trace_to_store
from invariants.app.static import StaticPhase
from invariants.app.store import RunInfo, Store, is_failure
from invariants.check import Checker, Violation
from invariants.explain import explain
from invariants.model import InvariantSet
from invariants.report import CheckReport
from tracer.blocks import WRAPPERS
from tracer.distributed import FINDINGS_FACT, CrossRankObserver
from tracer.rank_env import RankInfo, destroy_default_group, sigterm_ends_run
from tracer.runner import RunResult
from tracer.session import TraceConfig

GROUP_ENV = "INVAR_GROUP"        # set by the launcher: the launch every rank's run belongs to
LAUNCHED_ENV = "INVAR_LAUNCHED"  # set by the launcher: it merges, the ranks only trace
WAIT_ENV = "INVAR_RANK_WAIT"     # seconds rank 0 waits for the other ranks (direct torchrun)
WAIT_SECONDS = 300.0
# A rank whose run failed on one of these lost a peer: a consequence, not the root cause.
PEER_FAILURE = re.compile(r"connection (closed|reset)|broken pipe|gloo|nccl|timed? ?out|socket|"
                          r"peer|terminated|sigterm|distnetworkerror|distbackenderror", re.I)


def new_group() -> str:
    """A fresh launch id."""
    return "invar-" + uuid.uuid4().hex[:12]


def launched_by_invar() -> bool:
    """This rank was started by invar's launcher (which merges), not by the user's torchrun."""
    return os.environ.get(LAUNCHED_ENV) == "1"


SEED_ENV = "INVAR_SEED_OFFSET"  # set by the launcher: seed offset of a check run (invar eval's fresh seed)


def launch(verb: str, argv: Sequence[str], nproc: int, group: str, *, stdout: Any = None, stderr: Any = None,
           seed_offset: int = 0) -> int:
    """Runs `invar VERB ARGV` once per rank under torch.distributed.run (one node,
    rendezvous on a free local port); returns torchrun's exit status."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env[GROUP_ENV], env[LAUNCHED_ENV], env[SEED_ENV] = group, "1", str(seed_offset)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")  # what torchrun sets anyway, without its banner
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "invariants.cli", verb, *argv]
    return subprocess.run(cmd, env=env, stdout=stdout, stderr=stderr).returncode


def seed_offset() -> int:
    """The seed offset the launcher asked this rank's check to use (0 by default)."""
    return int(os.environ.get(SEED_ENV) or 0)


class RanksFailed(Exception):
    """A rank of a launched reference run crashed or was killed; the traces are kept."""


def infer_launched(script: str, args: Sequence[str], nproc: int, *, runs: int = 3, steps: int = 30,
                   store_dir: str = ".invar", quiet: bool = False) -> Any:
    """`invar infer --nproc-per-node N` as a library call: the InferOutcome of the launch."""
    from invariants.app import workflow
    group = new_group()
    out = subprocess.DEVNULL if quiet else None
    launch("infer", ["--runs", str(runs), "--steps", str(steps), "--store", store_dir, str(script), "--", *args],
           nproc, group, stdout=out, stderr=out)
    with Store(store_dir) as store:
        done = group_runs(store, group)
    fail = failure(done, nproc, runs)
    if fail:
        raise RanksFailed(fail)
    outcome = workflow.infer_from_store(reference_run_ids(done), store_dir)
    outcome.invariants = mine_meta(outcome.invariants, nproc)
    return outcome


def check_launched(script: str, args: Sequence[str], against: str, invariants: InvariantSet, nproc: int, *,
                   steps: Optional[int] = None, store_dir: str = ".invar", seed_offset: int = 0,
                   quiet: bool = False) -> CheckReport:
    """`invar check --nproc-per-node N` as a library call: the merged report. `against` is
    the invariant file the ranks load (they only need it to validate)."""
    group = new_group()
    out = subprocess.DEVNULL if quiet else None
    extra = ["--steps", str(steps)] if steps is not None else []
    launch("check", ["--against", against, "--store", store_dir, *extra, str(script), "--", *args],
           nproc, group, stdout=out, stderr=out, seed_offset=seed_offset)
    return check_group(store_dir, group, invariants, nproc, script=str(script), against=against)


# -- per rank -------------------------------------------------------------------------------
class RankStaticPhase(StaticPhase):
    """The static phase of a rank: the solver analyses the model a DDP wrapper holds."""

    def model(self, root: Any) -> Any:
        return root.module if isinstance(root, WRAPPERS) else root


def trace_rank(store_dir: str, script: str, args: Sequence[str], config: TraceConfig, info: RankInfo,
               *, label: str, seed_offset: int = 0, reference: Optional[int] = None) -> RunResult:
    """Traces this rank's run of the script with the cross-rank observer; writes every
    observed step at once (a killed rank loses at most one) and records how it ended."""
    facts: Dict[str, Any] = {"group": info.group, "rank": info.rank, "world_size": info.world_size,
                             "attempt": info.attempt}
    if reference is not None:
        facts["reference"] = reference
    with Store(store_dir) as store, sigterm_ends_run() as terminated:
        try:
            res = trace_to_store(store, script, args, config, label=f"{label} rank {info.rank}/{info.world_size}",
                                 seed_offset=seed_offset, extensions=[RankStaticPhase(), CrossRankObserver()],
                                 rank=info.rank, world_size=info.world_size, facts=facts, write_batch=1)
        finally:
            destroy_default_group(reference or 0)  # a stopped script left it open; the next run opens it
        if terminated and res.run_id:
            res.status, res.error = "terminated", "terminated by SIGTERM (the launcher stopped this rank)"
            store.finish_run(res.run_id, res.status, res.steps, res.error)
    return res


# -- reading a group back ---------------------------------------------------------------------
@dataclass
class RankRun:
    """One rank's run of a launch, as the store has it."""

    rank: int
    run: RunInfo
    reference: Optional[int]
    last_step: Optional[int]
    attempt: int = 0  # torchrun's restart count when it ran

    @property
    def kind(self) -> str:
        """infer, check or trace: what the launch was (its run labels say)."""
        if self.reference is not None:
            return "infer"
        return "check" if (self.run.label or "").startswith("check") else "trace"

    @property
    def ended(self) -> bool:
        return self.run.status != "running"


def group_runs(store: Store, group: str) -> List[RankRun]:
    """Every run of the launch, by (reference run, rank)."""
    return launches(store, only=group).get(group, [])


def launches(store: Store, only: Optional[str] = None) -> Dict[str, List[RankRun]]:
    """Every launch in the store (its group id -> its runs), oldest first, or the one
    `only` names; a restarted attempt of a torchrun job is a launch of its own (its group
    names the attempt)."""
    out: Dict[str, List[RankRun]] = {}
    for info in store.runs():
        facts = store.facts(info.id)
        if facts.get("group") and (only is None or facts["group"] == only):
            out.setdefault(facts["group"], []).append(RankRun(info.rank, info, facts.get("reference"),
                                                              store.last_step(info.id), facts.get("attempt") or 0))
    return {g: sorted(runs, key=lambda r: (r.reference or 0, r.rank, r.run.started)) for g, runs in out.items()}


def wait_for_group(store_dir: str, group: str, world_size: int, runs_per_rank: int = 1,
                   timeout: Optional[float] = None) -> List[RankRun]:
    """Rank 0's wait (direct torchrun): until every rank's runs have ended, or the timeout."""
    limit = float(os.environ.get(WAIT_ENV, WAIT_SECONDS)) if timeout is None else timeout
    deadline = time.monotonic() + limit
    while True:
        with Store(store_dir) as store:
            runs = group_runs(store, group)
        done = [r for r in runs if r.ended]
        if len(done) >= world_size * runs_per_rank or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


def failure(runs: Sequence[RankRun], world_size: int, runs_per_rank: int = 1,
            unreached: Optional[Mapping[int, str]] = None) -> Optional[str]:
    """Which rank(s) failed first and how, or None when every rank ran to its end.

    A rank that was killed, never started or crashed on its own is a root; a rank that
    then lost its peer (a collective error) or was stopped by the launcher is a consequence.
    `unreached`: ranks of a multi-node job whose runs rank 0 did not receive, and why."""
    roots: List[str] = []
    after: List[str] = []
    for rank in range(world_size):
        mine = [r for r in runs if r.rank == rank]
        if unreached and rank in unreached and len(mine) < runs_per_rank:
            roots.append(f"rank {rank} sent no trace to rank 0: {unreached[rank]}; its node's store keeps what "
                         f"it recorded: copy it here and run `invar merge`")
        elif len(mine) < runs_per_rank:
            roots.append(f"rank {rank} recorded {'no run' if not mine else f'{len(mine)} of {runs_per_rank} runs'}"
                         " (it did not start, or died before tracing)")
        for r in mine:
            status, error = r.run.status, r.run.error or ""
            at = f" at step {r.run.steps}" if r.run.steps else ""
            if status == "running":
                ends = "" if r.last_step is None else f"; its last observation is at step {r.last_step}"
                roots.append(f"rank {rank} was killed (its run never ended{ends})")
            elif is_failure(status):  # raised, exited non-zero (sys.exit, os._exit), killed
                if PEER_FAILURE.search(error):
                    after.append(f"rank {rank} lost its peer{at}: {_first_sentence(error)}")
                else:
                    roots.append(f"rank {rank} crashed{at}: {error}")
            elif status in ("terminated", "interrupted"):
                after.append(f"rank {rank} was stopped{at}: {error or status}")
    if not roots and not after:
        return None
    if not roots:
        roots, after = after, []
    return "; ".join(roots) + (" (then " + "; ".join(after) + ")" if after else "")


def _first_sentence(error: str) -> str:
    # Collective errors carry a long advice tail after the first sentence.
    head = error.split(". ")[0]
    return head if len(head) <= 160 else head[:157] + "..."


# -- merging a check ----------------------------------------------------------------------------
def check_group(store_dir: str, group: str, invariants: InvariantSet, world_size: int, *, script: str,
                against: str, fail_on: str = "error", unreached: Optional[Mapping[int, str]] = None) -> CheckReport:
    """Checks every rank's stored run against the invariants and merges the results: a
    per-rank violation carries the ranks it happened on, a cross-rank (`dist.*`) one is
    reported once with the ranks and blocks that differ; a failed rank is the report's crash."""
    with Store(store_dir) as store:
        runs = group_runs(store, group)
        latest = {r.rank: r for r in runs}  # a re-launch under the same group: the last one
        rows = {rank: list(store.observations(r.run.id)) for rank, r in latest.items()}
        facts = [store.facts(r.run.id) for r in latest.values()]
    seconds = [float(f.get("seconds") or 0.0) for f in facts]
    differing = ranks_that_differ(facts)
    merged: Dict[str, Violation] = {}
    checked: set = set()
    for rank in sorted(latest):
        checker = Checker(invariants)
        checker.feed(rows[rank])
        checker.finish()
        checked |= checker.checked
        details = {(s, v[: -len(".ranks")]): t for s, _, v, _, t in rows[rank] if v.endswith(".ranks") and t}
        for v in sorted(checker.violations.values(), key=lambda v: (v.step, v.id)):
            at = (v.step, v.target[0])
            _merge(merged, v, rank, details.get(at), differing.get(at, ()))
    violations = sorted(merged.values(), key=lambda v: (v.step, v.id))
    for v in violations:
        if not v.target[0].startswith("dist."):
            v.message += f" [rank {','.join(map(str, v.ranks))}]"
    causes = explain(violations)
    ended = [r for r in latest.values() if r.ended]
    steps = min((r.run.steps if r.ended else (r.last_step or -1) + 1 for r in latest.values()), default=0)
    status = {r.run.status for r in ended}
    notes = [f"rank {rank}: run {r.run.id}, {r.run.status if r.ended else 'killed (never ended)'}, "
             f"{r.run.steps if r.ended else (r.last_step or -1) + 1} steps"
             + (f" ({_first_sentence(r.run.error)})" if r.run.error else "") for rank, r in sorted(latest.items())]
    notes += [f"rank {rank}: no trace received ({why})" for rank, why in sorted((unreached or {}).items())
              if rank not in latest]
    return CheckReport(script=script, against=against, run_id=",".join(r.run.id for _, r in sorted(latest.items())),
                       run_status=status.pop() if len(status) == 1 and len(ended) == len(latest) else "mixed",
                       steps=steps, invariants_total=len(invariants.invariants), invariants_checked=len(checked),
                       invariants_disabled=sum(1 for i in invariants.invariants if i.status == "disabled"),
                       violations=violations, causes=causes, seconds=max(seconds, default=0.0), fail_on=fail_on,
                       crash=failure(list(latest.values()), world_size, unreached=unreached), notes=notes)


def ranks_that_differ(facts: Sequence[Dict[str, Any]]) -> Dict[Tuple[int, str], Tuple[int, ...]]:
    """(step, dist.* variable) -> the ranks that differ there, from the ranks' findings
    facts (every rank records the same; a killed rank's come from its peers)."""
    out: Dict[Tuple[int, str], Tuple[int, ...]] = {}
    for f in facts:
        for found in f.get(FINDINGS_FACT) or ():
            out.setdefault((found["step"], found["variable"]), tuple(found["ranks"]))
    return out


def _merge(merged: Dict[str, Violation], v: Violation, rank: int, detail: Optional[str],
           differing: Tuple[int, ...]) -> None:
    old = merged.get(v.id)
    if v.target[0].startswith("dist."):
        # Every rank recorded the same cross-rank value: keep one, naming the ranks that differ.
        if old is None:
            merged[v.id] = dataclasses.replace(v, ranks=differing,
                                               message=v.message + (f" — {detail}" if detail else ""))
        return
    if old is None:
        merged[v.id] = dataclasses.replace(v, ranks=(rank,))
        return
    old.ranks = tuple(sorted(set(old.ranks) | {rank}))
    old.count += v.count
    if v.step < old.step:
        old.step, old.observed, old.message = v.step, v.observed, v.message


def mine_meta(invariants: InvariantSet, world_size: int) -> InvariantSet:
    """The invariant set with the launch's ranks per node in its meta (check launches as many)."""
    return dataclasses.replace(invariants, meta={**dict(invariants.meta), "nproc_per_node": world_size})


def reference_run_ids(runs: Sequence[RankRun]) -> List[str]:
    """Run ids to mine: every rank of every reference run, in (reference, rank) order."""
    return [r.run.id for r in runs]
