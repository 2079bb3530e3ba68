"""`invar shapes`: the static analysis alone."""
from __future__ import annotations

import contextlib
import json
import sys
from typing import Sequence

import click

from invariants.app.cli.common import Exit, exit_help, script_arguments
from invariants.app.workflow import PipelineCrashed
from invariants.errors import UsageError


@click.command(epilog=exit_help((Exit.OK, None), (Exit.BAD_INPUT, "bad usage or --probe, missing script, "
                                                                  "or the model was never called"),
                                (Exit.PIPELINE_CRASHED, "the script crashed before its model's first call"),
                                (Exit.SCRIPT_SYNTAX, None)))
@script_arguments
@click.option("--probe", "probes", multiple=True, metavar="CxHxW",
              help="An input size (without batch) to test for acceptance; repeatable.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def shapes(script: str, script_args: Sequence[str], probes: Sequence[str], fmt: str) -> None:
    """Static shape analysis: run SCRIPT up to its model's first call, analyse, stop.

    Reports the symbolic output shape (is it [B, K] for every batch size?), the accepted
    input sizes and the module whose guard rejects a probe, each stage's feature-map size
    and the FLOPs / activation memory per step as functions of the input."""
    from invariants.app import shapes as shapes_mod
    try:
        sizes = [tuple(int(v) for v in p.lower().split("x")) for p in probes]
    except ValueError:
        raise UsageError(f"--probe takes sizes like 3x224x224, got {', '.join(probes)}") from None
    with contextlib.redirect_stdout(sys.stderr):
        outcome = shapes_mod.run(script, script_args, sizes)
    if outcome.report is None:
        message = f"the model was never called: {outcome.reason}"
        raise PipelineCrashed(message) if outcome.crashed else UsageError(message)
    click.echo(json.dumps(outcome.to_json(), indent=2) if fmt == "json" else outcome.text())
