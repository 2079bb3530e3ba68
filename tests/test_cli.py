"""End-to-end: infer on a small pipeline, check variants, the report formats, export and diff."""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from invariants import invfile
from invariants.model import InvariantSet
from tests.conftest import ROOT, SCRIPTS, run_invar
from invariants.app.store import Store

PLAIN = str(SCRIPTS / "plain_train.py")


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("learned")
    r = run_invar("infer", PLAIN, "--runs", "3", "--steps", "20", "-o", str(d / "inv.yaml"),
                  "--store", str(d / "store"), "--explain")
    assert r.returncode == 0, r.stderr
    assert "reference run 3/3" in r.stderr  # progress is shown
    assert "wrote" in r.stdout and "Discarded candidates" in r.stdout
    return d


def test_clean_variant_exits_0(learned: Path) -> None:
    r = run_invar("check", PLAIN, "--against", str(learned / "inv.yaml"), "--store", str(learned / "store"),
                  "--", "--functional")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no invariant violated" in r.stdout or "0 error(s)" in r.stdout


def test_leak_is_reported_with_root_cause_json(learned: Path) -> None:
    r = run_invar("check", PLAIN, "--against", str(learned / "inv.yaml"), "--store", str(learned / "store"),
                  "--format", "json", "--", "--overlap")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["summary"]["errors"] >= 1 and doc["summary"]["steps"] == 20
    assert doc["summary"]["invariants_checked"] > 50
    v = doc["violations"][0]
    assert set(v) >= {"id", "template", "target", "severity", "expected", "observed", "step", "phase",
                      "locus", "message", "hint"}
    assert doc["causes"][0]["family"] == "leakage" and doc["causes"][0]["violations"]
    assert v["step"] == 0


def test_fail_fast_stops_the_run(learned: Path) -> None:
    r = run_invar("check", PLAIN, "--against", str(learned / "inv.yaml"), "--store", str(learned / "store"),
                  "--fail-fast", "--", "--overlap")
    assert r.returncode == 1
    assert "stopped early" in r.stdout and "1 optimizer steps traced" in r.stdout


def test_disabled_invariant_is_skipped(learned: Path, tmp_path: Path) -> None:
    text = (learned / "inv.yaml").read_text()
    edited = text.replace("template: disjoint\n", "template: disjoint\n", 1)
    inv = invfile.load(learned / "inv.yaml")
    inv = inv.with_status("disjoint:data.overlap@eval", "disabled")
    invfile.dump(inv, tmp_path / "off.yaml")
    assert edited
    r = run_invar("check", PLAIN, "--against", str(tmp_path / "off.yaml"), "--store", str(learned / "store"),
                  "--", "--overlap")
    assert r.returncode == 0, r.stdout
    assert "1 disabled" in r.stdout


def test_sarif_and_junit(learned: Path, tmp_path: Path) -> None:
    for fmt in ("sarif", "junit"):
        out = tmp_path / f"report.{fmt}"
        r = run_invar("check", PLAIN, "--against", str(learned / "inv.yaml"), "--store", str(learned / "store"),
                      "--format", fmt, "-o", str(out), "--", "--overlap")
        assert r.returncode == 1
        body = out.read_text()
        assert "data.overlap" in body
    assert json.loads((tmp_path / "report.sarif").read_text())["version"] == "2.1.0"


def test_script_crash_during_check_exits_3(learned: Path) -> None:
    r = run_invar("check", PLAIN, "--against", str(learned / "inv.yaml"), "--store", str(learned / "store"),
                  "--", "--crash-at", "2")
    assert r.returncode == 3
    assert "boom at step 2" in r.stderr


