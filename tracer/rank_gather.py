"""The end-of-job gather (docs/distributed.md, "Beyond one node"): every rank sends one
blob of bytes to rank 0 over a side process group that invar builds for it.

Why after the traced window, in the rank's own process, over a group of its own: the
script's default group may already be gone (the script destroyed it, or crashed, or the
step budget stopped it mid-loop), and the user's collectives must never be paired with
ours. torchrun's own key-value store outlives the script: with the c10d rendezvous the
agent of node 0 hosts it at MASTER_ADDR:MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE=True)
for as long as rank 0 runs; otherwise rank 0 hosts it (multi-tenant: the script's server
when it is still up). Under a prefix of the launch's id the ranks first answer a roll call
there, rank 0 publishes who answered, and only those ranks build a gloo group (CPU, the
same on NCCL jobs) in which each sends its blob to rank 0. A rank that died never answers
the roll call: rank 0 waits for it a bounded time and names it, it never hangs. A rank
whose own run failed does not wait for the others: its peers may be blocked in one of the
script's collectives with it until its process ends, so it leaves its blob in the store
(where rank 0 picks it up) and exits.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Dict, List, Mapping, Optional

GATHER_ENV = "INVAR_GATHER"            # 1: always gather, 0: never, unset: when the job spans nodes
GATHER_WAIT_ENV = "INVAR_GATHER_WAIT"  # seconds rank 0 waits for the other ranks' roll call
GATHER_WAIT_S = 120.0
AFTER_FAILURE_WAIT_S = 20.0  # when this rank's own run failed: its peers are likely gone too
POLL_S = 0.05


def gather_wanted(env: Optional[Mapping[str, str]] = None) -> bool:
    """Whether the ranks gather their runs on rank 0: forced by INVAR_GATHER=1|0, else when
    the job spans several nodes (whose stores cannot be assumed to be one)."""
    e = os.environ if env is None else env
    forced = e.get(GATHER_ENV, "").strip().lower()
    if forced in ("1", "true", "yes", "always"):
        return True
    if forced in ("0", "false", "no", "never"):
        return False
    world = int(e.get("WORLD_SIZE", "1"))
    local = int(e.get("LOCAL_WORLD_SIZE", str(world)))
    return int(e.get("GROUP_WORLD_SIZE", "1")) > 1 or local < world


@dataclass
class Gathered:
    """What rank 0 received (on other ranks: only whether their blob was sent)."""

    received: Dict[int, bytes] = field(default_factory=dict)  # rank -> blob (rank 0's own included)
    missing: Dict[int, str] = field(default_factory=dict)     # rank -> why nothing came from it
    sent: bool = False
    seconds: float = 0.0

    @property
    def bytes_received(self) -> int:
        return sum(len(b) for r, b in self.received.items() if r != 0)


def _job_store(rank: int, timeout: float):  # -> torch.distributed.Store
    import torch.distributed as dist
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not addr or not port:
        raise RuntimeError("MASTER_ADDR/MASTER_PORT are not set: not a torchrun rank")
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    return dist.TCPStore(addr, int(port), None, not agent and rank == 0, timedelta(seconds=timeout),
                         wait_for_workers=False, multi_tenant=True)


def gather_to_rank0(key: str, rank: int, world_size: int, blob: bytes, *, wait_s: Optional[float] = None,
                    failed: bool = False) -> Gathered:
    """Sends `blob` to rank 0 (every rank calls this once, at the end of its work); rank 0
    returns every blob it received, and why each missing rank sent none. `key` names the
    launch (its ranks share it, another launch or restart does not). `wait_s`: how long
    rank 0 waits for the roll call (INVAR_GATHER_WAIT, else GATHER_WAIT_S; AFTER_FAILURE_WAIT_S
    at most when `failed`: its own run failed), the other ranks that long and 30 s more for
    rank 0's answer. Errors of the transport are raised."""
    import torch
    import torch.distributed as dist
    start = time.monotonic()
    if wait_s is None:
        wait_s = float(os.environ.get(GATHER_WAIT_ENV) or GATHER_WAIT_S)
        if failed and rank == 0:  # only rank 0 shortens its wait: the others must outwait it
            wait_s = min(wait_s, AFTER_FAILURE_WAIT_S)
    out = Gathered()
    if world_size <= 1:
        out.received[0], out.sent = blob, True
        return out
    store = dist.PrefixStore(f"invar-gather/{key}/", _job_store(rank, wait_s + 60.0))
    # A rank whose run failed leaves its blob in the store and goes: its peers may be blocked
    # in one of the script's collectives with it until its process ends.
    deposit = failed and rank != 0
    if deposit:
        store.set(f"blob/{rank}", blob)
    store.set(f"ready/{rank}", json.dumps([len(blob), deposit]))
    if deposit:
        out.sent, out.seconds = True, time.monotonic() - start
        return out
    if rank == 0:
        out.received[0] = blob
        members = _roll_call(store, world_size, wait_s, out)
        store.set("members", json.dumps(members))
    else:
        store.wait(["members"], timedelta(seconds=wait_s + 30.0))  # rank 0 publishes it by its deadline
        members = json.loads(store.get("members"))
        if rank not in [m for m, _ in members]:
            out.seconds = time.monotonic() - start
            return out  # too late: rank 0 named this rank and went on without it
    ranks = [m for m, _ in members]
    if len(ranks) == 1:  # nobody else to hear from over a group
        out.sent, out.seconds = True, time.monotonic() - start
        return out
    group = dist.ProcessGroupGloo(dist.PrefixStore("group/", store), ranks.index(rank), len(ranks),
                                  timedelta(seconds=wait_s + 30.0))
    if rank == 0:
        for i, (member, size) in enumerate(members[1:], start=1):
            buf = torch.empty(size, dtype=torch.uint8)
            try:
                if size:
                    group.recv([buf], i, 0).wait()
                out.received[member] = bytes(buf.numpy())
            except Exception as e:  # a rank that died between the roll call and its send
                out.missing[member] = f"its send failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
    elif blob:
        group.send([torch.frombuffer(bytearray(blob), dtype=torch.uint8)], 0, 0).wait()
    out.sent = True
    out.seconds = time.monotonic() - start
    return out


def _roll_call(store, world_size: int, wait_s: float, out: Gathered) -> List[List[int]]:
    """Rank 0: [[rank, blob size]] of the ranks that answered by the deadline and wait to
    send (itself first); the blobs that failed ranks left in the store go to `out`."""
    deadline = time.monotonic() + wait_s
    waiting = set(range(1, world_size))
    answered: Dict[int, int] = {0: int(json.loads(store.get("ready/0"))[0])}
    while waiting and time.monotonic() < deadline:
        for r in sorted(waiting):
            if store.check([f"ready/{r}"]):
                size, deposited = json.loads(store.get(f"ready/{r}"))
                if deposited:
                    out.received[r] = bytes(store.get(f"blob/{r}"))
                else:
                    answered[r] = int(size)
                waiting.discard(r)
        if waiting:
            time.sleep(POLL_S)
    for r in sorted(waiting):
        out.missing[r] = f"it did not reach the gather within {wait_s:g} s (killed, hung, or its node is gone)"
    return [[r, answered[r]] for r in sorted(answered)]
