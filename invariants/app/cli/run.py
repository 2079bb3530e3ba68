"""The commands that run a script under the tracer: trace, infer, check."""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Optional, Sequence

import click

from invariants import invfile
from invariants.app import outputs
from invariants.app.cli import distributed as ranked
from invariants.app.cli.common import (RUNS_SCRIPT, Exit, allow_unchecked_option, check_exit, check_output,
                                       check_timeout, err, exit_help, learned_block_depth, print_crash,
                                       run_settings, run_summary, script_arguments, store_option, trace_options,
                                       warn, write_invariants, write_report)
from invariants.app.scripts import check_script
from invariants.app.store import INTERRUPTED
from invariants.app.workflow import CHECK_SAMPLING, RECORD_SAMPLING
from invariants.builtin import NAME as BUILTIN
from invariants.errors import UsageError

TRACE_EXITS = exit_help((Exit.OK, "the run was recorded"), (Exit.BAD_INPUT, "bad usage or missing script"),
                        *RUNS_SCRIPT)
INFER_EXITS = exit_help((Exit.OK, "the invariant file was written"),
                        (Exit.BAD_INPUT, "bad usage, missing script or run, or nothing to learn "
                                         "(the reference ran no optimizer step)"), *RUNS_SCRIPT)
CHECK_EXITS = exit_help((Exit.OK, None), (Exit.VIOLATIONS, "invariants violated (at or above --fail-on), "
                                                          "or nothing could be checked"),
                        (Exit.BAD_INPUT, None), *RUNS_SCRIPT, (Exit.INCOMPLETE, None))


@click.command(epilog=TRACE_EXITS)
@script_arguments
@click.option("--steps", default=0, show_default=True, help="End the run after K optimizer steps (0: run to the end).")
@click.option("--label", default=None, help="A name for the run in `invar runs`.")
@store_option
@trace_options(RECORD_SAMPLING, "1 (no torchrun)")
def trace(script: str, script_args: Sequence[str], steps: int, label: Optional[str], store_dir: str,
          dense_steps: int, sample_every: int, block_depth: int, timeout: Optional[float],
          nproc_per_node: Optional[int]) -> None:
    """Run SCRIPT once under the tracer and record it in the store."""
    check_script(script)
    if _distributed(nproc_per_node, timeout):  # one invar per rank (docs/distributed.md)
        return ranked.trace(click.get_current_context())
    from invariants.app.supervisor import traced_run
    settings = run_settings(steps, dense_steps, sample_every, block_depth, RECORD_SAMPLING)
    res = traced_run(store_dir, script, script_args, settings, label=label, timeout=timeout)
    click.echo(run_summary(res))
    if res.crashed:
        print_crash(res)
        sys.exit(Exit.PIPELINE_CRASHED)
    if res.status == INTERRUPTED:
        err(f"invar: the run was {res.error or 'interrupted'}; its trace until then is kept as run {res.run_id}")
        sys.exit(Exit.INTERRUPTED)


def _distributed(nproc_per_node: Optional[int], timeout: Optional[float], invariants: Any = None) -> bool:
    """Whether the command runs one invar per rank (--timeout is for one process only)."""
    check_timeout(timeout)
    if not ranked.distributed(nproc_per_node, invariants):
        return False
    if timeout is not None:
        raise UsageError("--timeout ends one traced process; with several ranks torchrun's own timeouts apply: "
                         "drop it")
    return True


@click.command(epilog=INFER_EXITS)
@click.argument("script", required=False, type=click.Path(dir_okay=False))
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--runs", "n_runs", default=3, show_default=True, help="Reference runs to trace (reseeded).")
@click.option("--steps", default=30, show_default=True, help="Optimizer steps per reference run.")
@click.option("-o", "--output", default="invariants.yaml", show_default=True,
              help="Invariant file to write (.yaml or .json).")
@click.option("--from", "from_runs", multiple=True, help="Mine stored runs instead of tracing (repeatable).")
@click.option("--allow-incomplete", is_flag=True,
              help="With --from: also mine runs that did not run to their end (crashed, interrupted, killed).")
@click.option("--explain", is_flag=True, help="Also list every discarded candidate and why.")
@store_option
@trace_options(RECORD_SAMPLING, "1 (no torchrun)")
def infer(script: Optional[str], script_args: Sequence[str], n_runs: int, steps: int, output: str,
          from_runs: Sequence[str], allow_incomplete: bool, explain: bool, store_dir: str, dense_steps: int,
          sample_every: int, block_depth: int, timeout: Optional[float], nproc_per_node: Optional[int]) -> None:
    """Learn invariants from reference runs of SCRIPT and write them to a file."""
    if not from_runs and not script:
        raise UsageError("give a SCRIPT to trace, or --from RUN_ID to mine stored runs")
    if n_runs < 1:
        raise UsageError(f"--runs must be >= 1, got {n_runs}")
    check_output(output)  # before any run, not after the last
    invfile.format_of(output)
    if script and not from_runs:
        check_script(script)  # before any progress line
    if _distributed(nproc_per_node, timeout):  # one invar per rank (docs/distributed.md)
        return ranked.infer(click.get_current_context())
    from invariants.app import workflow
    if from_runs:
        outcome = workflow.infer_from_store(from_runs, store_dir, allow_incomplete=allow_incomplete)
    else:
        settings = run_settings(steps, dense_steps, sample_every, block_depth, RECORD_SAMPLING)
        warn(workflow.support_warning(n_runs))
        try:
            outcome = workflow.infer(script, script_args, runs=n_runs, steps=steps, store_dir=store_dir,
                                     config=settings, progress=err, timeout=timeout)
        except workflow.PipelineCrashed as e:
            print_crash(e.result)
            sys.exit(Exit.PIPELINE_CRASHED)
    write_invariants(outcome, output, store_dir, explain)
    for line in outcome.builtins.lines() if outcome.builtins else ():  # which built-ins the reference confirmed
        click.echo(line)


