"""What every `invar` command shares: exit codes and the table mapping invar's errors to
them, the options several commands take, and how results are written and exited on.

Nothing heavy is imported here: torch, the tracer and the solver come in with the commands
that run a script, so `--help`, `runs`, `show`, `sets`, `export` and `diff` start in a
fraction of a second.
"""
from __future__ import annotations

import enum
import errno
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Type

import click

from invariants.app.scripts import ScriptMissing, ScriptSyntax
from invariants.app.store import INTERRUPTED, Store, StoreCorrupt, StoreMissing, StoreUnwritable
from invariants.app.workflow import PipelineCrashed, RunInterrupted, Sampling
from invariants.errors import InvarError, UsageError
from invariants.invfile import InvariantFileError, write_atomic


class OutputUnwritable(InvarError):
    """A report or invariant file could not be written once everything else had worked
    (a full disk, a folder that became read-only); the run's trace is in the store."""


class Exit(enum.IntEnum):
    """Exit codes of every invar command (documented in `invar --help`)."""

    OK = 0                # clean
    VIOLATIONS = 1        # invariants violated at or above --fail-on
    BAD_INPUT = 2         # bad usage, missing script, malformed invariant file
    PIPELINE_CRASHED = 3  # the user's script raised or exited non-zero
    SCRIPT_SYNTAX = 4     # the script is not valid Python
    STORE_UNWRITABLE = 5  # the store (or an output) cannot be written: read-only, full disk
    STORE_CORRUPT = 6     # the store file is damaged (not one SQLite can read)
    INCOMPLETE = 7        # no violation, but error-level invariants could not be observed
    INTERNAL = 70         # a bug in invar: please report it
    INTERRUPTED = 130     # SIGINT, SIGTERM or a KeyboardInterrupt ended the run (128 + SIGINT)


EXIT_TEXT: Dict[Exit, str] = {
    Exit.OK: "clean",
    Exit.VIOLATIONS: "invariants violated (at or above --fail-on)",
    Exit.BAD_INPUT: "bad usage, missing script or malformed invariant file",
    Exit.PIPELINE_CRASHED: "the pipeline itself crashed",
    Exit.SCRIPT_SYNTAX: "the script has a syntax error",
    Exit.STORE_UNWRITABLE: "the store or an output cannot be written (a read-only place, a full disk)",
    Exit.STORE_CORRUPT: "the store file is damaged",
    Exit.INCOMPLETE: "the check was incomplete: error-level invariants could not be observed "
                     "(--allow-unchecked accepts it)",
    Exit.INTERNAL: "an internal error in invar (please report it)",
    Exit.INTERRUPTED: "interrupted (Ctrl-C, SIGTERM, KeyboardInterrupt); a check reports what the run did until then",
}

# invar's errors and the exit code each means; the first class an error is an instance of
# wins. An exception that is not an InvarError is an internal error.
EXIT_CODES: Tuple[Tuple[Type[InvarError], Exit], ...] = (
    (UsageError, Exit.BAD_INPUT),
    (InvariantFileError, Exit.BAD_INPUT),
    (ScriptSyntax, Exit.SCRIPT_SYNTAX),
    (ScriptMissing, Exit.BAD_INPUT),
    (StoreMissing, Exit.BAD_INPUT),
    (StoreCorrupt, Exit.STORE_CORRUPT),
    (StoreUnwritable, Exit.STORE_UNWRITABLE),
    (OutputUnwritable, Exit.STORE_UNWRITABLE),
    (PipelineCrashed, Exit.PIPELINE_CRASHED),
    (RunInterrupted, Exit.INTERRUPTED),
)


def exit_code(e: InvarError) -> Exit:
    """The exit code of one of invar's errors (EXIT_CODES)."""
    return next((code for cls, code in EXIT_CODES if isinstance(e, cls)), Exit.BAD_INPUT)


def exit_help(*codes: Tuple[Exit, Optional[str]]) -> str:
    """The `Exit codes: ...` epilog of a command: the codes it can return, each with its
    own wording (None: the general one), and always the internal error last."""
    items = list(codes) + [(Exit.INTERNAL, None)]
    return "Exit codes: " + "; ".join(f"{int(c)} {text or EXIT_TEXT[c]}" for c, text in items) + "."


EXIT_HELP = exit_help(*((c, None) for c in Exit if c is not Exit.INTERNAL))  # every command
STORE_READ = ((Exit.BAD_INPUT, "bad usage, no store at --store, or no such (or an ambiguous) id"),
              (Exit.STORE_CORRUPT, None))
RUNS_SCRIPT = ((Exit.PIPELINE_CRASHED, "the pipeline crashed, exited non-zero, was killed or timed out"),
               (Exit.SCRIPT_SYNTAX, None), (Exit.STORE_UNWRITABLE, None), (Exit.STORE_CORRUPT, None),
               (Exit.INTERRUPTED, None))
