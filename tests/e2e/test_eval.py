"""Quality, end to end: `invar eval corpus` finds every corpus bug with its root cause and
raises no error-level false alarm on ok variants or fresh-seed reference runs; and every
check's HTML report (`--html`) holds its root cause with a plot of the violated variable
against the reference envelope (a bug), or "clean" with the curves (an ok variant)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import run_invar

EXTERNAL = re.compile(r"https?://|<script|<link|<img|<iframe|@import|url\((?!#)", re.I)
MAX_PAGE = 2_000_000  # bytes: the largest corpus case's page stays under ~2 MB


def _section(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}">')
    return page[start:page.index("</section>", start)]


def _page_problems(row: dict) -> list:
    """What the row's HTML report lacks (empty: nothing)."""
    page = Path(row["html"]).read_text(encoding="utf-8")
    problems = []
    if EXTERNAL.search(page):
        problems.append(f"references {EXTERNAL.search(page).group(0)!r}")
    if len(page) >= MAX_PAGE:
        problems.append(f"{len(page)} bytes")
    if row["kind"] == "ok" and not row["errors"]:
        if "<b>clean</b>" not in page or "-checked-" not in _section(page, "curves"):
            problems.append("no clean verdict with curves")
    elif row["kind"] == "bug" and row["detected"]:
        head, violations = page[:page.index('id="violations"')], _section(page, "violations")
        if 'class="cause error"' not in head and 'class="cause warning"' not in head:
            problems.append("no root cause")
        if "-envelope-" not in violations or not ("-checked-" in violations or "violating value" in violations):
            problems.append("no plot of the violated variable with its envelope")
    return problems


@pytest.mark.slow
@pytest.mark.quality
def test_corpus_detection_table(tmp_path) -> None:
    out = tmp_path / "eval.json"
    r = run_invar("eval", "corpus", "--jobs", "2", "--format", "json", "-o", str(out), "--html",
                  str(tmp_path / "html"), timeout=1500)
    doc = json.loads(out.read_text())
    pages = {(row["case"], row["variant"]): _page_problems(row) for row in doc["rows"]}
    assert not {k: v for k, v in pages.items() if v}, pages
    largest = max(doc["rows"], key=lambda row: Path(row["html"]).stat().st_size)
    print(f"largest HTML report: {largest['case']}/{largest['variant']}, "
          f"{Path(largest['html']).stat().st_size / 1024:.0f} KiB")
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
