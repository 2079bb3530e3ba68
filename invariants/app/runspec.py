"""What a supervisor tells its traced child (RunSpec), and the run facts the child records
for it beyond the tracer's own. Shared by both sides; nothing heavy is imported here."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

STATIC_REPORT = "static_report"  # run fact: the static phase's answers (ShapeReport.to_json)
STATIC_NOTES = "static_notes"    # run fact: their one-line summaries for the report


@dataclass(frozen=True)
class RunSpec:
    """Everything the child needs to trace one run (JSON on its command line)."""

    script: str                      # absolute path
    store_dir: str                   # absolute path
    run_id: str                      # registered by the supervisor
    config: Dict[str, Any]           # TraceConfig's fields
    args: List[str] = field(default_factory=list)
    seed_offset: int = 0
    static: bool = False             # run the static phase (infer and check do)
    fail_on: Optional[str] = None    # --fail-fast: stop at the first violation at this severity ...
    invariants: Optional[str] = None  # ... of the invariants in this JSON file
    probe: Optional[Dict[str, Any]] = None  # an active probe to attach (invariants/app/probes)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> "RunSpec":
        return RunSpec(**json.loads(text))
