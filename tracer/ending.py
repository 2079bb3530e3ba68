"""How a traced run ended, told apart (RunResult.status): the script returning or calling
`sys.exit(0)` (`complete`), the step budget (`budget`), a stop request (`stopped`), an
exception (`crashed`), `sys.exit(n)` or `os._exit(n)` with n != 0 (`exited(n)`), Ctrl-C,
SIGTERM or a KeyboardInterrupt (`interrupted`), and, said by whoever supervised a process
that died without saying, `killed`.

Also what a process that runs one traced script needs to tell its ending at all: SIGINT
and SIGTERM turned into the script's ending (`Interrupts`), and `os._exit`, which ends the
process without unwinding, reported before it does (`exit_reported`). No torch here: a
supervisor reads results without loading it.
"""
from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional


@dataclass
class RunResult:
    """What happened in one traced run."""

    run_id: Optional[str]             # the store's id, set by whoever records the run
    script: str
    status: str               # complete | budget | stopped | crashed | exited(n) | interrupted | killed
    steps: int
    seconds: float
    error: Optional[str] = None       # one line
    traceback: Optional[str] = None   # the script's own traceback
    faults: List[str] = field(default_factory=list)
    graph: Optional[str] = None       # one-line summary, or why there is none (set by whoever captured it)
    root_model: Optional[str] = None  # class of the root model (None: no model was trained)
    facts: Dict[str, Any] = field(default_factory=dict)  # from the extensions' facts()
    variables: int = 0
    phases: List[str] = field(default_factory=list)
    observations: int = 0
    stop_reason: Optional[str] = None

    @property
    def crashed(self) -> bool:
        """The pipeline failed: it raised, exited non-zero or was killed (not interrupted)."""
        return self.status in ("crashed", "killed") or self.status.startswith("exited(")

    @property
    def interrupted(self) -> bool:
        return self.status == "interrupted"


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM ended the script (see `Interrupts`)."""


class Interrupts:
    """How a traced process that runs one script takes SIGINT and SIGTERM: the first one
    ends the script (raised as `Interrupted` inside it, or, when it came before the script
    started, as soon as it starts); every later one is ignored, so that recording how the
    run ended is never cut short (a supervisor that must end the process kills it). A
    terminal's Ctrl-C reaches both the supervisor and this process, and the supervisor
    forwards what it got: the second copy must not count."""

    def __init__(self) -> None:
        self.came: Optional[int] = None  # the first signal's number
        self._armed = False

    def install(self) -> None:
        """Takes SIGINT and SIGTERM over (main thread only)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        if self.came is not None:
            return
        self.came = signum
        if self._armed:
            self._raise()

    def _raise(self) -> None:
        self._armed = False
        raise Interrupted(f"interrupted by {signal.Signals(self.came or signal.SIGINT).name}")

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        """The script's time: a signal (or one that came before) raises inside it. The
        handlers are taken back afterwards, should the script have installed its own."""
        if self.came is not None:
            self._raise()
        self._armed = True
        try:
            yield
        finally:
            self._armed = False
            self.install()


def exit_status(code: Any) -> "tuple[str, Optional[str]]":
    """(status, one-line error) of a script that ended the process with `code`
    (`sys.exit(code)` or `os._exit(code)`): 0 or None is a complete run; a message is
    status 1, as Python exits with it."""
    if code is None or code == 0:
        return "complete", None
    if isinstance(code, int) and not isinstance(code, bool):
        return f"exited({code})", f"the script exited with status {code}"
    return "exited(1)", f"the script exited: {str(code).splitlines()[0][:300] if str(code) else code!r}"


@contextlib.contextmanager
def exit_reported(on_exit: Optional[Callable[[int], None]]) -> Iterator[None]:
    """While the block runs, `os._exit(n)` called in this process first calls
    `on_exit(n)` (its errors are swallowed: the process ends regardless), then ends the
    process as asked. Processes forked inside (DataLoader workers, whose ending is an
    `os._exit`) exit untouched."""
    if on_exit is None:
        yield
        return
    real_exit, pid = os._exit, os.getpid()

    def reporting_exit(code: int) -> None:
        if os.getpid() == pid:
            with contextlib.suppress(BaseException):
                on_exit(code)
        real_exit(code)

    os._exit = reporting_exit  # type: ignore[assignment]
    try:
        yield
    finally:
        os._exit = real_exit  # type: ignore[assignment]
