"""`invar report`: render a check's report again, from the store or a saved JSON report."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import click

from invariants.app.cli.common import Exit, exit_help, store_option, write_report
from invariants.errors import InvarError, UsageError

REPORT_EXITS = exit_help((Exit.OK, "rendered"),
                         (Exit.BAD_INPUT, "bad usage, no such run or file, a run that holds no check report, a "
                                          "file that is no JSON check report, an unloadable --against, or "
                                          "matplotlib missing (pip install 'torch-invar[report]')"),
                         (Exit.STORE_CORRUPT, None))


# What the page reads of each entry (CheckReport.to_json writes them all).
VIOLATION_FIELDS = ("id", "target", "phase", "step", "severity", "observed", "expected")
CAUSE_FIELDS = ("family", "violations")


@click.command(epilog=REPORT_EXITS)
@click.argument("source")
@click.option("-o", "--output", default=None, help="Write the report here [default: stdout].")
@click.option("--format", "fmt", type=click.Choice(["html", "json"]), default="html", show_default=True,
              help="html: one self-contained page with plots (needs torch-invar[report]); json: the report "
                   "as `check --format json` wrote it.")
@click.option("--against", default=None,
              help="Invariant file or stored set for the bounds [default: the one the check kept in the store, "
                   "else the report's own `against`].")
@store_option
def report(source: str, output: Optional[str], fmt: str, against: Optional[str], store_dir: str) -> None:
    """Render the report of a check: SOURCE is a checked run in the store (an id or unique
    prefix, see `invar runs`; every `invar check` keeps its report there) or a JSON report
    (`invar check ... --format json -o report.json`). The page plots the run against the
    reference runs found in --store; without them it shows the invariants' bounds only.

    \b
    invar report 20260101-120000-ab12cd -o report.html
    invar report report.json --store .invar -o report.html
    """
    if fmt == "html":
        from invariants.app.html import require_matplotlib
        require_matplotlib()
    doc, invariants, notes = _load(source, against, store_dir)
    if fmt == "json":
        write_report(json.dumps(doc, indent=2), output)
        return
    from invariants.app.html.check_page import render_check_page
    write_report(render_check_page(doc, invariants, store_dir, notes=notes), output)


def _load(source: str, against: Optional[str], store_dir: str) -> Tuple[Dict[str, Any], Any, List[str]]:
    """The report, the invariant set for its bounds (None: not loadable) and notes on what
    was not found."""
    from invariants.app import outputs
    from invariants.app.workflow import load_invariants
    if Path(source).is_file():
        doc, kept, notes = _read_json_report(source), None, []
    else:
        doc, kept, notes = outputs.stored(store_dir, source)
    if against:
        return doc, load_invariants(against, store_dir), []  # asked for by name: not loadable is an error
    if kept is not None:
        return doc, kept, notes
    try:
        return doc, load_invariants(str(doc.get("against", "")), store_dir), notes
    except InvarError as e:
        return doc, None, notes + [f"the invariant set could not be loaded ({e}); pass --against"]


def _read_json_report(path: str) -> Dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not JSON ({e}); pass a report written by `invar check --format json`") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("summary"), dict) or "violations" not in doc:
        raise UsageError(f"{path} is not a check report (no `summary` and `violations`); pass a report written "
                         f"by `invar check --format json`")
    for kind, fields in (("violations", VIOLATION_FIELDS), ("causes", CAUSE_FIELDS)):
        for i, entry in enumerate(doc.get(kind) or []):
            missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
            if missing:
                raise UsageError(f"{path}: {kind}[{i}] lacks {', '.join(missing)}; pass a report written by "
                                 f"`invar check --format json`")
    return doc
