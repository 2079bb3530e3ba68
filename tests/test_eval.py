"""Quality, end to end: `invar eval corpus` finds every corpus bug with its root cause and
raises no error-level false alarm on ok variants or fresh-seed reference runs."""
from __future__ import annotations

import json
import os

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
    assert t["exact_root_cause"] >= 0.9, [(row["variant"], row["root_causes"]) for row in doc["rows"]
                                           if row["kind"] == "bug" and not row["matched"]]
    structural = [row for row in doc["rows"] if row["kind"] == "bug" and row["expected_severity"] == "error"
                  and set(row["expected"]) & {"frozen", "no_gradient", "not_in_optimizer", "output_width",
                                              "leakage", "input_size", "input_scale"}]
    assert structural and all(row["first_step"] is not None and row["first_step"] <= 1 for row in structural), \
        [(row["variant"], row["first_step"]) for row in structural]
    assert r.returncode == 0, r.stderr[-2000:]


def _report(*causes):
    """A check report with one violation per (family, locus, severity) cause."""
    from types import SimpleNamespace
    cs = [SimpleNamespace(family=f, locus=l, severity=s) for f, l, s in causes]
    vs = [SimpleNamespace(severity=s, step=3) for _, _, s in causes]
    return SimpleNamespace(causes=cs, violations=vs, errors=sum(s == "error" for *_, s in causes),
                           warnings=sum(s == "warning" for *_, s in causes), invariants_checked=9,
                           seconds=1.0, crash=None)


def test_bug_named_only_at_warning_level_reads_warning_only() -> None:
    from invariants.app.evaluate import EvalReport, _row_from, render_markdown
    meta = {"severity": "error", "expect": {"causes": ["frozen"], "locus": None}}
    warned = _row_from("c", "bug_a.py", "bug", meta, _report(("frozen", "fc", "warning")), 0)
    unrelated = _row_from("c", "bug_b.py", "bug", meta, _report(("loss_trend", None, "warning")), 0)
    found = _row_from("c", "bug_c.py", "bug", meta, _report(("frozen", "fc", "error")), 1)
    assert (warned.detected, warned.warned, warned.warning_causes) == (False, True, ["frozen@fc"])
    assert (unrelated.detected, unrelated.warned) == (False, False)
    assert (found.detected, found.warned) == (True, False)
    table = render_markdown(EvalReport(rows=[warned, unrelated, found])).splitlines()
    assert "| warning only | frozen@fc (warning) |" in table[2]
    assert "| **no** |" in table[3] and "| yes | frozen@fc |" in table[4]
    assert EvalReport(rows=[warned]).totals()["recall"] == 0.0


def test_torch_threads_are_set_for_the_cases_and_restored() -> None:
    import torch
    from invariants.app.evaluate import _torch_threads
    before = torch.get_num_threads()
    with _torch_threads(1):
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    assert torch.get_num_threads() == before
    help_text = " ".join(run_invar("eval", "--help").stdout.split())
    assert "--threads" in help_text and "1 when --jobs > 1" in help_text
    assert run_invar("eval", "--threads", "0").returncode == 2
