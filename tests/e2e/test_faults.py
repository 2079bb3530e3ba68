"""Fault injection (issue 14): every way a traced script can end, scripts that change their
process, interrupts, stores on a read-only or full disk, a report that cannot be written.
Each test reproduces a finding of the issue; tests/unit/test_cli_usage.py holds the ones
that need no script run (bad names, huge and special files, damaged stores, bad options).

What they prove (docs/guarantees.md): however the script ends, invar records how and at
which step, reports what it saw until then with the exit code the ending means, and a bug
seen before the end still fails the check."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Sequence

import pytest

from invariants.app.store import RunInfo, Store
from tests.conftest import ROOT, SCRIPTS, run_invar
from tests.tmpfs import fill, tmpfs

FAULTS = str(SCRIPTS / "fault_train.py")
STEPS = "8"  # the reference's budget, hence a check's: the endings come at step 6


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Invariants of two healthy reference runs (the script at its plain ending)."""
    where = tmp_path_factory.mktemp("learned")
    r = run_invar("infer", FAULTS, "--runs", "2", "--steps", STEPS, "-o", str(where / "inv.yaml"),
                  "--store", str(where / "store"))
    assert r.returncode == 0, r.stderr
    return where


def _check(learned: Path, store: Path, *script_args: str, options: Sequence[str] = ()) -> subprocess.CompletedProcess:
    return run_invar("check", FAULTS, "--against", str(learned / "inv.yaml"), "--store", str(store), *options,
                     "--", *script_args)


def _runs(store: Path) -> List[RunInfo]:
    with Store(store, create=False) as s:
        return s.runs()


