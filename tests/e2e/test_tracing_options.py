"""Tracing options that shape variable names (--block-depth) are stored in the invariant
file and used by check (issue 12 item 5)."""
from __future__ import annotations

from pathlib import Path

from tests.conftest import SCRIPTS, run_invar

PLAIN = str(SCRIPTS / "plain_train.py")


def test_tracing_options_that_name_variables_travel_with_the_invariants(tmp_path: Path) -> None:
    # --block-depth names the block variables: check uses the invariant file's, and refuses
    # another (its block invariants would go unchecked).
    inv, store = tmp_path / "inv.yaml", tmp_path / "store"
    r = run_invar("infer", PLAIN, "--runs", "1", "--steps", "3", "--block-depth", "2", "-o", str(inv),
                  "--store", str(store))
    assert r.returncode == 0, r.stderr
    from invariants import invfile
    assert invfile.load(str(inv)).meta["tracing"] == {"block_depth": 2}
    r = run_invar("check", PLAIN, "--against", str(inv), "--store", str(store), "--block-depth", "1")
    assert r.returncode == 2 and "--block-depth 1 differs from the 2" in r.stderr, r.stderr
    r = run_invar("check", PLAIN, "--against", str(inv), "--store", str(store), "--steps", "3")
    assert r.returncode in (0, 1) and "invariants checked" in r.stdout, r.stderr
