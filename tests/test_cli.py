"""End-to-end: infer on a small pipeline, check variants, the report formats, export and diff."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from invariants import invfile
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
