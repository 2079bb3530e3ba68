"""`invar eval` from data: rows, the table, the torch threads of a case worker."""
from __future__ import annotations

import os

from click.testing import CliRunner

from invariants.app.cli import cli


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
    runner = CliRunner()
    help_text = " ".join(runner.invoke(cli, ["eval", "--help"]).output.split())
    assert "--threads" in help_text and "1 when --jobs > 1" in help_text
    assert runner.invoke(cli, ["eval", "--threads", "0"]).exit_code == 2