READ_EXITS = exit_help((Exit.OK, "success"), *STORE_READ)


def err(message: str) -> None:
    """A line on stderr."""
    click.echo(message, err=True)


def warn(message: Optional[str]) -> None:
    """`invar: warning: ...` on stderr (nothing for None)."""
    if message:
        err(f"invar: warning: {message}")


# -- shared options ---------------------------------------------------------------------
def store_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--store", "store_dir", default=".invar", show_default=True,
                        envvar="INVAR_STORE", help="Directory of the trace store (SQLite).")(f)


def script_arguments(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.argument("script_args", nargs=-1, type=click.UNPROCESSED)(f)
    return click.argument("script", type=click.Path(dir_okay=False))(f)


def trace_options(sampling: Sampling, ranks_default: str,
                  depth_default: str = "1") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The tracing options of trace, infer and check, with this command's defaults."""
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        # Applied bottom-up: --help lists them in the reverse of this order.
        f = click.option("--nproc-per-node", "nproc_per_node", type=int, default=None, metavar="N",
                         help="Run SCRIPT on N local ranks under torchrun, one invar per rank "
                              f"(docs/distributed.md).  [default: {ranks_default}]")(f)
        f = click.option("--block-depth", type=int, default=None, metavar="N",
                         help=f"Module levels below the root model that form a block.  [default: {depth_default}]")(f)
        f = click.option("--timeout", type=float, default=None, metavar="S",
                         help="End a traced run that takes longer than S seconds (recorded as killed; "
                              "what it did until then is kept and checked).")(f)
        f = click.option("--sample-every", default=sampling.every, show_default=True, type=int, metavar="N",
                         help="After the dense steps, observe every N-th optimizer step.")(f)
        return click.option("--dense-steps", default=sampling.dense, show_default=True, type=int, metavar="N",
                            help="Observe every optimizer step before step N.")(f)
    return decorate


def run_settings(steps: int, dense_steps: Optional[int], sample_every: Optional[int], block_depth: Optional[int],
                 sampling: Sampling) -> Dict[str, Any]:
    """The TraceConfig fields of the tracing options (what a traced child gets);
    UsageError for values out of range."""
    for name, value in (("--steps", steps), ("--dense-steps", dense_steps), ("--sample-every", sample_every)):
        if value is not None and value < 0:
            raise UsageError(f"{name} must be >= 0, got {value}")
    block_depth = 1 if block_depth is None else block_depth
    if block_depth < 1:
        raise UsageError(f"--block-depth must be >= 1, got {block_depth}")
    return {"steps": steps, "dense_steps": sampling.dense if dense_steps is None else dense_steps,
            "sample_every": sampling.every if sample_every is None else sample_every, "block_depth": block_depth}


def learned_block_depth(invariants: Any, against: str, block_depth: Optional[int]) -> Optional[int]:
    """--block-depth for a check: the one the invariants were learned with (meta.tracing,
    which names the block variables); a different one given is a UsageError, since the
    invariants about blocks would then go unchecked. Files without it keep the option's."""
    learned = (invariants.meta.get("tracing") or {}).get("block_depth")
    if learned is None or block_depth in (None, learned):
        return learned if learned is not None else block_depth
    raise UsageError(f"--block-depth {block_depth} differs from the {learned} that {against} was learned with: "
                     f"its block variables (block.*, act.*) would be named for other blocks and go unchecked. "
                     f"Drop --block-depth (check uses {learned}), or re-run `invar infer --block-depth "
                     f"{block_depth}`")


def check_timeout(timeout: Optional[float]) -> Optional[float]:
    """--timeout, refused unless a number of seconds > 0 (None: no timeout)."""
    if timeout is not None and not timeout > 0:  # `not >` also refuses nan
        raise UsageError(f"--timeout must be a number of seconds > 0, got {timeout}")
    return timeout


def trace_config(steps: int, dense_steps: Optional[int], sample_every: Optional[int], block_depth: int,
                 sampling: Sampling) -> Any:
    """The TraceConfig of the tracing options (a rank traces in its own process)."""
    from tracer.session import TraceConfig
    return TraceConfig(**run_settings(steps, dense_steps, sample_every, block_depth, sampling))


def check_output(path: Optional[str], option: str = "-o") -> None:
    """Before anything runs: PATH can be written (its folder exists and takes files, and it
    is no folder itself); UsageError naming the option otherwise."""
    if not path:
        return
    p = Path(path)
    folder = p.parent
    if p.is_dir():
        raise UsageError(f"{option} {path} is a folder: give a file name")
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: there is no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: the folder {folder} is not writable")


def write_output(path: str, text: str) -> None:
    """Writes a finished result to PATH atomically (all of it or, on a full disk, nothing:
    no empty file is left); OutputUnwritable when it cannot."""
    try:
        write_atomic(path, text)
    except OSError as e:
        full = " (the disk is full)" if e.errno == errno.ENOSPC else ""
        raise OutputUnwritable(f"cannot write {path}: {e.strerror or e}{full}; the run's trace is in the "
                               f"store (`invar runs`)") from None


# -- results ----------------------------------------------------------------------------
def run_summary(res: Any) -> str:
    """What `invar trace` prints about a recorded run."""
    budget = "" if res.status != "budget" else " (step budget reached)"
    lines = [f"run {res.run_id}  {Path(res.script).name}  {res.status}",
             f"  steps         {res.steps} optimizer steps{budget}",
             f"  phases        {', '.join(res.phases) or 'none'}",
             f"  variables     {res.variables} ({res.observations} observations)",
             f"  graph         {res.graph}",
             f"  faults        {'; '.join(res.faults) if res.faults else 'none'}",
             f"  duration      {res.seconds:.2f} s"]
    return "\n".join(lines)


def print_crash(res: Any) -> None:
    """The pipeline's own error and traceback, and where its partial trace is."""
    err(f"invar: the pipeline crashed: {res.error}")
    if res.traceback:
        err(res.traceback.rstrip())
    err(f"invar: the partial trace is kept as run {res.run_id}")


def write_invariants(outcome: Any, output: str, store_dir: str, explain: bool) -> None:
    """infer's ending (also on several ranks): refuse an empty reference, write the file,
    keep a copy in the store, summarise."""
    from invariants import invfile
    from invariants.app import workflow
    for w in outcome.warnings:
        warn(w)
    empty = workflow.nothing_learned(outcome)
    if empty:
        raise UsageError(f"nothing to learn, {output} not written: {empty}")
    if not outcome.invariants.invariants:
        warn("no candidate survived mining: the file holds no invariant (--explain says why each "
             "was discarded)")
    write_output(output, invfile.dumps(outcome.invariants, invfile.format_of(output)))
    # A random suffix, as run ids have: two infers in one second must not replace each other.
    set_id = "set-" + time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
    with Store(store_dir) as store:
        store.save_invariant_set(set_id, output, invfile.dumps(outcome.invariants, "json"))
    click.echo(_infer_summary(outcome, output))
    click.echo(f"also stored as invariant set {set_id} in {store_dir}")
    if explain:
        click.echo("\nDiscarded candidates")
        for iid, reason in outcome.mined.discarded:
            click.echo(f"  {iid}: {reason}")


def _infer_summary(outcome: Any, output: str) -> str:
    from collections import Counter
    from invariants.variables import family_of
    invs = outcome.invariants.invariants
    by_family = Counter(family_of(i.target[0], i.when.phase) for i in invs)
    by_sev = Counter(i.severity for i in invs)
    lines = [f"wrote {len(invs)} invariants to {output} "
             f"({by_sev.get('error', 0)} error, {by_sev.get('warning', 0)} warning; "
             f"{outcome.mined.suppressed} implied ones suppressed, "
             f"{len(outcome.mined.discarded)} candidates discarded; mined in {outcome.mined.seconds:.2f} s)"]
    for fam, n in sorted(by_family.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {fam:<22} {n}")
    lines.append(f"review it (`invar export {output} -o review.md`), then: "
                 f"invar check SCRIPT --against {output}")
    return "\n".join(lines)


def write_report(text: str, output: Optional[str]) -> None:
    """A rendered report to OUTPUT (saying so on stderr), else stdout."""
    if output:
        write_output(output, text + "\n")
        err(f"report written to {output}")
    else:
        click.echo(text)


def allow_unchecked_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--allow-unchecked", is_flag=True,
                        help="Accept a check that could not observe some error-level invariants "
                             "(exit 0 instead of 7 when nothing else failed).")(f)


def check_exit(result: Any, to_stderr: bool, crashed: str = "crashed") -> None:
    """Exits as a check's result says; a failure the report states only in its body is
    repeated on stderr when the report is not text on the terminal."""
    if result.crash:
        err(f"invar: the pipeline {crashed}: {result.crash}")
        sys.exit(Exit.PIPELINE_CRASHED)
    if result.run_status == INTERRUPTED:
        err(f"invar: the run was interrupted after {result.steps} step(s); the report holds what it did until then")
        sys.exit(Exit.INTERRUPTED)
    if to_stderr:
        for line in (result.failure, result.coverage_warning and "warning: " + result.coverage_warning):
            if line:
                err(f"invar: {line}")
    if result.failed:
        sys.exit(Exit.VIOLATIONS)
    if result.incomplete:
        err(f"invar: incomplete: {len(result.unobserved)} group(s) of error-level invariants were never "
            f"observed ({'; '.join(u.family + '@' + u.phase for u in result.unobserved)}); "
            f"--allow-unchecked accepts that")
        sys.exit(Exit.INCOMPLETE)
