"""End-to-end: the static phase (solver and graph capture) at the root model's first call
is invisible to the user's program."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import SCRIPTS, run_invar

HOOKS = SCRIPTS / "hook_counter.py"


def _counts(text: str) -> list:
    return [line for line in text.splitlines() if line.startswith("step ") and "calls" in line]


def test_the_users_hooks_count_the_same_calls_traced_and_untraced(tmp_path: Path) -> None:
    plain = subprocess.run([sys.executable, str(HOOKS)], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    expected = _counts(plain.stdout)
    assert len(expected) == 4 and expected[0] == "step 0 calls global=7 head=1"  # 6 modules and the loss
    r = run_invar("infer", str(HOOKS), "--runs", "1", "--steps", "0", "-o", str(tmp_path / "inv.yaml"),
                  "--store", str(tmp_path / "store"))
    assert r.returncode == 0, r.stderr
    assert _counts(r.stdout) == expected
