"""Record a traced run in the store: the run, its observations as they are flushed, its
graph (captured by the tracer's GraphCapture extension) and facts, and how it ended."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from invariants.app.scripts import check_script
from invariants.app.store import Store
from invariants.observation import Observation
from tracer.extension import Extension
from tracer.graph import GraphCapture
from tracer.runner import RunResult, run_script
from tracer.session import TraceConfig

WRITE_BATCH = 5000


class BufferedWriter:
    """A session sink that writes observations to the store in batches of WRITE_BATCH rows
    (one transaction each) instead of one transaction per flush; `close()` writes the rest."""

    def __init__(self, store: Store, run_id: str, batch: int = WRITE_BATCH):
        self.store, self.run_id = store, run_id
        self.rows: List[Observation] = []
        self.batch = batch

    def __call__(self, rows: List[Observation]) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= self.batch:
            self.close()

    def close(self) -> None:
        self.store.add_observations(self.run_id, self.rows)
        self.rows = []


def trace_to_store(store: Store, script: str | os.PathLike, args: Sequence[str], config: TraceConfig,
                   *, label: Optional[str] = None, seed_offset: int = 0,
                   listeners: Sequence[Callable[[List[Observation]], None]] = (),
                   extensions: Sequence[Extension] = (), rank: int = 0, world_size: int = 1,
                   facts: Optional[Dict[str, Any]] = None, write_batch: int = WRITE_BATCH) -> RunResult:
    """Runs the script traced (with `extensions`, and a GraphCapture of its own) and records
    run, observations, graph and facts in `store`; `listeners` see the rows of each flush.

    Distributed ranks pass their `rank`/`world_size`, `facts` recorded before the run starts
    (the launch group, so that a killed rank's partial trace is still found) and
    `write_batch=1` (every flush written at once: a killed rank loses at most one step).
    The extensions' own facts are recorded after the run, before it is marked ended."""
    path = check_script(script)
    run_id = store.new_run(str(path), list(args), label=label, seed_offset=seed_offset,
                           rank=rank, world_size=world_size)
    for key, value in {"tracing": config.naming_options(), **(facts or {})}.items():
        store.set_fact(run_id, key, value)  # tracing: the options that shape variable names
    writer = BufferedWriter(store, run_id, write_batch)

    def sink(rows: List[Observation]) -> None:
        writer(rows)
        for listen in listeners:
            listen(rows)

    graph = GraphCapture()
    try:
        result = run_script(path, args, config, sink, seed_offset=seed_offset, extensions=[*extensions, graph])
    finally:
        writer.close()
    result.run_id = run_id
    result.graph = graph.summary()
    if graph.record is not None:
        store.set_graph(run_id, graph.record.to_json())
    store.set_fact(run_id, "root_model", result.root_model)
    store.set_fact(run_id, "graph", result.graph)
    store.set_fact(run_id, "seconds", round(result.seconds, 3))
    store.set_fact(run_id, "torch", str(torch.__version__))
    if result.faults:
        store.set_fact(run_id, "faults", result.faults)
    for key, value in result.facts.items():
        store.set_fact(run_id, key, value)
    store.finish_run(run_id, result.status, result.steps, result.error)
    return result
