"""The commands on invariant files and stored sets: export, diff (no script runs)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from invariants.app.cli.common import Exit, err, exit_help, store_option
from invariants.errors import UsageError

EXPORT_EXITS = exit_help((Exit.OK, "rendered"), (Exit.BAD_INPUT, "bad usage, no such file or invariant set, "
                                                                "malformed invariant file, or OUTPUT not writable"),
                         (Exit.STORE_CORRUPT, None))
DIFF_EXITS = exit_help((Exit.OK, "no differences"), (Exit.VIOLATIONS, "A and B differ"),
                       (Exit.BAD_INPUT, "no such file or invariant set, or a malformed one"),
                       (Exit.STORE_CORRUPT, None))


@click.command(epilog=EXPORT_EXITS)
@click.argument("source")
@click.option("-o", "--output", default=None, help="Output file [default: stdout].")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json", "md", "html"]), default=None,
              help="Output format [default: from the output's extension, else yaml]; html: the md review "
                   "document as a page with the reference runs' envelopes (from --store) plotted per block "
                   "(needs torch-invar[report]).")
@store_option
def export(source: str, output: Optional[str], fmt: Optional[str], store_dir: str) -> None:
    """Render an invariant file or stored invariant set (an id or a unique prefix, see
    `invar sets`) for review (yaml, json, md, html)."""
    from invariants import invfile, review
    from invariants.app.workflow import load_invariants
    if fmt is None:
        ext = Path(output).suffix.lower() if output else ""
        fmt = {".json": "json", ".md": "md", ".html": "html", ".htm": "html"}.get(ext, "yaml")
    if fmt == "html":
        from invariants.app.html import require_matplotlib
        require_matplotlib("export --format html")
    invs = load_invariants(source, store_dir)
    if fmt == "html":
        from invariants.app.html.review_page import render_review_page
        text = render_review_page(invs, store_dir)
    else:
        text = review.render_markdown(invs) if fmt == "md" else invfile.dumps(invs, fmt)
    if output:
        try:
            if fmt in ("md", "html"):
                Path(output).write_text(text, encoding="utf-8")
            else:
                invfile.dump(invs, output, fmt)
        except OSError as e:
            raise UsageError(f"cannot write {output}: {e.strerror or e}") from None
        err(f"wrote {len(invs.invariants)} invariants to {output} ({fmt})")
    else:
        click.echo(text, nl=False)


@click.command(epilog=DIFF_EXITS)
@click.argument("a")
@click.argument("b")
@store_option
def diff(a: str, b: str, store_dir: str) -> None:
    """Show invariants added, removed and changed from A to B (exit 1 if they differ)."""
    from invariants import diff as diffmod
    from invariants.app.workflow import load_invariants
    d = diffmod.diff(load_invariants(a, store_dir), load_invariants(b, store_dir))
    click.echo(diffmod.render_diff(d))
    if d:
        sys.exit(Exit.VIOLATIONS)
