"""The supervisor: every traced run of `trace`, `infer` and `check` runs the user's script in
a fresh child process (child.py) that records into the store; this process owns the
report and the exit code, and reads back what the child recorded.

Why a child: a script ends its process as it likes (`os._exit`, a signal, a segfault) and
changes it as it likes (`os.chdir`, `torch.set_default_dtype`, module globals); in a child
neither reaches invar, and each reference run starts as fresh as `python SCRIPT` would.

What the supervisor does around each run:
* registers the run in the store (`running`) and starts the child with its RunSpec;
* passes SIGINT and SIGTERM on (once: a second one kills the child), ends a run past its
  `timeout` (SIGTERM, then SIGKILL after GRACE_S), and kills a child that recorded its run
  but does not exit within EXIT_GRACE_S (a thread the script left running);
* sends the script's output where this process's `sys.stdout`/`sys.stderr` point now (their
  file descriptor, or through a pipe when they have none, e.g. an `io.StringIO`);
* records the ending the child could not (killed by a signal, ended without a word) and
  reads the run back (`stored_result`). Torch is loaded here only to fork from
  (`warm_up`); this process never runs a tensor op.
"""
from __future__ import annotations

import codecs
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

from invariants import invfile
from invariants.app.child import INTERNAL_EXIT
from invariants.app.runspec import RunSpec
from invariants.app.scripts import ScriptMissing, ScriptSyntax, check_script
from invariants.app.store import (CLEAN_ENDINGS, INTERRUPTED, KILLED, RUNNING, Store, StoreCorrupt, StoreError,
                                  StoreMissing, StoreUnwritable, exited)
from invariants.errors import UsageError
from invariants.model import InvariantSet
from tracer.ending import RunResult

GRACE_S = 10.0       # after a passed-on signal or a timeout's SIGTERM, before SIGKILL
EXIT_GRACE_S = 10.0  # after the run was recorded, before a child that does not exit is killed
POLL_S = 0.2         # how often the supervisor looks at the clock while it waits
ROOT = str(Path(__file__).resolve().parents[2])  # where `invariants` is importable from
# `-P`: no working directory on sys.path; invar's root last, so the script's own modules win.
CHILD_ENV = "INVAR_CHILD"  # "spawn": every traced child a fresh interpreter, never a fork
CHILD_CODE = f"import sys; sys.path.append({ROOT!r}); from invariants.app.child import main; main()"
# invar's errors a child reports by class name, raised again here with its message.
CHILD_ERRORS = {cls.__name__: cls for cls in (StoreUnwritable, StoreCorrupt, StoreMissing, ScriptMissing,
                                              ScriptSyntax, UsageError, invfile.InvariantFileError)}


class TracedChildFailed(RuntimeError):
    """invar's own code failed in the traced child (a bug: reported as an internal error)."""


@dataclass
class ChildEnding:
    """How the child process ended, as the supervisor saw it."""

    returncode: int
    replies: List[Dict[str, Any]] = field(default_factory=list)  # the child's JSON lines
    signalled: Optional[int] = None    # the first SIGINT/SIGTERM this process got meanwhile
    timed_out: Optional[float] = None  # the timeout that ended it

    def error(self) -> Optional[BaseException]:
        """The failure the child reported about invar itself, as an exception to raise."""
        for r in self.replies:
            if "error" in r:
                return CHILD_ERRORS.get(r["error"], TracedChildFailed)(r.get("message", r["error"]))
            if "internal" in r:
                last = (r["internal"].strip().splitlines() or ["?"])[-1]
                return TracedChildFailed(f"invar failed in the traced process: {last}")
        return None


def traced_run(store_dir: str, script: str, args: Sequence[str], settings: Mapping[str, Any], *,
               label: Optional[str] = None, seed_offset: int = 0, static: bool = False,
               fail_on: Optional[str] = None, invariants: Optional[InvariantSet] = None,
               timeout: Optional[float] = None, probe: Optional[Dict[str, Any]] = None) -> RunResult:
    """Runs the script once, traced in a child process with `settings` (TraceConfig's
    fields), and returns the run as recorded; `static`: with the static phase; `fail_on`
    and `invariants`: --fail-fast, checked online in the child; `probe`: an active probe
    attached (invariants/app/probes), its result among the run's facts. Raises what the child
    reported about invar itself (StoreUnwritable for a full disk, ...)."""
    path = check_script(script)
    store_path = Path(store_dir).resolve()  # the script may chdir: the child gets absolute paths
    with Store(store_path) as store:
        run_id = store.new_run(str(path), list(args), label=label, seed_offset=seed_offset)
    with tempfile.TemporaryDirectory(prefix="invar-run-") as tmp:
        checked = None
        if fail_on and invariants is not None:
            checked = os.path.join(tmp, "invariants.json")
            invfile.dump(invariants, checked, "json")
        spec = RunSpec(script=str(path), store_dir=str(store_path), run_id=run_id, config=dict(settings),
                       args=list(args), seed_offset=seed_offset, static=static, fail_on=fail_on,
                       invariants=checked, probe=probe)
        ending = supervise(spec, timeout)
    failure = ending.error()
    try:
        with Store(store_path, create=False) as store:
            record_ending(store, run_id, ending)
            result = stored_result(store, run_id)
    except StoreError:
        if failure is None:
            raise
        result = None
    if failure is not None:
        raise failure
    assert result is not None
    return result


