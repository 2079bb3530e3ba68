"""`invar shapes` on a script: the static analysis alone, as JSON."""
from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import SCRIPTS, run_invar


def test_shapes_command_json(tmp_path: Path) -> None:
    r = run_invar("shapes", str(SCRIPTS / "plain_train.py"), "--probe", "3x8x8", "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["output"]["shape"] == ["B", "4"]
    assert doc["output"]["batch_polymorphic"] in ("proved", "unknown")
    assert set(doc) >= {"output", "domain", "probes", "stages", "cost"}
    assert doc["probes"][0]["size"] == [3, 8, 8]
