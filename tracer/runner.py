"""Run an unmodified training script under a TraceSession and record it in the store.

The script runs in this process through `runpy` as `__main__`, with its directory on
`sys.path` and `sys.argv` set, exactly as `python SCRIPT ARGS` would run it. Seeding calls
can be offset (`seed_offset`) so that reference runs really differ.
"""
from __future__ import annotations

import contextlib
import os
import random
import runpy
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from tracer.session import StepBudgetReached, StopRequested, TraceConfig, TraceSession
from tracer.store import Row, Store


WRITE_BATCH = 5000


class ScriptError(Exception):
    """The script cannot be run at all (missing, unreadable, syntax error)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind  # "missing" | "syntax"


@dataclass
class RunResult:
    """What happened in one traced run."""

    run_id: Optional[str]
    script: str
    status: str               # complete | budget | stopped | crashed | interrupted
    steps: int
    seconds: float
    error: Optional[str] = None       # one line
    traceback: Optional[str] = None   # the script's own traceback
    faults: List[str] = field(default_factory=list)
    graph: Optional[str] = None       # one-line summary, or why there is none
    variables: int = 0
    phases: List[str] = field(default_factory=list)
    observations: int = 0
    stop_reason: Optional[str] = None

    @property
    def crashed(self) -> bool:
        return self.status == "crashed"


class BufferedWriter:
    """A session sink that writes observations to the store in batches of WRITE_BATCH rows
    (one transaction each) instead of one transaction per flush; `close()` writes the rest."""

    def __init__(self, store: Store, run_id: str, batch: int = WRITE_BATCH):
        self.store, self.run_id, self.rows = store, run_id, []  # type: ignore[var-annotated]
        self.batch = batch

    def __call__(self, rows: List[Row]) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= self.batch:
            self.close()

    def close(self) -> None:
        self.store.add_observations(self.run_id, self.rows)
        self.rows = []


def check_script(path: str | os.PathLike) -> Path:
    """The resolved script path; ScriptError when missing or not valid Python."""
    p = Path(path)
    if not p.is_file():
        raise ScriptError(f"no such script: {path}", "missing")
    try:
        source = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ScriptError(f"cannot read {path}: {e}", "missing") from e
    try:
        compile(source, str(p), "exec")
    except SyntaxError as e:
        raise ScriptError(f"{path}:{e.lineno}: SyntaxError: {e.msg}", "syntax") from e
    return p.resolve()


@contextlib.contextmanager
def reseeded(offset: int) -> Iterator[None]:
    """Offsets the seed of every global seeding call by `offset` (0: unchanged)."""
    if offset == 0:
        yield
        return
    originals = (torch.manual_seed, torch.random.manual_seed, np.random.seed, random.seed)

    def shift(seed: Any) -> Any:
        return seed + offset if isinstance(seed, int) and not isinstance(seed, bool) else seed

    torch_seed = originals[0]
    torch.manual_seed = lambda seed: torch_seed(shift(seed))  # type: ignore[assignment]
    torch.random.manual_seed = torch.manual_seed  # type: ignore[assignment]
    np.random.seed = lambda seed=None: originals[2](shift(seed))  # type: ignore[assignment]
    random.seed = lambda a=None, version=2: originals[3](shift(a), version)  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.manual_seed, torch.random.manual_seed, np.random.seed, random.seed = originals


@contextlib.contextmanager
def script_environment(script: Path, args: Sequence[str]) -> Iterator[None]:
    """sys.argv and sys.path as `python SCRIPT ARGS` sets them; sibling modules unloaded after."""
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    before = set(sys.modules)
    sys.argv = [str(script)] + list(args)
    sys.path.insert(0, str(script.parent))
    try:
        yield
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        folder = str(script.parent)
        for name in set(sys.modules) - before:
            f = getattr(sys.modules.get(name), "__file__", None) or ""
            if f.startswith(folder + os.sep):
                del sys.modules[name]


def _script_traceback(exc: BaseException, script: Path) -> str:
    """The traceback from the script's first frame on (invar's own frames cut off)."""
    tb = exc.__traceback__
    while tb is not None and Path(tb.tb_frame.f_code.co_filename) != script:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def run_script(script: str | os.PathLike, args: Sequence[str], config: TraceConfig,
               sink: Callable[[List[Row]], None], *, seed_offset: int = 0,
               on_first_forward: Optional[Callable[..., None]] = None,
               on_session: Optional[Callable[[TraceSession], None]] = None,
               extensions: Sequence[Any] = ()) -> RunResult:
    """Runs the script under a TraceSession; observations go to `sink` as they are flushed."""
    path = check_script(script)
    counted = [0]

    def counting_sink(rows: List[Row]) -> None:
        counted[0] += len(rows)
        sink(rows)

    session = TraceSession(config, counting_sink, on_first_forward=on_first_forward, extensions=extensions)
    if on_session is not None:
        on_session(session)
    start = time.perf_counter()
    with script_environment(path, args), reseeded(seed_offset), session:
        status, error, tb = _execute(path)
    seconds = time.perf_counter() - start
    graph = session.graph.summary() if session.graph else "not captured (the root model was never called)"
    return RunResult(run_id=None, script=str(path), status=status, steps=session.step,
                     seconds=seconds, error=error, traceback=tb, faults=list(session.faults),
                     graph=graph, variables=len(session.variables), phases=sorted(session.phases),
                     observations=counted[0], stop_reason=session.stop_reason)


def _execute(path: Path) -> "tuple[str, Optional[str], Optional[str]]":
    """Runs the script as __main__; returns (status, one-line error, script traceback)."""
    status, error, tb = "complete", None, None
    try:
        runpy.run_path(str(path), run_name="__main__")
    except StepBudgetReached:
        status = "budget"
    except StopRequested:
        status = "stopped"
    except SystemExit as e:
        if e.code not in (None, 0):
            status, error = "crashed", f"the script exited with status {e.code}"
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted (Ctrl-C)"
    except Exception as e:  # the user's program crashed: report it, keep the trace
        status = "crashed"
        error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        tb = _script_traceback(e, path)
    return status, error, tb


def trace_to_store(store: Store, script: str | os.PathLike, args: Sequence[str], config: TraceConfig,
                   *, label: Optional[str] = None, seed_offset: int = 0,
                   listeners: Sequence[Callable[[List[Row]], None]] = (),
                   on_first_forward: Optional[Callable[..., None]] = None,
                   on_session: Optional[Callable[[TraceSession], None]] = None,
                   extensions: Sequence[Any] = (), rank: int = 0, world_size: int = 1,
                   facts: Optional[Dict[str, Any]] = None, write_batch: int = WRITE_BATCH) -> RunResult:
    """Runs the script traced and records run, observations, graph and facts in `store`.

    Distributed ranks pass their `rank`/`world_size`, `facts` recorded before the run starts
    (the launch group, so that a killed rank's partial trace is still found) and
    `write_batch=1` (every flush written at once: a killed rank loses at most one step)."""
    path = check_script(script)
    run_id = store.new_run(str(path), list(args), label=label, seed_offset=seed_offset,
                           rank=rank, world_size=world_size)
    for key, value in (facts or {}).items():
        store.set_fact(run_id, key, value)
    sessions: List[TraceSession] = []

    writer = BufferedWriter(store, run_id, write_batch)

    def sink(rows: List[Row]) -> None:
        writer(rows)
        for listen in listeners:
            listen(rows)

    def keep(session: TraceSession) -> None:
        sessions.append(session)
        if on_session is not None:
            on_session(session)

    try:
        result = run_script(path, args, config, sink, seed_offset=seed_offset,
                            on_first_forward=on_first_forward, on_session=keep, extensions=extensions)
    finally:
        writer.close()
    result.run_id = run_id
    session = sessions[0]
    if session.graph is not None:
        store.set_graph(run_id, session.graph.to_json())
    root = session.root
    store.set_fact(run_id, "root_model", type(root).__name__ if root is not None else None)
    store.set_fact(run_id, "graph", result.graph)
    store.set_fact(run_id, "seconds", round(result.seconds, 3))
    store.set_fact(run_id, "torch", str(torch.__version__))
    if result.faults:
        store.set_fact(run_id, "faults", result.faults)
    store.finish_run(run_id, result.status, result.steps, result.error)
    return result
