"""Quality, end to end: `invar eval corpus` finds every corpus bug with its root cause and
raises no error-level false alarm on ok variants or fresh-seed reference runs."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_invar


@pytest.mark.slow
@pytest.mark.quality
def test_corpus_detection_table(tmp_path) -> None:
    out = tmp_path / "eval.json"
    r = run_invar("eval", "corpus", "--jobs", "2", "--format", "json", "-o", str(out), timeout=1500)
    doc = json.loads(out.read_text())
    t = doc["totals"]
    missed = [(row["case"], row["variant"]) for row in doc["rows"] if row["kind"] == "bug" and not row["detected"]]
    alarms = [(row["case"], row["variant"]) for row in doc["rows"] if row["kind"] != "bug" and row["errors"]]
    assert not missed, f"bugs missed: {missed}"
    assert not alarms, f"error-level false alarms: {alarms}"
    assert t["recall"] == 1.0 and t["false_alarms"] == 0 and t["loo_false_alarms"] == 0
    # a whole run checked against invariants from 30-step reference runs is clean, and no
    # clean run's check is incomplete
    assert t["whole_runs"] >= 10 and t["whole_run_false_alarms"] == 0, \
        [(row["case"], row["root_causes"]) for row in doc["rows"] if row["kind"] == "whole" and row["errors"]]
    assert t["incomplete_clean_runs"] == 0, [(row["case"], row["variant"]) for row in doc["rows"] if row["incomplete"]]
    assert all(m > 1 for envs in doc["closest_margins"].values() for m in (e["margin"] for e in envs.values()))
    assert t["exact_root_cause"] >= 0.9, [(row["variant"], row["root_causes"]) for row in doc["rows"]
                                           if row["kind"] == "bug" and not row["matched"]]
    structural = [row for row in doc["rows"] if row["kind"] == "bug" and row["expected_severity"] == "error"
                  and set(row["expected"]) & {"frozen", "no_gradient", "not_in_optimizer", "output_width",
                                              "leakage", "input_size", "input_scale", "weight_decay"}]
    assert structural and all(row["first_step"] is not None and row["first_step"] <= 1 for row in structural), \
        [(row["variant"], row["first_step"]) for row in structural]
    # the "no reference" column (docs/builtin.md): every universal bug found by the built-in set
    # alone, as an error with its root cause; no valid run fails it
    nr = t["no_reference"]
    no_ref = [(row["case"], row["variant"], row["no_reference"]["root_causes"]) for row in doc["rows"]
              if row["universal"] and not (row["no_reference"]["detected"] and row["no_reference"]["matched"])]
    assert nr["universal_bugs"] >= 20 and nr["recall"] == 1.0 and nr["exact_root_cause"] == 1.0, no_ref
    assert nr["false_alarms"] == nr["loo_false_alarms"] == nr["whole_run_false_alarms"] == 0, \
        [(row["case"], row["variant"]) for row in doc["rows"] if row["kind"] != "bug" and row["no_reference"]["errors"]]
    assert nr["incomplete_clean_runs"] == 0
    assert r.returncode == 0, r.stderr[-2000:]
