"""`invar check` without a reference: the built-in set by default, declared exceptions, the
set exported for review, and `invar infer` keeping it in the learned file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from invariants import invfile
from tests.conftest import ROOT, run_invar

BUG = str(ROOT / "corpus" / "mse_broadcast" / "bug_broadcast.py")
REFERENCE = str(ROOT / "corpus" / "mse_broadcast" / "reference.py")


def test_check_without_against_uses_the_builtin_set_and_says_so(store: Path) -> None:
    r = run_invar("check", BUG, "--steps", "10", "--store", str(store))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "against builtin: FAILED" in r.stdout and "checked against the built-in invariant set" in r.stdout
    assert "loss_broadcast" in r.stdout and "--allow loss_broadcast" in r.stdout  # the hint names the way out


def test_an_allowed_exception_is_reported_not_failed_on(store: Path, tmp_path: Path) -> None:
    listed = tmp_path / "allow.txt"
    listed.write_text("loss_broadcast   # the [B, 1] output is averaged on purpose\n")
    r = run_invar("check", BUG, "--steps", "10", "--store", str(store), "--allow-file", str(listed),
                  "--format", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["against"] == "builtin" and doc["summary"]["errors"] == 0
    assert any(n.startswith(f"allowed by {listed}:1 loss_broadcast (the [B, 1] output is averaged on purpose): "
                            "1 loss broadcast violation") for n in doc["notes"])
    # what this pipeline does not have (dropout, an evaluation of classes) is not a gap
    assert not doc["summary"]["incomplete"] and doc["summary"]["unchecked"]["not_applicable"] > 0


@pytest.mark.slow
def test_export_shows_the_set_and_infer_keeps_it(store: Path, tmp_path: Path) -> None:
    review = tmp_path / "builtin.md"
    assert run_invar("export", "builtin", "-o", str(review)).returncode == 0
    assert "builtin:gradient-reaches-every-block" in review.read_text()
    learned = tmp_path / "invariants.yaml"
    r = run_invar("infer", REFERENCE, "--runs", "3", "--steps", "10", "-o", str(learned), "--store", str(store))
    assert r.returncode == 0, r.stderr
    assert "built-in invariants: " in r.stdout and " confirmed by the reference runs" in r.stdout
    kept = [i for i in invfile.load(learned).invariants if i.origin == "builtin"]
    assert {i.id for i in kept} == {i.id for i in invfile.load(ROOT / "invariants" / "builtin.yaml").invariants}
    assert any(i.support.runs == 3 for i in kept)
    d = run_invar("diff", "builtin", str(learned), "--store", str(store))
    assert d.returncode == 1 and "added" in d.stdout  # the learned file adds its mined invariants
