"""What a finished check leaves behind besides its exit code: the report in the chosen
format, a copy of it kept in the store with the invariants it was checked against (so
that `invar report RUN_ID` renders it again later, from anywhere), and on request the
run's variables and violations as TensorBoard scalars and text.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from invariants import invfile
from invariants.app.store import Store, StoreError
from invariants.errors import UsageError

if TYPE_CHECKING:
    from invariants.model import InvariantSet
    from invariants.report import CheckReport

FORMATS = ("text", "json", "sarif", "junit", "html")
REPORT_FACT = "check_report"          # the report's JSON (CheckReport.to_json)
INVARIANTS_FACT = "check_invariants"  # the invariant set it was checked against, as JSON


def prepare(fmt: str, tensorboard: Optional[str]) -> None:
    """Before the run: a missing optional extra is a usage error now, not after the run."""
    if fmt == "html":
        from invariants.app.html import require_matplotlib
        require_matplotlib()
    if tensorboard:
        from invariants.app.tensorboard_log import require_tensorboard
        require_tensorboard()


def finish(result: "CheckReport", invariants: "InvariantSet", fmt: str, store_dir: str,
           tensorboard: Optional[str] = None) -> Tuple[str, List[str]]:
    """The report rendered in `fmt`, after keeping it in the store and writing TensorBoard
    logs; and the lines to tell the user on stderr (where the logs went, what failed)."""
    from invariants import report as rep
    doc = result.to_json()
    told = keep(store_dir, doc, invariants)
    if tensorboard:
        from invariants.app.tensorboard_log import write_run
        told.append(f"TensorBoard logs written to {write_run(tensorboard, doc, store_dir)}")
    if fmt == "html":
        from invariants.app.html.check_page import render_check_page
        return render_check_page(doc, invariants, store_dir), told
    return rep.RENDERERS[fmt](result), told


def keep(store_dir: str, doc: Dict[str, Any], invariants: "InvariantSet") -> List[str]:
    """Stores the report and its invariants as facts of the checked run (of each rank's run
    in a distributed check); a store that cannot take them is a warning, not a failure."""
    run_ids = [r for r in ((doc.get("summary") or {}).get("run_id") or "").split(",") if r]
    if not run_ids:
        return []
    body = json.loads(invfile.dumps(invariants, "json"))
    try:
        with Store(store_dir, create=False) as store:
            for run_id in run_ids:
                store.set_fact(run_id, REPORT_FACT, doc)
                store.set_fact(run_id, INVARIANTS_FACT, body)
    except StoreError as e:
        return [f"warning: the report was not kept in the store ({e}); `invar report` cannot render it later"]
    return []


def stored(store_dir: str, run_id: str) -> Tuple[Dict[str, Any], Optional["InvariantSet"], List[str]]:
    """The report a check kept for a run (an id or unique prefix), its invariants (None when
    they no longer load, e.g. written by an older invar) and notes saying so; StoreMissing
    for no store or run, UsageError for a run that holds no check report."""
    with Store(store_dir, create=False) as store:
        info = store.run(run_id)
        facts = store.facts(info.id)
    if REPORT_FACT not in facts:
        raise UsageError(f"run {info.id} ({info.label or 'unlabelled'}) holds no check report: only runs of "
                         f"`invar check` keep one (see `invar runs`); or pass a JSON report file")
    body = facts.get(INVARIANTS_FACT)
    if not body:
        return facts[REPORT_FACT], None, []
    try:
        return facts[REPORT_FACT], invfile.loads(json.dumps(body), "json", source=f"run {info.id}"), []
    except invfile.InvariantFileError as e:
        return facts[REPORT_FACT], None, [f"the invariants kept with the run do not load ({e})"]
