"""Run an unmodified training script under a TraceSession; observations go to a sink.

The script runs in this process through `runpy` as `__main__`, with its directory on
`sys.path` and `sys.argv` set, exactly as `python SCRIPT ARGS` would run it. Seeding calls
can be offset (`seed_offset`) so that reference runs really differ.

How the run ended is its RunResult's status (tracer/ending.py); `os._exit` ends the process
without unwinding, and the caller's `on_exit` still gets the run's result first.
"""
from __future__ import annotations

import contextlib
import os
import random
import runpy
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence

import numpy as np
import torch

from tracer.ending import Interrupts, RunResult, exit_reported, exit_status
from tracer.extension import Extension
from tracer.pending import Row
from tracer.session import StepBudgetReached, StopRequested, TraceConfig, TraceSession


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
               extensions: Sequence[Extension] = (), on_exit: Optional[Callable[[RunResult], None]] = None,
               interrupts: Optional[Interrupts] = None) -> RunResult:
    """Runs the script under a TraceSession with `extensions`; observations go to `sink`
    as they are flushed. Should the script end the process with `os._exit`, `on_exit`
    gets the run's result (its session closed and flushed) before the process ends;
    `interrupts` (a process that runs nothing else) turns SIGINT/SIGTERM into its ending."""
    path = Path(script).resolve()
    counted = [0]

    def counting_sink(rows: List[Row]) -> None:
        counted[0] += len(rows)
        sink(rows)

    session = TraceSession(config, counting_sink, extensions=extensions)
    start = time.perf_counter()

    def exited_process(code: int) -> None:
        assert on_exit is not None
        session.__exit__(None, None, None)
        status, error = exit_status(code)
        on_exit(_result(path, session, start, counted[0], status, error, None))

    with script_environment(path, args), reseeded(seed_offset), session, \
            exit_reported(exited_process if on_exit is not None else None):
        status, error, tb = _execute(path, interrupts)
    return _result(path, session, start, counted[0], status, error, tb)


def _result(path: Path, session: TraceSession, start: float, observations: int, status: str,
            error: Optional[str], tb: Optional[str]) -> RunResult:
    """The RunResult of an ended session (its extensions' facts read now)."""
    seconds = time.perf_counter() - start
    root = session.root
    faults, facts = list(session.faults), {}
    for ext in session.extensions:
        try:
            facts.update(ext.facts())
        except Exception as e:  # an extension's bug costs its facts, not the run's record
            faults.append(f"{ext.name}: facts: {type(e).__name__}: {e}"[:500])
    return RunResult(run_id=None, script=str(path), status=status, steps=session.step,
                     seconds=seconds, error=error, traceback=tb, faults=faults,
                     variables=len(session.variables), phases=sorted(session.phases),
                     observations=observations, stop_reason=session.stop_reason,
                     root_model=type(root).__name__ if root is not None else None, facts=facts)


def _execute(path: Path, interrupts: Optional[Interrupts] = None) -> "tuple[str, Optional[str], Optional[str]]":
    """Runs the script as __main__; returns (status, one-line error, script traceback)."""
    status, error, tb = "complete", None, None
    try:
        with interrupts.armed() if interrupts is not None else contextlib.nullcontext():
            runpy.run_path(str(path), run_name="__main__")
    except StepBudgetReached:
        status = "budget"
    except StopRequested:
        status = "stopped"
    except SystemExit as e:
        status, error = exit_status(e.code)
    except KeyboardInterrupt as e:
        status, error = "interrupted", str(e) or "interrupted (Ctrl-C or KeyboardInterrupt)"
    except Exception as e:  # the user's program crashed: report it, keep the trace
        status = "crashed"
        error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        tb = _script_traceback(e, path)
    return status, error, tb