def test_export_load_export_is_byte_identical_and_self_diff_empty(learned: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert run_invar("export", str(learned / "inv.yaml"), "-o", str(a)).returncode == 0
    assert run_invar("export", str(a), "-o", str(b)).returncode == 0
    assert a.read_bytes() == b.read_bytes()
    j1, j2 = tmp_path / "a.json", tmp_path / "b.json"
    assert run_invar("export", str(a), "-o", str(j1)).returncode == 0
    assert run_invar("export", str(j1), "-o", str(j2)).returncode == 0
    assert j1.read_bytes() == j2.read_bytes()
    md = tmp_path / "review.md"
    assert run_invar("export", str(a), "-o", str(md)).returncode == 0
    assert "block" in md.read_text().lower()
    same = run_invar("diff", str(a), str(j1))
    assert same.returncode == 0 and "no differences" in same.stdout


def test_diff_shows_a_changed_bound(learned: Path, tmp_path: Path) -> None:
    text = (learned / "inv.yaml").read_text()
    changed = tmp_path / "changed.yaml"
    changed.write_text(text.replace("quantifier: all", "quantifier: none", 1))
    r = run_invar("diff", str(learned / "inv.yaml"), str(changed))
    assert r.returncode == 1 and "quantifier" in r.stdout


@pytest.mark.parametrize("body, fragment", [
    ("schema: 1\ninvariants: [\n", "line"),
    ("schema: 99\ninvariants: []\n", "newer"),
    ("schema: 1\ninvariants:\n  - {id: x, template: nosuch, target: [a], expect: {}, when: {phase: train, "
     "steps: [0, null]}, severity: error, status: proposed, support: {runs: 1, observations: 1, span: null}, "
     "why: w}\n", "nosuch"),
    ("!!python/object/apply:os.system ['touch /tmp/invar-pwned']\n", "python"),
])
def test_malformed_invariant_file_exits_2(tmp_path: Path, body: str, fragment: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(body)
    r = run_invar("check", PLAIN, "--against", str(f), "--store", str(tmp_path / "s"))
    assert r.returncode == 2, r.stderr
    assert fragment in r.stderr and "Traceback" not in r.stderr
    assert not Path("/tmp/invar-pwned").exists()


# -- coverage: what `check` could not check, and a pipeline that never trains ----------------
NO_TRAINING = 'print("METRICS {}")\n'
TINY = """import torch
torch.manual_seed(0)
model = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(4):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 2, (8,))).backward()
    opt.step()
"""


def _renamed(inv: InvariantSet, keep: int) -> InvariantSet:
    """The set with the targets of all but `keep` error-level invariants renamed to variables
    no run records: what an invariant file of another pipeline looks like."""
    out, kept = [], 0
    for i in inv.invariants:
        if i.severity == "error" and kept >= keep:
            i = dataclasses.replace(i, target=tuple("other." + t for t in i.target))
        kept += i.severity == "error"
        out.append(i)
    return dataclasses.replace(inv, invariants=tuple(out))


def test_unchecked_invariants_are_counted_with_reasons(learned: Path, tmp_path: Path) -> None:
    inv = invfile.load(learned / "inv.yaml")
    invfile.dump(_renamed(inv, keep=1), tmp_path / "other.yaml")
    r = run_invar("check", PLAIN, "--against", str(tmp_path / "other.yaml"), "--store", str(learned / "store"),
                  "--steps", "3")
    assert r.returncode == 0, r.stdout + r.stderr  # a warning, not a failure: something was checked
    errors = sum(1 for i in inv.invariants if i.severity == "error")
    assert re.search(rf"WARNING: \d+ of {errors} error-level invariants were never checked", r.stdout)
    assert "may describe another pipeline (learned from" in r.stdout and "plain_train.py)" in r.stdout
    assert "variable never observed in that phase" in r.stdout and "[error] " in r.stdout
    assert "was never observed in train" in r.stdout
    r = run_invar("check", PLAIN, "--against", str(tmp_path / "other.yaml"), "--store", str(learned / "store"),
                  "--steps", "3", "--format", "json")
    doc = json.loads(r.stdout)
    s = doc["summary"]
    assert s["unchecked"]["total"] == len(doc["unchecked"]) == s["invariants_total"] - s["invariants_checked"]
    assert s["unchecked"]["never_observed"] >= errors - 1 and s["unchecked"]["errors"] >= errors - 1
    assert s["coverage_warning"] and s["reference"].endswith("plain_train.py")
    assert {"id", "severity", "reason", "detail"} <= set(doc["unchecked"][0])
    assert "invar: warning:" in r.stderr  # a machine-readable report repeats it on stderr


def test_a_script_that_never_trains_fails_check_and_infer_writes_nothing(learned: Path, tmp_path: Path) -> None:
    script = tmp_path / "metrics_only.py"
    script.write_text(NO_TRAINING)
    r = run_invar("check", str(script), "--against", str(learned / "inv.yaml"), "--store", str(tmp_path / "s"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAILED" in r.stdout and "no optimizer step was observed" in r.stdout
    assert "no invariant violated" not in r.stdout
    junit = tmp_path / "report.xml"
    r = run_invar("check", str(script), "--against", str(learned / "inv.yaml"), "--store", str(tmp_path / "s"),
                  "--format", "junit", "-o", str(junit))
    assert r.returncode == 1 and 'failures="1"' in junit.read_text()
    assert "no optimizer step was observed" in r.stderr
    out = tmp_path / "empty.yaml"
    r = run_invar("infer", str(script), "--runs", "1", "-o", str(out), "--store", str(tmp_path / "s"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no optimizer step" in r.stderr and "never called its model" in r.stderr
    assert "per-run facts (dataset statistics, static shapes) need 3 runs" in r.stderr
    assert not out.exists()


def test_infer_from_warns_about_mixed_scripts_and_thin_support(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    tiny = tmp_path / "tiny" / "reference.py"
    tiny.parent.mkdir()
    tiny.write_text(TINY)
    ids = []
    for script in (PLAIN, str(tiny)):
        r = run_invar("trace", script, "--steps", "3", "--store", store)
        assert r.returncode == 0, r.stderr
        ids.append(r.stdout.split()[1])
    r = run_invar("infer", "--from", ids[0], "--from", ids[1], "-o", str(tmp_path / "mixed.yaml"), "--store", store)
    assert r.returncode == 0, r.stderr
    assert "2 different scripts" in r.stderr and "plain_train.py" in r.stderr and "tiny/reference.py" in r.stderr
    assert "2 reference runs: per-run facts" in r.stderr
    listing = run_invar("runs", "--store", store)
    assert "scripts/plain_train.py" in listing.stdout and "tiny/reference.py" in listing.stdout


def test_infer_of_a_missing_script_fails_before_tracing(tmp_path: Path) -> None:
    r = run_invar("infer", str(tmp_path / "nope.py"), "--store", str(tmp_path / "s"))
    assert r.returncode == 2 and "no such script" in r.stderr
    assert "reference run" not in r.stderr and "warning" not in r.stderr


# -- file-only commands: fast, no torch --------------------------------------------------------
def test_file_only_commands_do_not_import_torch(learned: Path, tmp_path: Path) -> None:
    with Store(learned / "store") as s:
        run_id, set_id = s.runs()[0].id, s.invariant_sets()[-1].id
    inv, md = str(learned / "inv.yaml"), str(tmp_path / "review.md")
    store = str(learned / "store")
    commands = [["--version"], ["--help"], ["check", "--help"], ["export", inv, "-o", md], ["diff", inv, inv],
                ["runs", "--store", store], ["sets", "--store", store], ["show", run_id, "--store", store],
                ["export", set_id[:-2], "-o", str(tmp_path / "set.yaml"), "--store", store]]
    code = ("import json, sys\n"
            "import invariants.cli as cli\n"
            "codes = []\n"
            "for argv in json.loads(sys.argv[1]):\n"
            "    try:\n"
            "        cli.main(argv)\n"
            "        codes.append(0)\n"
            "    except SystemExit as e:\n"
            "        codes.append(e.code or 0)\n"
            "heavy = [m for m in ('torch', 'numpy', 'solver', 'tracer.runner', 'tracer.session')\n"
            "         if m in sys.modules]\n"
            "print('RESULT', json.dumps({'codes': codes, 'heavy': heavy}))\n")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(commands)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    result = json.loads(r.stdout.split("RESULT ", 1)[1])
    assert result["heavy"] == [], result
    assert result["codes"] == [0] * len(commands), (result, r.stderr)
    assert Path(md).read_text().startswith("# Invariants")


# -- help: standalone option texts, the defaults and exit codes that apply ----------------------
def test_help_shows_what_applies_to_the_command() -> None:
    infer_help = " ".join(run_invar("infer", "--help").stdout.split())
    assert "check:" not in infer_help and "[check" not in infer_help
    assert "... then" not in infer_help and "this one ..." not in infer_help  # no fragments
    assert "Observe every optimizer step before step N. [default: 50]" in infer_help
    assert "After the dense steps, observe every N-th optimizer step. [default: 10]" in infer_help
    assert "the reference's" not in infer_help and "invariants violated" not in infer_help
    check_help = " ".join(run_invar("check", "--help").stdout.split())
    assert "[default: 5]" in check_help and "1 invariants violated" in check_help
    assert "as many as the reference ran on" in check_help
    for command in ("runs", "show", "sets", "export"):
        text = " ".join(run_invar(command, "--help").stdout.split())
        assert "Exit codes: 0" in text and "violated" not in text and "crashed" not in text, command
    assert "1 A and B differ" in " ".join(run_invar("diff", "--help").stdout.split())


# -- the store: read-only commands, sets, prefixes ------------------------------------------------
def test_read_only_commands_never_create_a_store(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for argv in (["runs"], ["sets"], ["show", "2026"], ["export", "set-2026"]):
        r = run_invar(*argv, "--store", str(missing))
        assert r.returncode == 2, (argv, r.stderr)
        assert f"no store at {missing}" in r.stderr and "Traceback" not in r.stderr
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_invar("runs", "--store", str(empty)).returncode == 2
    assert list(empty.iterdir()) == []


def test_sets_prefixes_and_ambiguous_ids(learned: Path, tmp_path: Path) -> None:
    store = tmp_path / "s"
    body = invfile.dumps(invfile.load(learned / "inv.yaml"), "json")
    with Store(store) as s:
        for i in range(7):
            s.new_run(f"/x/case{i}/reference.py", [], label="infer")
        s.save_invariant_set("set-20260101-000000-aaaa", "a.yaml", body)
        s.save_invariant_set("set-20260102-000000-bbbb", "b.yaml", body)
        prefix = s.runs()[0].id[:4]
    listing = run_invar("sets", "--store", str(store))
    assert listing.returncode == 0
    assert "set-20260101-000000-aaaa" in listing.stdout and "plain_train.py -> a.yaml" in listing.stdout
    runs = run_invar("runs", "--store", str(store)).stdout
    assert "case0/reference.py" in runs and "case6/reference.py" in runs
    out = tmp_path / "one.yaml"
    r = run_invar("export", "set-20260102", "-o", str(out), "--store", str(store))
    assert r.returncode == 0, r.stderr
    assert invfile.load(out) == invfile.load(learned / "inv.yaml")
    r = run_invar("export", "set-2026", "-o", str(out), "--store", str(store))
    assert r.returncode == 2 and "ambiguous: 2 match" in r.stderr
    r = run_invar("export", "nosuch", "--store", str(store))
    assert r.returncode == 2 and "no such file or invariant set" in r.stderr
    r = run_invar("show", prefix, "--store", str(store))
    assert r.returncode == 2 and "7 match" in r.stderr and "(+2 more)" in r.stderr


def test_unchecked_reasons_and_verdicts_from_data() -> None:
    from invariants.model import Invariant, Support, When
    from invariants.report import CheckReport, render_junit, render_text, unchecked

    def inv(iid: str, target: tuple, phase: str = "train", steps: tuple = (0, None), template: str = "range",
            severity: str = "error") -> Invariant:
        return Invariant(id=iid, template=template, target=target, expect={"min": 0.0, "max": 1.0},
                         when=When(phase, steps), severity=severity, status="proposed",
                         support=Support(3, 30), why="w")

    invs = InvariantSet(1, {"script": "ref/train.py"}, (
        inv("seen", ("a",)), inv("no_eval", ("a",), "eval"), inv("late", ("a",), steps=(9, None)),
        inv("early", ("a",), steps=(0, 1)), inv("trend", ("loss",), template="trend", steps=(0, 20)),
        inv("pair", ("a", "b"), severity="warning")))
    seen = {("train", "a"): (3, 5), ("train", "loss"): (0, 5)}
    got = {u.id: (u.reason, u.detail) for u in unchecked(invs, {"seen"}, seen)}
    assert got["no_eval"][0] == "never_observed" and "a was never observed in eval" == got["no_eval"][1]
    assert got["late"][0] == "window_not_reached" and "last observed at step 5" in got["late"][1]
    assert got["early"][0] == "not_evaluated" and got["trend"][0] == "window_not_reached"
    assert got["pair"] == ("never_observed", "b was never observed in train")

    def report(checked: int, steps: int, n_unchecked: int) -> CheckReport:
        r = CheckReport(script="s.py", against="i.yaml", run_id="r", run_status="complete", steps=steps,
                        invariants_total=6, invariants_checked=checked, invariants_disabled=0, violations=[],
                        causes=[], seconds=0.1, reference="ref/train.py", observed=0 if not steps else 3,
                        active_errors=5)
        r.unchecked = unchecked(invs, {"seen"}, seen)[:n_unchecked]
        return r

    nothing = report(0, 0, 6)
    assert nothing.failed and nothing.nothing_checked and "no optimizer step was observed" in nothing.failure
    assert "FAILED" in render_text(nothing) and 'failures="1"' in render_junit(nothing)
    most = report(1, 5, 5)
    assert not most.failed and "4 of 5 error-level" in most.coverage_warning
    assert "another pipeline (learned from ref/train.py)" in render_text(most)
    assert report(4, 5, 2).coverage_warning is None


def test_bench_prints_ratios_and_rejects_a_script_too_short_to_time(tmp_path: Path) -> None:
    from invariants.app.bench import step_overhead
    t = step_overhead(str(SCRIPTS / "plain_train.py"), ["--epochs", "1"], steps=10, repeats=2)
    assert len(t.repeats) == 2 and t.median_step("plain") > 0
    assert all(0 < t.ratio(m) < 20 and 0 < t.mean_ratio(m) < 20 for m in ("infer", "check"))
    short = tmp_path / "two_steps.py"
    short.write_text("import torch\nm = torch.nn.Linear(2, 1)\nopt = torch.optim.SGD(m.parameters(), lr=0.1)\n"
                     "for _ in range(2):\n    opt.zero_grad(); m(torch.ones(4, 2)).sum().backward(); opt.step()\n")
    res = run_invar("bench", str(short), "--repeats", "1", "--mining-runs", "1", "--mining-steps", "5")
    assert res.returncode == 2, res.stderr
    assert "fewer than 5 optimizer steps" in res.stderr