# -- 1: however the script ends, the report and the exit code say what happened ---------------
ENDINGS = [
    # (how it ends, exit code, the run's status)
    (("--end", "os-exit", "--code", "0"), 1, "complete"),       # a frozen head was exit 0, no report
    (("--end", "os-exit", "--code", "3"), 3, "exited(3)"),
    (("--end", "keyboard-interrupt"), 130, "interrupted"),      # was exit 0
    (("--end", "sigkill"), 3, "killed"),
    pytest.param(("--end", "sys-exit", "--code", "0"), 1, "complete", marks=pytest.mark.slow),
    pytest.param(("--end", "sys-exit", "--code", "4"), 3, "exited(4)", marks=pytest.mark.slow),
    pytest.param(("--end", "raise"), 3, "crashed", marks=pytest.mark.slow),
    pytest.param(("--end", "sigterm"), 130, "interrupted", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("ending, code, status", ENDINGS)
def test_every_ending_is_recorded_and_reported_with_the_bug_seen_before(learned: Path, tmp_path: Path,
                                                                        ending: Sequence[str], code: int,
                                                                        status: str) -> None:
    report = tmp_path / "report.json"
    r = _check(learned, tmp_path / "store", "--freeze", "--at", "6", *ending,
               options=("--format", "json", "-o", str(report)))
    assert r.returncode == code, r.stderr
    doc = json.loads(report.read_text())
    assert doc["summary"]["run_status"] == status
    frozen = [v for v in doc["violations"] if v["family"] == "frozen"]
    assert frozen and frozen[0]["step"] == 0 and frozen[0]["severity"] == "error"  # seen before the end
    (run,) = _runs(tmp_path / "store")
    assert run.status == status and run.ended is not None
    assert run.steps >= (1 if status == "killed" else 6)  # a killed run: its last written step, at least


@pytest.mark.parametrize("ending, code, status", [ENDINGS[0], ENDINGS[3]])
def test_a_child_started_afresh_ends_as_a_forked_one(learned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     ending: Sequence[str], code: int, status: str) -> None:
    # INVAR_CHILD=spawn: the traced child is a new interpreter (where fork is not taken)
    monkeypatch.setenv("INVAR_CHILD", "spawn")
    r = _check(learned, tmp_path / "store", "--freeze", "--at", "6", *ending, options=("--format", "json"))
    assert r.returncode == code, r.stderr
    assert json.loads(r.stdout)["summary"]["run_status"] == status
    (run,) = _runs(tmp_path / "store")
    assert run.status == status


def test_trace_and_infer_of_scripts_that_end_with_os_exit(learned: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    r = run_invar("trace", FAULTS, "--store", str(store), "--", "--end", "os-exit", "--at", "99")
    assert r.returncode == 0 and "complete" in r.stdout, r.stderr
    (run,) = _runs(store)
    assert run.status == "complete" and run.steps == 12
    with Store(store, create=False) as s:
        assert s.observation_count(run.id) > 100  # was `running` with 0 observations


# -- 3: reference runs are independent processes ----------------------------------------------
@pytest.mark.parametrize("chdir", ["sub", pytest.param("absolute", marks=pytest.mark.slow)])
def test_reference_runs_do_not_share_the_scripts_changes(tmp_path: Path, chdir: str) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "fault_train.py").write_text(Path(FAULTS).read_text())
    target = "sub" if chdir == "sub" else str(tmp_path / "sub")
    r = run_invar("infer", "fault_train.py", "--runs", "2", "--steps", "0", "-o", "inv.yaml", "--store", "store",
                  "--", "--chdir", target, "--dtype", "float64", "--end", "os-exit", "--at", "99", cwd=tmp_path)
    assert r.returncode == 0, r.stderr  # run 2 found its script although run 1 moved away
    assert (tmp_path / "inv.yaml").is_file() and (tmp_path / "store").is_dir()
    assert list((tmp_path / "sub").iterdir()) == []  # nothing written where the script went
    # every run starts fresh: float64, set by run 1, does not leak into run 2
    assert r.stdout.count("start: default dtype torch.float32") == 2 and "start: default dtype torch.float64" \
        not in r.stdout


# -- 8: interrupts are exit 130 with the report; the run is not left `running` -----------------
def _start(store: Path, learned: Path, ready: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "invariants.cli", "check", FAULTS, "--against", str(learned / "inv.yaml"),
           "--store", str(store), "--", "--freeze", "--end", "hang", "--at", "4", "--ready", str(ready)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(out, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the script never got going"
        time.sleep(0.2)
    time.sleep(1.0)  # a few steps more, into the hang


@pytest.mark.parametrize("how", ["SIGTERM to invar", pytest.param("Ctrl-C to the process group",
                                                                    marks=pytest.mark.slow)])
def test_interrupts_exit_130_with_the_report_and_end_the_run(learned: Path, tmp_path: Path, how: str) -> None:
    store, ready, out = tmp_path / "store", tmp_path / "ready", tmp_path / "out.txt"
    proc = _start(store, learned, ready, out)
    _wait_for(ready, proc)
    if how == "SIGTERM to invar":
        proc.send_signal(signal.SIGTERM)
    else:  # a terminal's Ctrl-C reaches invar and the script: one interruption
        os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    text = out.read_text()
    assert "FAILED" in text and "frozen" in text and "optimizer steps traced (interrupted)" in text
    (run,) = _runs(store)
    assert run.status == "interrupted" and run.steps == 4
    # mining a part of a pipeline is refused unless asked for
    r = run_invar("infer", "--from", run.id, "-o", str(tmp_path / "part.yaml"), "--store", str(store))
    assert r.returncode == 2 and "did not run to its end" in r.stderr


@pytest.mark.slow
def test_a_timeout_kills_the_run_and_checks_what_it_did(learned: Path, tmp_path: Path) -> None:
    r = _check(learned, tmp_path / "store", "--freeze", "--end", "hang", "--at", "4", options=("--timeout", "40"))
    assert r.returncode == 3 and "timed out after 40 s" in r.stderr
    assert "frozen" in r.stdout
    (run,) = _runs(tmp_path / "store")
    assert run.status == "killed" and run.steps == 4


# -- 4, 6: a full disk is exit 5 (during the run, or for the report), never 70 or a 0-byte file -
@pytest.mark.slow
def test_a_store_that_fills_during_the_run_is_5(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "3m") as disk:
        assert run_invar("trace", FAULTS, "--steps", "2", "--store", str(disk / "store")).returncode == 0
        fill(disk, leave=96 * 1024)  # the run is registered; its observations do not fit
        r = run_invar("trace", FAULTS, "--store", str(disk / "store"), "--", "--steps", "600", "--at", "999")
        assert r.returncode == 5 and "disk is full" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_report_that_cannot_be_written_is_5_and_leaves_no_empty_file(learned: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        fill(disk, leave=0)
        report = disk / "report.json"
        r = _check(learned, tmp_path / "store", "--at", "99", options=("--format", "json", "-o", str(report)))
        assert r.returncode == 5 and "disk is full" in r.stderr, r.stderr
        assert not report.exists() and [p.name for p in disk.iterdir()] == ["filler"]


# -- 10: infer on a script that never steps its optimizer -------------------------------------
def test_infer_of_a_script_without_an_optimizer_step_is_2(tmp_path: Path) -> None:
    # its model is called (step 0 is observed, some invariants mined): exit 0 with a file, before
    r = run_invar("infer", FAULTS, "--runs", "1", "-o", str(tmp_path / "inv.yaml"), "--store", str(tmp_path / "s"),
                  "--", "--no-step")
    assert r.returncode == 2 and "the reference ran no optimizer step (1 run, 0 steps)" in r.stderr, r.stderr
    assert not (tmp_path / "inv.yaml").exists()

