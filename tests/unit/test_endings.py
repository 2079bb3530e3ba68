"""How a traced run's ending is told and recorded, without running a script: exit statuses,
the traced process's signals, the supervisor's word on a child that died, SQLite's errors
read as a damaged store or an unusable place."""
from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from invariants.app import supervisor
from invariants.app.store import Store, StoreCorrupt, StoreUnwritable, is_failure, store_error
from invariants.app.supervisor import ChildEnding, record_ending, unrecorded_ending
from tests.unit.tables import reference_run
from tracer.ending import Interrupted, Interrupts, exit_reported, exit_status


@pytest.mark.parametrize("code, status", [(None, "complete"), (0, "complete"), (3, "exited(3)"),
                                          ("bye", "exited(1)"), (True, "exited(1)")])
def test_exit_status_of_sys_exit_and_os_exit(code: object, status: str) -> None:
    assert exit_status(code)[0] == status
    assert is_failure(status) == (status != "complete")


def test_only_the_first_signal_interrupts_and_one_before_the_script_still_counts() -> None:
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        interrupts = Interrupts()
        interrupts.install()
        with pytest.raises(Interrupted, match="SIGTERM"):
            with interrupts.armed():
                os.kill(os.getpid(), signal.SIGTERM)
        # the terminal's copy of a Ctrl-C and the supervisor's, or one while the run is
        # being recorded: ignored
        os.kill(os.getpid(), signal.SIGINT)
        interrupts._handler(signal.SIGINT, None)
        early = Interrupts()
        early.install()
        os.kill(os.getpid(), signal.SIGINT)  # while torch was still loading
        with pytest.raises(Interrupted, match="SIGINT"):
            with early.armed():
                pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def test_os_exit_is_reported_first_in_this_process_only() -> None:
    seen = []
    real = os._exit
    with exit_reported(seen.append):
        assert os._exit is not real
        pid = os.fork()
        if pid == 0:  # a forked worker (DataLoader) ends untouched: its report would be the parent's
            os._exit(5)
        _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 5 and seen == [] and os._exit is real


@pytest.mark.parametrize("ending, status, words", [
    (ChildEnding(-signal.SIGKILL), "killed", "killed by SIGKILL"),
    (ChildEnding(-signal.SIGSEGV), "killed", "killed by SIGSEGV"),
    (ChildEnding(-signal.SIGTERM), "interrupted", "SIGTERM"),
    (ChildEnding(-signal.SIGKILL, signalled=signal.SIGINT), "interrupted", "SIGINT (then killed)"),
    (ChildEnding(0), "exited(0)", "before it recorded"),
    (ChildEnding(1, [{"error": "StoreUnwritable", "message": "disk full"}]), "crashed", "disk full"),
])
def test_a_child_that_died_unrecorded_gets_the_supervisors_word(ending: ChildEnding, status: str,
                                                                 words: str) -> None:
    got_status, error = unrecorded_ending(ending)
    assert got_status == status and words in error


def test_the_supervisor_records_only_what_the_child_could_not(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        dead = store.new_run("x.py", [])
        store.add_observations(dead, reference_run(0))
        record_ending(store, dead, ChildEnding(-signal.SIGKILL))
        done = store.new_run("x.py", [])
        store.finish_run(done, "budget", 12)
        record_ending(store, done, ChildEnding(0, [{"recorded": done}]))
        late = store.new_run("x.py", [])
        store.finish_run(late, "interrupted", 4, "interrupted by SIGTERM")
        record_ending(store, late, ChildEnding(0, [{"recorded": late}], timed_out=30.0))
        runs = {r.id: r for r in store.runs()}
    assert (runs[dead].status, runs[dead].steps) == ("killed", 12)  # steps: the last observed + 1
    assert (runs[done].status, runs[done].steps) == ("budget", 12)
    assert runs[late].status == "killed" and "timed out after 30 s" in runs[late].error and runs[late].steps == 4


@pytest.mark.parametrize("error, cls", [
    (sqlite3.DatabaseError("database disk image is malformed"), StoreCorrupt),
    (sqlite3.DatabaseError("file is not a database"), StoreCorrupt),
    (sqlite3.OperationalError("Could not decode to UTF-8 column 'body' with text 'x'"), StoreCorrupt),
    (sqlite3.OperationalError("database or disk is full"), StoreUnwritable),
    (sqlite3.OperationalError("attempt to write a readonly database"), StoreUnwritable),
    (sqlite3.OperationalError("unable to open database file"), StoreUnwritable),
    (sqlite3.OperationalError("disk I/O error"), StoreUnwritable),
])
def test_only_a_damaged_file_is_called_corrupt(tmp_path: Path, error: sqlite3.Error, cls: type) -> None:
    assert type(store_error(error, tmp_path / "traces.sqlite", "read")) is cls


def test_the_supervisor_passes_one_signal_on_and_kills_at_the_second() -> None:
    import subprocess
    import sys
    from invariants.app.supervisor import Watch
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, "
                                 "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"],
                                stdout=subprocess.PIPE)
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    watch = Watch(stubborn, timeout=None)
    watch.on_signal(signal.SIGINT)  # passed on: a script may take its time to stop
    with pytest.raises(subprocess.TimeoutExpired):
        stubborn.wait(0.3)
    watch.on_signal(signal.SIGINT)  # the user insists
    assert stubborn.wait(10) == -signal.SIGKILL and watch.signalled == signal.SIGINT


def test_a_child_is_forked_only_from_a_single_threaded_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INVAR_CHILD", raising=False)
    if threading.active_count() == 1:  # an earlier test in this process may have left a thread
        assert supervisor.may_fork() == sys.platform.startswith("linux")
    release = threading.Event()
    worker = threading.Thread(target=release.wait)
    worker.start()
    try:
        assert not supervisor.may_fork()  # a lock the other thread holds would stay held in the child
    finally:
        release.set()
        worker.join()
    monkeypatch.setenv("INVAR_CHILD", "spawn")
    assert not supervisor.may_fork()
