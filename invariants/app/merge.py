"""Runs moved between stores, for jobs whose ranks do not share one store
(docs/distributed.md, "Beyond one node").

At the end of a multi-node job every rank packs its runs of the launch (the run, its
facts, graph and observations: `Store.export_run`) into one compressed blob, and rank 0
receives the blobs over invar's side group (tracer/rank_gather.py) and writes them into its
own store, where the merge reads them as if every rank had written there. `invar merge`
does the same offline, from store directories copied off the nodes, when the gather could
not run (a rank killed before the end). Importing is idempotent: a run already there is
kept unless the incoming copy got further (ranks of one node that share rank 0's store).
"""
from __future__ import annotations

import json
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Sequence

from invariants.app.store import Store, StoreCorrupt

if TYPE_CHECKING:
    from tracer.rank_env import RankInfo

PACK_LEVEL = 6  # zlib: variable names repeat on every row, so the blob is a fraction of the rows


def pack(store: Store, run_ids: Sequence[str]) -> bytes:
    """The runs as one compressed blob (JSON inside: nothing a peer sends is executed)."""
    return pack_records([store.export_run(r) for r in run_ids])


def pack_records(records: List[dict]) -> bytes:
    return zlib.compress(json.dumps(records).encode(), PACK_LEVEL)


def unpack(blob: bytes) -> List[dict]:
    """The run records of a blob; StoreCorrupt when it is not one."""
    try:
        records = json.loads(zlib.decompress(blob))
    except (zlib.error, ValueError) as e:
        raise StoreCorrupt(f"a gathered blob of {len(blob)} bytes is not a packed run list: {e}") from e
    if not isinstance(records, list):
        raise StoreCorrupt("a gathered blob does not hold a list of runs")
    return records


@dataclass
class GatherOutcome:
    """What the gather did for this rank: on rank 0, the runs written into its store."""

    unreached: Dict[int, str] = field(default_factory=dict)  # rank -> why rank 0 has nothing from it
    imported: Counter = field(default_factory=Counter)        # added / kept / replaced
    bytes_sent: int = 0          # this rank's blob
    bytes_received: int = 0      # rank 0: the other ranks' blobs
    observations: int = 0        # in this rank's blob
    steps: int = 0               # observed steps in this rank's blob (summed over its runs)
    seconds: float = 0.0         # the whole gather on this rank: packing, sending, writing (rank 0)
    error: str = ""              # the transport failed (the traces stay in each node's store)


def gather_runs(store_dir: str, info: "RankInfo", run_ids: Sequence[str], *, failed: bool = False) -> GatherOutcome:
    """Every rank: sends its runs `run_ids` to rank 0; rank 0 writes what it received into
    `store_dir`. `info` is this process's tracer.rank_env.RankInfo. Never raises for a
    transport fault: it is the outcome's `error` (and, on rank 0, every rank unreached)."""
    from tracer.rank_gather import gather_to_rank0
    start = time.monotonic()
    out = GatherOutcome()
    with Store(store_dir) as store:
        records = [store.export_run(r) for r in run_ids]
    blob = pack_records(records)
    out.bytes_sent = len(blob)
    out.observations = sum(len(r["observations"]) for r in records)
    out.steps = sum(len({o[0] for o in r["observations"]}) for r in records)
    try:
        got = gather_to_rank0(info.group, info.rank, info.world_size, blob, failed=failed)
    except Exception as e:  # the store or a peer went away: say so, keep the local traces
        out.error = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
        if info.rank == 0:
            out.unreached = {r: f"the gather failed ({out.error})" for r in range(1, info.world_size)}
        return out
    out.unreached = dict(got.missing)
    out.bytes_received = got.bytes_received
    if info.rank != 0:
        out.seconds = time.monotonic() - start
        return out
    with Store(store_dir) as store:
        for rank, data in sorted(got.received.items()):
            if rank == 0:
                continue
            try:
                for record in unpack(data):
                    out.imported[store.import_run(record)] += 1
            except StoreCorrupt as e:
                out.unreached[rank] = str(e)
    out.seconds = time.monotonic() - start
    return out


@dataclass
class MergeOutcome:
    """`invar merge`: per source store, how many runs were added, kept or replaced."""

    sources: Dict[str, Counter] = field(default_factory=dict)


def merge_stores(sources: Sequence[str], target: str) -> MergeOutcome:
    """Imports every run of every source store into the target store."""
    out = MergeOutcome()
    with Store(target) as into:
        for source in sources:
            counts: Counter = Counter()
            with Store(source, create=False) as src:
                for run in src.runs():
                    counts[into.import_run(src.export_run(run.id))] += 1
            out.sources[source] = counts
    return out