def record_ending(store: Store, run_id: str, ending: ChildEnding) -> None:
    """Records what the child could not say about how its run ended: a timeout, a death
    before the ending was recorded, or an interrupt that came as the run ended anyway."""
    info = store.run(run_id)
    steps = info.steps if info.status != RUNNING else _steps_reached(store, run_id)
    if ending.timed_out is not None:
        store.finish_run(run_id, KILLED, steps, f"timed out after {ending.timed_out:g} s (--timeout); "
                                                f"the trace up to then is kept")
    elif info.status == RUNNING:
        status, error = unrecorded_ending(ending)
        store.finish_run(run_id, status, steps, error, only_running=True)
    elif ending.signalled and info.status in CLEAN_ENDINGS:
        store.finish_run(run_id, INTERRUPTED, steps, f"interrupted by {_name(ending.signalled)} as the run ended")


def unrecorded_ending(ending: ChildEnding) -> "tuple[str, str]":
    """(status, error) of a child that ended without recording its run's end."""
    rc = ending.returncode
    if ending.signalled is not None:
        return INTERRUPTED, f"interrupted by {_name(ending.signalled)}" + (" (then killed)" if rc < 0 else "")
    if rc < 0 and -rc in (signal.SIGINT, signal.SIGTERM):
        return INTERRUPTED, f"interrupted by {_name(-rc)}"
    if rc < 0:
        return KILLED, f"killed by {_name(-rc)} (the process died before it could record how the run ended)"
    failure = ending.error()
    if failure is not None:
        return "crashed", str(failure)
    return exited(rc), f"the process ended with status {rc} before it recorded how the run ended"


def _name(signum: Optional[int]) -> str:
    try:
        return signal.Signals(signum or 0).name
    except ValueError:
        return f"signal {signum}"


def _steps_reached(store: Store, run_id: str) -> int:
    # The child died before counting: its last observed step is the best lower bound.
    last = store.last_step(run_id)
    return 0 if last is None else last + 1


def stored_result(store: Store, run_id: str) -> RunResult:
    """A recorded run as the RunResult its process returned (variables, phases and
    observations counted from the store; `facts`: every fact of the run)."""
    info = store.run(run_id)
    facts = store.facts(info.id)
    seen = store.variable_steps(info.id)
    return RunResult(run_id=info.id, script=info.script, status=info.status, steps=info.steps,
                     seconds=float(facts.get("seconds") or _wall_seconds(info)), error=info.error,
                     traceback=facts.get("traceback"), faults=list(facts.get("faults") or []),
                     graph=facts.get("graph"), root_model=facts.get("root_model"), facts=facts,
                     variables=len({v for _, v in seen}), phases=sorted({p for p, _ in seen}),
                     observations=store.observation_count(info.id), stop_reason=facts.get("stop_reason"))


def _wall_seconds(info: Any) -> float:
    # A process that died recorded no duration of its own: the run's wall time stands in.
    return max(0.0, (info.ended or info.started) - info.started)


# -- the child process ------------------------------------------------------------------------
class Output:
    """Where the child's stdout (or stderr) goes: the file descriptor behind this process's
    stream, or, when it has none, a pipe whose text is written to the stream."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.read: Optional[int] = None
        try:
            self.target = stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.StringIO, pytest's capture
            self.read, self.target = os.pipe()
            self._decode = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, data: bytes) -> None:
        if data:
            self.stream.write(self._decode.decode(data))

    def finish(self) -> None:
        """After the child's end: a character cut at the pipe's last read, and a flush."""
        if self.read is not None:
            self.stream.write(self._decode.decode(b"", final=True))
            self.stream.flush()

    def close_target(self) -> None:
        """After the child started: its copy of the pipe's end is the only one."""
        if self.read is not None:
            os.close(self.target)


class Watch:
    """The supervisor's clock and signals: what to send the child, and when."""

    def __init__(self, proc: Any, timeout: Optional[float]):
        self.proc = proc
        now = time.monotonic()
        self.deadline = now + timeout if timeout else None
        self.timeout = timeout
        self.kill_at: Optional[float] = None
        self.signalled: Optional[int] = None
        self.signals = 0
        self.timed_out = False
        self.recorded_at: Optional[float] = None

    def on_signal(self, signum: int, frame: Any = None) -> None:
        """SIGINT/SIGTERM to this process: passed on once; a second one kills the child."""
        self.signals += 1
        if self.signalled is None:
            self.signalled = signum
            self._send(signum)
            self._kill_by(time.monotonic() + GRACE_S)
        else:
            self._send(signal.SIGKILL)

    def tick(self, recorded: bool) -> None:
        now = time.monotonic()
        if recorded and self.recorded_at is None:
            self.recorded_at = now
            self._kill_by(now + EXIT_GRACE_S)
        if self.deadline is not None and now >= self.deadline and not self.timed_out and self.recorded_at is None:
            self.timed_out = True
            self._send(signal.SIGTERM)
            self._kill_by(now + GRACE_S)
        if self.kill_at is not None and now >= self.kill_at:
            self._send(signal.SIGKILL)

    def _kill_by(self, when: float) -> None:
        self.kill_at = when if self.kill_at is None else min(self.kill_at, when)

    def _send(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signum)


