"""Record a traced run in the store: the run, its observations as they are flushed, its
graph (captured by the tracer's GraphCapture extension) and facts, and how it ended
(`supervisor.stored_result` reads it back)."""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

import torch

from invariants import invfile
from invariants.app.runspec import STATIC_NOTES, STATIC_REPORT
from invariants.app.scripts import check_script
from invariants.app.static import StaticPhase, describe
from invariants.app.store import Store, StoreError
from invariants.check import Checker, Violation
from invariants.model import at_least
from invariants.observation import Observation
from tracer.extension import Extension, SessionView
from tracer.graph import GraphCapture
from tracer.ending import Interrupts, RunResult
from tracer.runner import run_script
from tracer.session import TraceConfig

if TYPE_CHECKING:
    from invariants.app.runspec import RunSpec

WRITE_BATCH = 5000
# Rows wait at most this long in memory: a process killed outright (SIGKILL, a segfault,
# the OOM killer) loses at most the last second of its trace.
WRITE_INTERVAL_S = 1.0


class StoreFaultStop(Extension):
    """Ends the run at the next optimizer step once the store stopped taking its rows
    (a full disk): tracing on would record nothing."""

    name = "store_fault"

    def __init__(self) -> None:
        self._session: Optional[SessionView] = None

    def attach(self, session: SessionView) -> None:
        self._session = session

    def stop(self, error: StoreError) -> None:
        if self._session is not None:
            self._session.request_stop(f"the store cannot be written: {error}")


class BufferedWriter:
    """A session sink that writes observations to the store in batches of `batch` rows
    (one transaction each), and at least every WRITE_INTERVAL_S (the first flush at once),
    instead of one transaction per flush; `close()` writes the rest. A store fault never reaches the user's script:
    it is kept in `fault`, later rows are dropped, and `on_fault(error)` is told once."""

    def __init__(self, store: Store, run_id: str, batch: int = WRITE_BATCH,
                 on_fault: Optional[Callable[[StoreError], None]] = None):
        self.store, self.run_id = store, run_id
        self.rows: List[Observation] = []
        self.batch = batch
        self.on_fault = on_fault
        self.fault: Optional[StoreError] = None
        self._written = float("-inf")  # the first flush (step 0: the structural facts) is written at once

    def __call__(self, rows: List[Observation]) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= self.batch or time.monotonic() - self._written >= WRITE_INTERVAL_S:
            self.close()

    def close(self) -> None:
        rows, self.rows = self.rows, []
        self._written = time.monotonic()
        if self.fault is not None:
            return
        try:
            self.store.add_observations(self.run_id, rows)
        except StoreError as e:
            self.fault = e
            if self.on_fault is not None:
                self.on_fault(e)


class RunEnding:
    """Records, once, how a traced run ended: the rows still buffered, its graph and
    facts, then its status. Called after the run returns, or from inside `os._exit`."""

    def __init__(self, store: Store, run_id: str, writer: BufferedWriter, graph: GraphCapture):
        self.store, self.run_id, self.writer, self.graph = store, run_id, writer, graph
        self.recorded = False

    def __call__(self, result: RunResult) -> None:
        if self.recorded:
            return
        self.recorded = True
        self.writer.close()
        if self.writer.fault is not None:
            raise self.writer.fault
        result.run_id = self.run_id
        result.graph = self.graph.summary()
        store, run_id = self.store, self.run_id
        if self.graph.record is not None:
            store.set_graph(run_id, self.graph.record.to_json())
        own = {"root_model": result.root_model, "graph": result.graph, "seconds": round(result.seconds, 3),
               "torch": str(torch.__version__), "faults": result.faults or None, "traceback": result.traceback,
               "stop_reason": result.stop_reason}
        for key, value in {**{k: v for k, v in own.items() if v is not None or k == "root_model"},
                           **result.facts}.items():
            store.set_fact(run_id, key, value)
        store.finish_run(run_id, result.status, result.steps, result.error)


