"""The store-reading commands: runs, show, sets."""
from __future__ import annotations

import json
import time
from typing import Any, Optional, Tuple

import click

from invariants.app.cli.common import READ_EXITS, store_option
from invariants.app.store import Store
from invariants.report import short_path


@click.command(epilog=READ_EXITS)
@store_option
def runs(store_dir: str) -> None:
    """List the runs in the store."""
    with Store(store_dir, create=False) as store:
        items = store.runs()
    if not items:
        click.echo(f"no runs in {store_dir}")
        return
    width = min(max(len("label"), *(len(r.label or "-") for r in items)), 24)
    click.echo(f"{'run':<24} {'status':<10} {'steps':>5}  {'started':<19}  {'label':<{width}}  script")
    for r in items:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started))
        click.echo(f"{r.id:<24} {r.status:<10} {r.steps:>5}  {started}  {r.label or '-':<{width}}  "
                   f"{short_path(r.script)}")


@click.command(epilog=READ_EXITS)
@click.argument("run_id")
@store_option
def show(run_id: str, store_dir: str) -> None:
    """Summarise one stored run (an id or a unique prefix)."""
    with Store(store_dir, create=False) as store:
        info = store.run(run_id)
        variables = store.variables(info.id)
        count = store.observation_count(info.id)
        facts = store.facts(info.id)
    click.echo(f"run {info.id}  {info.script}  {info.status}")
    click.echo(f"  label         {info.label or '-'}")
    click.echo(f"  argv          {' '.join(info.argv) or '-'}")
    click.echo(f"  steps         {info.steps}")
    click.echo(f"  observations  {count} of {len(variables)} variables")
    click.echo(f"  graph         {facts.get('graph', '-')}")
    if info.error:
        click.echo(f"  error         {info.error}")
    groups: dict = {}
    for v in variables:
        groups.setdefault(v.split(".")[0], []).append(v)
    for g, vs in sorted(groups.items()):
        shown = ", ".join(vs[:6]) + (f", ... (+{len(vs) - 6})" if len(vs) > 6 else "")
        click.echo(f"  {g + ':':<13} {shown}")


@click.command(epilog=READ_EXITS)
@store_option
def sets(store_dir: str) -> None:
    """List the invariant sets in the store (`infer` saves one per file it writes); an id
    or a unique prefix works as --against and export/diff SOURCE."""
    with Store(store_dir, create=False) as store:
        items = store.invariant_sets()
    if not items:
        click.echo(f"no invariant sets in {store_dir}")
        return
    click.echo(f"{'set':<28} {'created':<19}  {'invariants':>10} {'error':>6} {'disabled':>8}  script -> file")
    for item in items:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item.created))
        total, errors, disabled, script = _set_counts(item.body)
        click.echo(f"{item.id:<28} {created}  {total:>10} {errors:>6} {disabled:>8}  "
                   f"{short_path(script) if script else '?'} -> {item.label or '-'}")


def _set_counts(body: str) -> Tuple[Any, Any, Any, Optional[str]]:
    """(invariants, error-level, disabled, meta.script) of a stored set's JSON; '?' for a
    body that does not parse (the listing should still show the others)."""
    try:
        doc = json.loads(body)
        invs = doc.get("invariants") or []
        return (len(invs), sum(1 for i in invs if i.get("severity") == "error"),
                sum(1 for i in invs if i.get("status") == "disabled"), (doc.get("meta") or {}).get("script"))
    except (ValueError, AttributeError, TypeError):
        return "?", "?", "?", None
