"""The traced child: one run of the user's script in a fresh process, recorded into the
store. The supervisor (supervisor.py) registers the run, starts this process and, once it
ended, reads back what it recorded; the child never renders anything.

Started as `python -P -c "...; main()" SPEC_JSON REPLY_FD`: `-P` keeps the working
directory off `sys.path`, so that the script sees the `sys.path` that `python SCRIPT`
gives it. On REPLY_FD the child writes JSON lines for its supervisor: `{"recorded": id}`
once the run's ending is in the store, or what went wrong in invar itself (`{"error":
class, "message": ...}` for one of invar's errors, `{"internal": traceback}` for a bug).
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any, Dict, Optional, Sequence

from invariants.app.runspec import RunSpec
from invariants.errors import InvarError
from tracer.ending import Interrupts

INTERNAL_EXIT = 70


def main(argv: Optional[Sequence[str]] = None) -> None:
    """The spawned child's entry point; exits 0 once the run is recorded, however the script ended."""
    interrupts = Interrupts()
    interrupts.install()  # first of all: a Ctrl-C while torch loads still ends the run
    spec_json, reply_fd = (argv if argv is not None else sys.argv[1:])[:2]
    code = run(RunSpec.from_json(spec_json), int(reply_fd), interrupts)
    sys.stdout.flush()
    sys.exit(code)


def forked(spec: RunSpec, reply: int) -> None:
    """The forked child's entry point (supervisor.py forks when it may): the same work as
    `main`, then the process ends at once (`os._exit`: the supervisor's exit handlers and
    buffers are its own, not this copy's)."""
    code = INTERNAL_EXIT
    try:
        interrupts = Interrupts()
        interrupts.install()
        if sys.path and sys.path[0] in ("", os.getcwd()):
            del sys.path[0]  # as `python -P`: the supervisor's `-m`/`-c` put the working directory there
        code = run(spec, reply, interrupts)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # the script closed it: nothing left to write
                pass
        os._exit(code)


def run(spec: RunSpec, reply: int, interrupts: Interrupts) -> int:
    """Traces the run of `spec` and tells the supervisor how that went; the exit status."""
    os.set_inheritable(reply, False)  # programs the script starts do not hold the supervisor's pipe
    code = 0
    try:
        from invariants.app.record import trace_spec  # torch loads here, with the signals taken over
        run_id = trace_spec(spec, interrupts)
        tell(reply, {"recorded": run_id})
    except InvarError as e:
        tell(reply, {"error": type(e).__name__, "message": str(e)})
        code = 1
    except BaseException:  # a bug in invar: the supervisor reports it as one
        text = traceback.format_exc()
        sys.stderr.write(text)
        tell(reply, {"internal": text[-4000:]})
        code = INTERNAL_EXIT
    return code


def tell(fd: int, message: Dict[str, Any]) -> None:
    """One JSON line to the supervisor (never raises: it may be gone)."""
    try:
        os.write(fd, (json.dumps(message) + "\n").encode())
    except OSError:
        pass
