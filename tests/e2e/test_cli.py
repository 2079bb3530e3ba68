"""End-to-end: infer on a small pipeline, check its variants through the command line."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from invariants import invfile
from invariants.model import InvariantSet
from tests.conftest import SCRIPTS, run_invar

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
    # the learned invariant and the built-in one that says the same: both off, nothing fails
    inv = (invfile.load(learned / "inv.yaml").with_status("disjoint:data.overlap@eval", "disabled")
           .with_status("builtin:eval-disjoint-from-train", "disabled"))
    invfile.dump(inv, tmp_path / "off.yaml")
    r = run_invar("check", PLAIN, "--against", str(tmp_path / "off.yaml"), "--store", str(learned / "store"),
                  "--", "--overlap")
    assert r.returncode == 0, r.stdout
    assert "2 disabled" in r.stdout


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
    # no violation, but error-level facts could not be looked at: incomplete, never "ok"
    assert r.returncode == 7, r.stdout + r.stderr
    assert "INCOMPLETE" in r.stdout and "Not observed (the verdict is incomplete)" in r.stdout
    assert "--allow-unchecked accepts that" in r.stderr
    errors = sum(1 for i in inv.invariants if i.severity == "error")
    mined_errors = sum(1 for i in inv.invariants if i.severity == "error" and i.origin == "mined")
    assert re.search(rf"WARNING: \d+ of {errors} error-level invariants were never checked", r.stdout)
    assert "may describe another pipeline (learned from" in r.stdout and "plain_train.py)" in r.stdout
    assert "variable never observed in that phase" in r.stdout and "[error] " in r.stdout
    assert "was never observed in train" in r.stdout
    r = run_invar("check", PLAIN, "--against", str(tmp_path / "other.yaml"), "--store", str(learned / "store"),
                  "--steps", "3", "--format", "json")
    doc = json.loads(r.stdout)
    s = doc["summary"]
    assert s["unchecked"]["total"] == len(doc["unchecked"]) == s["invariants_total"] - s["invariants_checked"]
    # every renamed mined one is unchecked: never observed, or decided after step 3 (the
    # built-ins about variables the pipeline lacks are "not applicable")
    u = s["unchecked"]
    assert u["never_observed"] + u["window_not_reached"] >= mined_errors - 1 and u["errors"] >= mined_errors - 1
    assert s["coverage_warning"] and s["reference"].endswith("plain_train.py")
    assert {"id", "severity", "reason", "detail"} <= set(doc["unchecked"][0])
    assert "invar: warning:" in r.stderr  # a machine-readable report repeats it on stderr
    assert r.returncode == 7 and doc["summary"]["incomplete"] and doc["unobserved"]
    r = run_invar("check", PLAIN, "--against", str(tmp_path / "other.yaml"), "--store", str(learned / "store"),
                  "--steps", "3", "--allow-unchecked")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Not observed (accepted)" in r.stdout


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
