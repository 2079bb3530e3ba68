"""The demo: infer invariants from one corpus reference, then check one of its bug variants."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Optional

from corpus import cases
from invariants import invfile, report
from invariants.app import workflow

# The forum 84911 case: the report a new user should see first (a frozen backbone).
DEMO_CASE = "efficientnet_finetune"
DEMO_RUNS, DEMO_STEPS = 3, 30


def _pick_variant(case: Path) -> Optional[str]:
    bugs = [v for v in cases.load(case).get("variants") or [] if v.get("kind") == "bug"
            and v.get("severity", "error") == "error"]
    return bugs[0]["script"] if bugs else None


def demo(store_dir: Optional[str], echo: Callable[[str], None] = print,
         progress: Callable[[str], None] = print) -> int:
    """Runs the demo; returns 0 when the bug variant was caught, 1 when it was missed."""
    found = cases.case_dirs()
    case = next((c for c in found if c.name == DEMO_CASE), found[0])
    variant = _pick_variant(case)
    with tempfile.TemporaryDirectory() as tmp:
        store = store_dir or str(Path(tmp) / "store")
        out = Path(tmp) / "invariants.yaml"
        echo(f"== 1. invar infer {case.name}/reference.py --runs {DEMO_RUNS} --steps {DEMO_STEPS}")
        outcome = workflow.infer(str(case / "reference.py"), [], runs=DEMO_RUNS, steps=DEMO_STEPS,
                                 store_dir=store, progress=progress)
        invfile.dump(outcome.invariants, out)
        errors = sum(1 for i in outcome.invariants.invariants if i.severity == "error")
        echo(f"   {len(outcome.invariants.invariants)} invariants ({errors} error-level, "
             f"{outcome.mined.suppressed} implied ones suppressed)")
        echo(f"== 2. invar check {case.name}/reference.py with a new seed (must be clean)")
        clean = workflow.check(str(case / "reference.py"), [], outcome.invariants, against=str(out),
                               store_dir=store, seed_offset=workflow.FRESH_SEED_OFFSET)
        echo(f"   {clean.errors} error(s), {clean.warnings} warning(s)")
        if variant is None:
            return 0
        echo(f"== 3. invar check {case.name}/{variant} --against invariants.yaml")
        rep = workflow.check(str(case / variant), [], outcome.invariants, against=f"{case.name}/invariants.yaml",
                             store_dir=store)
        echo(report.render_text(rep))
        return 0 if rep.errors else 1  # the demo succeeds when the bug is caught