def trace_to_store(store: Store, script: str | os.PathLike, args: Sequence[str], config: TraceConfig,
                   *, label: Optional[str] = None, seed_offset: int = 0,
                   listeners: Sequence[Callable[[List[Observation]], None]] = (),
                   extensions: Sequence[Extension] = (), rank: int = 0, world_size: int = 1,
                   facts: Optional[Dict[str, Any]] = None, write_batch: int = WRITE_BATCH,
                   run_id: Optional[str] = None, interrupts: Optional[Interrupts] = None) -> RunResult:
    """Runs the script traced (with `extensions`, and a GraphCapture of its own) and records
    run, observations, graph and facts in `store`; `listeners` see the rows of each flush.

    `run_id`: a run registered already (by the supervisor that started this process), else
    a new one. Distributed ranks pass their `rank`/`world_size`, `facts` recorded before the
    run starts (the launch group, so that a killed rank's partial trace is still found) and
    `write_batch=1` (every flush written at once: a killed rank loses at most one step).
    The extensions' own facts are recorded after the run, before it is marked ended; a run
    that ends the process with `os._exit` is recorded from inside that call. StoreError
    when the store stopped taking the trace (the run was ended early)."""
    path = check_script(script)
    if run_id is None:
        run_id = store.new_run(str(path), list(args), label=label, seed_offset=seed_offset,
                               rank=rank, world_size=world_size)
    for key, value in {"tracing": config.naming_options(), **(facts or {})}.items():
        store.set_fact(run_id, key, value)  # tracing: the options that shape variable names
    guard = StoreFaultStop()
    writer = BufferedWriter(store, run_id, write_batch, on_fault=guard.stop)

    def sink(rows: List[Observation]) -> None:
        writer(rows)
        for listen in listeners:
            listen(rows)

    graph = GraphCapture()
    ending = RunEnding(store, run_id, writer, graph)
    try:
        result = run_script(path, args, config, sink, seed_offset=seed_offset,
                            extensions=[*extensions, graph, guard], on_exit=ending, interrupts=interrupts)
    finally:
        writer.close()
    ending(result)
    return result



class FailFast(Extension):
    """`check --fail-fast`: the first violation at `fail_on` or worse ends the run at the
    next optimizer step (the checker calls `on_violation` while the step's rows flush)."""

    name = "fail_fast"

    def __init__(self, fail_on: str):
        self.fail_on = fail_on
        self._session: Optional[SessionView] = None

    def attach(self, session: SessionView) -> None:
        self._session = session

    def on_violation(self, v: Violation) -> None:
        if at_least(v.severity, self.fail_on) and self._session is not None:
            self._session.request_stop(f"--fail-fast: {v.id} violated at step {v.step}")


class RecordedStaticPhase(StaticPhase):
    """The static phase, whose answers a supervisor reads from the run's facts."""

    def facts(self) -> Dict[str, Any]:
        if self.report is None:
            return {}
        return {STATIC_REPORT: self.report.to_json(), STATIC_NOTES: describe(self.report)}


def trace_spec(spec: "RunSpec", interrupts: Optional[Interrupts] = None) -> str:
    """The traced child's work: the run the spec describes, traced into the store (with
    the static phase, and the online check of --fail-fast, when asked); returns its id."""
    extensions: List[Extension] = [RecordedStaticPhase()] if spec.static else []
    listeners: List[Callable[[List[Observation]], None]] = []
    if spec.fail_on and spec.invariants:
        stopper = FailFast(spec.fail_on)
        listeners.append(Checker(invfile.load(spec.invariants), on_violation=stopper.on_violation).feed)
        extensions.append(stopper)
    if spec.probe:
        from invariants.app.probes import extension_for
        extensions.append(extension_for(spec.probe))
    with Store(spec.store_dir) as store:
        trace_to_store(store, spec.script, spec.args, TraceConfig(**spec.config), seed_offset=spec.seed_offset,
                       listeners=listeners, extensions=extensions, run_id=spec.run_id, interrupts=interrupts)
    return spec.run_id