@contextlib.contextmanager
def signals_to(watch: Watch) -> Iterator[None]:
    """SIGINT and SIGTERM go to `watch` while the child runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, watch.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            if handler is not None:
                signal.signal(s, handler)


class ForkedChild:
    """A child forked from this process, seen through the part of `subprocess.Popen` that
    the supervisor uses (poll, wait, send_signal, returncode)."""

    def __init__(self, spec: RunSpec, outputs: List[Output], reply_read: int, reply_write: int):
        pid = os.fork()
        if pid == 0:  # the child: never returns
            try:
                os.close(reply_read)
                for out, fd in zip(outputs, (1, 2)):
                    if out.read is not None:
                        os.close(out.read)
                    os.dup2(out.target, fd)
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 — the process's own streams
                sys.stderr = open(2, "w", closefd=False, buffering=1)  # noqa: SIM115
                from invariants.app.child import forked
                forked(spec, reply_write)
            finally:
                os._exit(INTERNAL_EXIT)
        self.pid = pid
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> Optional[int]:
        end = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < end:
            time.sleep(min(0.02, timeout))
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)


def may_fork() -> bool:
    """Whether a traced child may be forked from this process rather than started afresh:
    on Linux, with no other Python thread (a fork copies only the calling one, and a lock
    another held stays held), unless INVAR_CHILD=spawn. A forked child skips loading
    Python, torch and invar again (seconds a run); it starts from this process's modules,
    which the supervisor loads but never runs (no tensor op, no CUDA)."""
    return (sys.platform.startswith("linux") and os.environ.get(CHILD_ENV, "fork") != "spawn"
            and threading.active_count() == 1)


def warm_up() -> None:
    """What every traced child imports, loaded once in this process before it forks."""
    import invariants.app.record  # noqa: F401 — torch, the tracer, the static phase
    import torch._dynamo  # noqa: F401 — loaded lazily by the first optimizer and graph capture
    import torch.export  # noqa: F401


def supervise(spec: RunSpec, timeout: Optional[float]) -> ChildEnding:
    """Starts the child for `spec` (forked when `may_fork`, else a fresh interpreter) and
    waits for it, passing its output on."""
    fork = may_fork()
    if fork:
        warm_up()
    outputs = [Output(sys.stdout), Output(sys.stderr)]
    reply_read, reply_write = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()  # what this process printed comes before what the script prints
    try:
        if fork:
            proc: Any = ForkedChild(spec, outputs, reply_read, reply_write)
        else:
            proc = subprocess.Popen([sys.executable, "-P", "-c", CHILD_CODE, spec.to_json(), str(reply_write)],
                                    stdout=outputs[0].target, stderr=outputs[1].target, pass_fds=(reply_write,))
    finally:
        os.close(reply_write)
        for out in outputs:
            out.close_target()
    watch = Watch(proc, timeout)
    with signals_to(watch):
        replies = _pump(proc, reply_read, outputs, watch)
    return ChildEnding(proc.returncode, replies, watch.signalled, timeout if watch.timed_out else None)


def _pump(proc: Any, reply_read: int, outputs: List[Output], watch: Watch) -> List[Dict[str, Any]]:
    """Until the child exits: its replies collected, its piped output passed on, the watch
    ticked; then what is left in the pipes (a grandchild may still hold them open)."""
    sinks: Dict[int, Any] = {o.read: o.feed for o in outputs if o.read is not None}
    reply = bytearray()
    sinks[reply_read] = reply.extend
    open_fds = list(sinks)
    for fd in open_fds:
        os.set_blocking(fd, False)
    while proc.poll() is None:
        if open_fds:
            for fd in select.select(open_fds, [], [], POLL_S)[0]:
                if not _drain(fd, sinks[fd]):
                    open_fds.remove(fd)
        else:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(POLL_S)
        watch.tick(b'"recorded"' in reply)
    for fd, sink in sinks.items():
        _drain(fd, sink)
        os.close(fd)
    for out in outputs:
        out.finish()
    return [r for r in map(_reply, bytes(reply).splitlines()) if r is not None]


def _reply(line: bytes) -> Optional[Dict[str, Any]]:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _drain(fd: int, sink: Any) -> bool:
    """Reads what is available into `sink`; False at the end of the stream."""
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        sink(data)
