"""This process's place in a distributed job, and the plumbing a traced rank needs around
the user's script: SIGTERM turned into an exception the runner catches, and the default
process group torn down between reference runs (docs/distributed.md)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import signal
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

_RANK_ENV = ("RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a distributed job, from torchrun's environment."""

    rank: int
    world_size: int
    local_rank: int
    group: str   # identifies one launch: every rank of it records the same value
    attempt: int = 0  # torchrun's restart count (--max-restarts): 0 for the first attempt

    @staticmethod
    def from_env(env: Optional[Dict[str, str]] = None) -> Optional["RankInfo"]:
        """The rank of this process, or None when it was not started by torchrun."""
        e = os.environ if env is None else env
        if not all(k in e for k in _RANK_ENV):
            return None
        rank, world = int(e["RANK"]), int(e["WORLD_SIZE"])
        attempt = int(e.get("TORCHELASTIC_RESTART_COUNT") or 0)
        # A restarted attempt is a launch of its own: its runs are never merged with the failed one's.
        given = e.get("INVAR_GROUP")
        group = (given + (f"-attempt{attempt}" if attempt else "")) if given else _group_of_launch(e)
        return RankInfo(rank, world, int(e.get("LOCAL_RANK", rank)), group, attempt)


def _group_of_launch(env: Dict[str, str]) -> str:
    # Without invar's launcher, the ranks of one torchrun launch share its rendezvous id,
    # master address/port and restart count; a hash keeps the fact short.
    parts = [env.get(k, "") for k in ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT",
                                      "TORCHELASTIC_RESTART_COUNT")]
    return "torchrun-" + hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (torchrun tears the job down after another rank failed)."""


@contextlib.contextmanager
def sigterm_ends_run() -> Iterator[List[bool]]:
    """Turns SIGTERM into an exception the runner catches, so that a rank stopped by the
    launcher records how its run ended instead of vanishing; yields a flag list that holds
    True once the signal came. Only in the main thread; the previous handler is restored."""
    came: List[bool] = []

    def handler(signum: int, frame: Any) -> None:
        came.append(True)
        raise Terminated("terminated by SIGTERM")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield came
        return
    try:
        yield came
    finally:
        signal.signal(signal.SIGTERM, previous)


def destroy_default_group(incarnation: int) -> None:
    """Ends the script's default process group if a stopped run left it open, so that the
    next traced run in this process (reference run `incarnation`) can initialise it again.

    A re-created default group reuses its name, hence its keys in torchrun's store: a rank
    that re-initialises first reads a peer's stale address and hangs. Every rank moves the
    name on by the same amount (torch's private group counter, checked by the tests)."""
    import torch  # here: `RankInfo` is read by commands that never load torch (a check's supervisor)
    dist = torch.distributed
    if not dist.is_available():
        return
    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    world = getattr(getattr(dist, "distributed_c10d", None), "_world", None)
    if world is not None and hasattr(world, "group_count"):
        world.group_count = max(world.group_count, 1000 * (incarnation + 1))