@click.command(epilog=CHECK_EXITS)
@script_arguments
@click.option("--against", default=BUILTIN, show_default=True,
              help="Invariant file, stored invariant set id (or unique prefix), or `builtin`: the built-in set "
                   "that holds for virtually every correct pipeline, no reference run needed (docs/builtin.md).")
@click.option("--allow", "allow", multiple=True, metavar="FAMILY[@BLOCK]",
              help="A deliberate exception (e.g. frozen@backbone): its violations are reported as allowed, not "
                   "failed on (repeatable).")
@click.option("--allow-file", "allow_files", multiple=True, metavar="FILE",
              help="Allow-list file: one FAMILY[@BLOCK] per line, `# why` after it (repeatable).")
@click.option("--steps", default=None, type=int, help="Optimizer steps to trace [default: the reference's].")
@click.option("--format", "fmt", type=click.Choice(outputs.FORMATS), default="text", show_default=True,
              help="Report format; html: one self-contained page with plots of each violated variable against "
                   "the reference runs (needs torch-invar[report]; docs/report.md).")
@click.option("-o", "--output", default=None, help="Write the report here instead of stdout.")
@click.option("--tensorboard", default=None, metavar="DIR",
              help="Also write the run's variables (scalars) and violations (text) for TensorBoard to "
                   "DIR/invar-RUN_ID (needs the tensorboard package).")
@click.option("--fail-fast", is_flag=True, help="Stop the run at the first violation at or above --fail-on.")
@click.option("--fail-on", type=click.Choice(["error", "warning"]), default="error", show_default=True)
@allow_unchecked_option
@store_option
@trace_options(CHECK_SAMPLING, "as many as the reference ran on", "the one the invariants were learned with, else 1")
def check(script: str, script_args: Sequence[str], against: str, allow: Sequence[str], allow_files: Sequence[str],
          steps: Optional[int], fmt: str, output: Optional[str], tensorboard: Optional[str], fail_fast: bool,
          fail_on: str, allow_unchecked: bool, store_dir: str, dense_steps: int, sample_every: int, block_depth: int,
          timeout: Optional[float], nproc_per_node: Optional[int]) -> None:
    """Check SCRIPT while it runs: against learned invariants (--against FILE), or against
    the built-in set (the default)."""
    check_script(script)
    outputs.prepare(fmt, tensorboard)  # a missing extra fails now, not after the run
    check_output(output)
    from invariants import allow as allowing, builtin
    from invariants.app import workflow
    rules = allowing.rules_from(allow, allow_files)
    invs = workflow.load_invariants(against, store_dir)
    _refuse_nothing_to_check(invs, against)
    if _distributed(nproc_per_node, timeout, invs):  # one invar per rank (docs/distributed.md)
        return ranked.check(click.get_current_context(), invs)
    budget = steps if steps is not None else workflow.reference_steps(invs)
    block_depth = learned_block_depth(invs, against, block_depth)
    settings = run_settings(budget, dense_steps, sample_every, block_depth, CHECK_SAMPLING)
    # A machine-readable report owns stdout: the script's own prints go to stderr.
    redirect = contextlib.redirect_stdout(sys.stderr) if fmt != "text" and not output else contextlib.nullcontext()
    with redirect:
        result = workflow.check(script, script_args, invs, against=against, steps=budget, fail_fast=fail_fast,
                                fail_on=fail_on, store_dir=store_dir, config=settings, timeout=timeout)
    result = builtin.annotate(result, invs, rules)
    result.allow_unchecked = allow_unchecked
    text, told = outputs.finish(result, invs, fmt, store_dir, tensorboard)
    for line in told:
        err(f"invar: {line}")
    write_report(text, output)
    check_exit(result, to_stderr=fmt != "text" or bool(output))


def _refuse_nothing_to_check(invariants: Any, against: str) -> None:
    """A set without an active invariant checks nothing: exit 1 (as the help says) now,
    not after the run."""
    if not list(invariants.active()):
        total = len(invariants.invariants)
        held = f"all {total} of its invariants are disabled" if total else "it holds no invariant"
        err(f"invar: nothing could be checked: {against} has no active invariant ({held}); "
            f"re-run `invar infer`, or set entries' status to accepted")
        sys.exit(Exit.VIOLATIONS)
