"""The command line without running a pipeline: help texts, exit codes and messages for bad
input, the file-only commands (export, diff, runs, show, sets) on a store built in the test."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Tuple

import pytest

from invariants import invfile
from invariants.app.cli import main
from invariants.app.cli.common import EXIT_CODES, Exit, exit_code
from invariants.app.store import Store
from invariants.errors import InvarError
from tests.conftest import ROOT, SCRIPTS
from tests.unit.tables import reference_run, small_set

PLAIN = str(SCRIPTS / "plain_train.py")


def invar(capsys: pytest.CaptureFixture, *argv: str) -> Tuple[int, str, str]:
    """Runs the command in this process: (exit code, stdout, stderr)."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def learned(tmp_path: Path) -> Path:
    """An invariant file and a store holding two runs and the file's set, with no script run."""
    invs = small_set(script=str(ROOT / "tests" / "scripts" / "plain_train.py"))
    invfile.dump(invs, tmp_path / "inv.yaml")
    with Store(tmp_path / "store") as s:
        for seed in range(2):
            run = s.new_run(PLAIN, ["--seed", str(seed)], label="infer")
            s.add_observations(run, reference_run(seed))
            s.finish_run(run, "budget", 12)
        s.save_invariant_set("set-20260101-000000-aaaa", "inv.yaml", invfile.dumps(invs, "json"))
    return tmp_path


@pytest.mark.parametrize("body, fragment", [
    ("schema: 1\ninvariants: [\n", "line"),
    ("schema: 99\ninvariants: []\n", "newer"),
    ("schema: 1\ninvariants:\n  - {id: x, template: nosuch, target: [a], expect: {}, when: {phase: train, "
     "steps: [0, null]}, severity: error, status: proposed, support: {runs: 1, observations: 1, span: null}, "
     "why: w}\n", "nosuch"),
    ("!!python/object/apply:os.system ['touch /tmp/invar-pwned']\n", "python"),
])
def test_malformed_invariant_file_exits_2_before_the_script_runs(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                                 body: str, fragment: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(body)
    code, out, err = invar(capsys, "check", PLAIN, "--against", str(f), "--store", str(tmp_path / "s"))
    assert code == 2, err
    assert fragment in err and "Traceback" not in err and "step" not in out
    assert not Path("/tmp/invar-pwned").exists()


def test_a_missing_script_or_a_syntax_error_fails_before_anything_runs(capsys: pytest.CaptureFixture,
                                                                      tmp_path: Path) -> None:
    code, _, err = invar(capsys, "infer", str(tmp_path / "nope.py"), "--store", str(tmp_path / "s"))
    assert code == 2 and "no such script" in err
    assert "reference run" not in err and "warning" not in err
    broken = tmp_path / "broken.py"
    broken.write_text("def main(:\n")
    code, _, err = invar(capsys, "check", str(broken), "--against", "x.yaml")
    assert code == 4 and "broken.py:1: SyntaxError" in err
    code, _, err = invar(capsys, "trace", PLAIN, "--steps", "-1", "--store", str(tmp_path / "s"))
    assert code == 2 and "--steps must be >= 0, got -1" in err
    assert not (tmp_path / "s").exists()


def test_every_error_class_has_its_exit_code() -> None:
    for cls, code in EXIT_CODES:
        assert issubclass(cls, InvarError) and exit_code(cls("x")) is code
    assert exit_code(InvarError("unclassified")) is Exit.BAD_INPUT


def test_help_shows_what_applies_to_the_command(capsys: pytest.CaptureFixture) -> None:
    def help_of(command: str) -> str:
        return " ".join(invar(capsys, command, "--help")[1].split())

    infer_help = help_of("infer")
    assert "check:" not in infer_help and "[check" not in infer_help
    assert "Observe every optimizer step before step N. [default: 50]" in infer_help
    assert "After the dense steps, observe every N-th optimizer step. [default: 10]" in infer_help
    assert "the reference's" not in infer_help and "invariants violated" not in infer_help
    check_help = help_of("check")
    assert "[default: 5]" in check_help and "1 invariants violated" in check_help
    assert "as many as the reference ran on" in check_help
    for command in ("runs", "show", "sets", "export"):
        text = help_of(command)
        assert "Exit codes: 0" in text and "violated" not in text and "crashed" not in text, command
    assert "1 A and B differ" in help_of("diff")


def test_export_load_export_is_byte_identical_and_self_diff_empty(capsys: pytest.CaptureFixture,
                                                                  learned: Path) -> None:
    a, b, j1, j2 = (learned / n for n in ("a.yaml", "b.yaml", "a.json", "b.json"))
    for src, dst in ((learned / "inv.yaml", a), (a, b), (a, j1), (j1, j2)):
        assert invar(capsys, "export", str(src), "-o", str(dst))[0] == 0
    assert a.read_bytes() == b.read_bytes() and j1.read_bytes() == j2.read_bytes()
    md = learned / "review.md"
    assert invar(capsys, "export", str(a), "-o", str(md))[0] == 0
    assert md.read_text().startswith("# Invariants") and "block `fc`" in md.read_text()
    code, out, _ = invar(capsys, "diff", str(a), str(j1))
    assert code == 0 and "no differences" in out
    changed = learned / "changed.yaml"
    changed.write_text(a.read_text().replace("quantifier: all", "quantifier: none", 1))
    code, out, _ = invar(capsys, "diff", str(a), str(changed))
    assert code == 1 and "expect.quantifier: all -> none" in out


def test_read_only_commands_never_create_a_store(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for argv in (["runs"], ["sets"], ["show", "2026"], ["export", "set-2026"]):
        code, _, err = invar(capsys, *argv, "--store", str(missing))
        assert code == 2, (argv, err)
        assert f"no store at {missing}" in err and "Traceback" not in err
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert invar(capsys, "runs", "--store", str(empty))[0] == 2
    assert list(empty.iterdir()) == []


def test_sets_runs_and_ids_by_unique_prefix(capsys: pytest.CaptureFixture, learned: Path) -> None:
    store = str(learned / "store")
    with Store(store) as s:
        for i in range(7):
            s.new_run(f"/x/case{i}/reference.py", [], label="infer")
        s.save_invariant_set("set-20260102-000000-bbbb", "b.yaml", s.find_invariant_set("set-2026010").body)
        prefix = s.runs()[0].id[:4]
    code, out, _ = invar(capsys, "sets", "--store", store)
    assert code == 0 and "set-20260101-000000-aaaa" in out and "plain_train.py -> inv.yaml" in out
    code, out, _ = invar(capsys, "runs", "--store", store)
    assert "case0/reference.py" in out and "case6/reference.py" in out
    out_file = learned / "one.yaml"
    assert invar(capsys, "export", "set-20260102", "-o", str(out_file), "--store", store)[0] == 0
    assert invfile.load(out_file) == invfile.load(learned / "inv.yaml")
    code, _, err = invar(capsys, "export", "set-2026", "--store", store)
    assert code == 2 and "ambiguous: 2 match" in err
    code, _, err = invar(capsys, "export", "nosuch", "--store", store)
    assert code == 2 and "no such file or invariant set" in err
    code, _, err = invar(capsys, "show", prefix, "--store", store)
    assert code == 2 and "9 match" in err and "(+4 more)" in err


def test_file_only_commands_do_not_import_torch(learned: Path) -> None:
    with Store(learned / "store") as s:
        run_id = s.runs()[0].id
    inv, md, store = str(learned / "inv.yaml"), str(learned / "review.md"), str(learned / "store")
    commands = [["--version"], ["--help"], ["check", "--help"], ["export", inv, "-o", md], ["diff", inv, inv],
                ["runs", "--store", store], ["sets", "--store", store], ["show", run_id, "--store", store],
                ["export", "set-2026", "-o", str(learned / "set.yaml"), "--store", store]]
    code = ("import json, sys\n"
            "import invariants.cli as cli\n"
            "codes = []\n"
            "for argv in json.loads(sys.argv[1]):\n"
            "    try:\n"
            "        cli.main(argv)\n"
            "        codes.append(0)\n"
            "    except SystemExit as e:\n"
            "        codes.append(e.code or 0)\n"
            "heavy = [m for m in ('torch', 'numpy', 'solver', 'tracer.session', 'tracer.runner')\n"
            "         if m in sys.modules]\n"
            "print('RESULT', json.dumps({'codes': codes, 'heavy': heavy}))\n")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(commands)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    result = json.loads(r.stdout.split("RESULT ", 1)[1])
    assert result["heavy"] == [], result
    assert result["codes"] == [0] * len(commands), (result, r.stderr)


# -- issue 14: every bad argument is exit 2 before anything runs, stores are 5 or 6 -------------
def test_an_empty_against_is_a_usage_error_not_the_only_stored_set(capsys: pytest.CaptureFixture,
                                                                   learned: Path) -> None:
    # `--against "$UNSET"` must not check against whatever single set the store holds
    code, out, err = invar(capsys, "check", PLAIN, "--against", "", "--store", str(learned / "store"))
    assert code == 2 and "is empty (an unset shell variable?)" in err and "step" not in out
    for argv in (["export", ""], ["show", ""]):
        assert invar(capsys, *argv, "--store", str(learned / "store"))[0] == 2, argv


@pytest.mark.parametrize("argv, fragment", [
    (["check", PLAIN, "--against", "{inv}", "-o", "{tmp}/missing/report.txt"], "there is no folder"),
    (["check", PLAIN, "--against", "{inv}", "-o", "{tmp}"], "is a folder"),
    (["infer", PLAIN, "-o", "{tmp}/invariants.txt"], "cannot tell the format"),
    (["infer", PLAIN, "-o", "{tmp}/missing/inv.yaml"], "there is no folder"),
    (["infer", PLAIN, "-o", "{tmp}"], "is a folder"),
    (["check", PLAIN, "--against", "{inv}", "--timeout", "0"], "--timeout must be"),
])
def test_outputs_and_options_are_refused_before_the_first_run(capsys: pytest.CaptureFixture, learned: Path,
                                                              argv: list, fragment: str) -> None:
    filled = [a.format(inv=learned / "inv.yaml", tmp=learned) for a in argv]
    code, out, err = invar(capsys, *filled, "--store", str(learned / "store"))
    assert code == 2 and fragment in err, err
    assert "reference run" not in err and "step" not in out  # nothing ran


def test_a_script_whose_name_is_not_utf8_is_refused_with_2(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    name = os.fsdecode(b"train\xff.py")  # what click hands over for such a command-line argument
    (tmp_path / name).write_text(Path(PLAIN).read_text())
    code, _, err = invar(capsys, "trace", str(tmp_path / name), "--store", str(tmp_path / "s"))
    assert code == 2 and "not valid UTF-8" in err and "Traceback" not in err


@pytest.mark.parametrize("name, body", [
    ("digits.yaml", "schema: 1\nmeta: {n: " + "7" * 5000 + "}\ninvariants: []\n"),
    ("digits.json", '{"schema": 1, "meta": {"n": ' + "7" * 5000 + '}, "invariants": []}'),
])
def test_a_5000_digit_number_is_a_malformed_file(capsys: pytest.CaptureFixture, tmp_path: Path, name: str,
                                                 body: str) -> None:
    (tmp_path / name).write_text(body)
    code, _, err = invar(capsys, "export", str(tmp_path / name))
    assert code == 2 and "more than" in err and "digits" in err and "Traceback" not in err


def test_huge_and_special_invariant_files_are_refused_unread(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as f:
        f.truncate(invfile.MAX_FILE_BYTES * 6)  # 48 MiB, sparse: reading it would take minutes
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # nothing ever writes: reading it would hang
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    for path, fragment in ((huge, "larger than 8 MiB"), (fifo, "a FIFO"), (folder, "a folder")):
        code, _, err = invar(capsys, "check", PLAIN, "--against", str(path), "--store", str(tmp_path / "s"))
        assert code == 2 and fragment in err, (path, err)


def test_checking_against_a_set_with_nothing_active_exits_1_before_running(capsys: pytest.CaptureFixture,
                                                                         tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("schema: 1\nmeta: {}\ninvariants: []\n")
    code, out, err = invar(capsys, "check", PLAIN, "--against", str(empty), "--store", str(tmp_path / "s"))
    assert code == 1 and "nothing could be checked" in err and "holds no invariant" in err and "step" not in out
    off = tmp_path / "off.yaml"
    invs = small_set()
    invfile.dump(dataclasses.replace(invs, invariants=[dataclasses.replace(i, status="disabled")
                                                       for i in invs.invariants]), off)
    code, _, err = invar(capsys, "check", PLAIN, "--against", str(off), "--store", str(tmp_path / "s"))
    assert code == 1 and "are disabled" in err


def test_infer_from_refuses_runs_that_did_not_end_unless_told(capsys: pytest.CaptureFixture, learned: Path) -> None:
    store = str(learned / "store")
    with Store(store) as s:
        good = [r.id for r in s.runs()]
        cut = s.new_run(PLAIN, [], label="infer")
        s.add_observations(cut, reference_run(5))
        s.finish_run(cut, "interrupted", 7, "interrupted by SIGTERM")
        never = s.new_run(PLAIN, [], label="infer")  # a SIGKILLed writer: `running` forever
    out = str(learned / "mined.yaml")
    for bad in (cut, never):
        code, _, err = invar(capsys, "infer", "--from", good[0], "--from", bad, "-o", out, "--store", store)
        assert code == 2 and f"run {bad}" in err and "--allow-incomplete" in err, err
        assert not Path(out).exists()
    code, _, err = invar(capsys, "infer", "--from", good[0], "--from", good[1], "--from", cut, "--allow-incomplete",
                         "-o", out, "--store", store)
    assert code == 0 and "which did not run to its end" in err and Path(out).exists()


def _damage_pages(db: Path) -> None:
    # Overwrite the header of every other page after the first: SQLite then reads a
    # malformed b-tree page ("database disk image is malformed").
    size = db.stat().st_size
    with open(db, "r+b") as f:
        for page in range(2, size // 4096 + 1, 2):
            f.seek((page - 1) * 4096)
            f.write(b"\xff" * 16)


def test_a_page_damaged_store_is_6_for_readers(capsys: pytest.CaptureFixture, learned: Path) -> None:
    with Store(learned / "store") as s:  # enough rows for several pages
        for seed in range(6):
            s.add_observations(s.new_run(PLAIN, []), reference_run(seed))
    _damage_pages(learned / "store" / "traces.sqlite")
    for argv in (["sets"], ["runs"], ["export", "set-2026"]):
        code, _, err = invar(capsys, *argv, "--store", str(learned / "store"))
        assert code == 6 and "not a usable SQLite database" in err and "Traceback" not in err, (argv, err)


def test_a_read_only_or_full_store_is_read_and_refuses_writes_with_5(capsys: pytest.CaptureFixture,
                                                                     learned: Path, tmp_path: Path) -> None:
    from tests.tmpfs import fill, make_read_only, tmpfs
    for how in ("read-only", "full"):
        with tmpfs(tmp_path / how) as place:
            shutil.copytree(learned / "store", place / "store")
            make_read_only(place) if how == "read-only" else fill(place)
            store = str(place / "store")
            for argv in (["runs"], ["sets"], ["export", "set-2026"]):
                code, out, err = invar(capsys, *argv, "--store", store)
                assert code == 0 and "Traceback" not in err, (how, argv, err)
            assert "set-20260101-000000-aaaa" in invar(capsys, "sets", "--store", store)[1]
            code, _, err = invar(capsys, "trace", PLAIN, "--store", store)
            assert code == 5 and "the data in it is intact" in err, (how, err)
            assert ("read-only" if how == "read-only" else "full") in err
