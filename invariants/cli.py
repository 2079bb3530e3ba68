"""The `invar` command: parse, call the library, render. Exit codes live in `Exit`.

Nothing heavy is imported at module level: torch, the tracer and the solver come in with
the commands that run a script, so `--version`, `--help`, `runs`, `show`, `sets`,
`export` and `diff` start in a fraction of a second.
"""
from __future__ import annotations

import contextlib
import enum
import json
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import click

from invariants import __version__


class Exit(enum.IntEnum):
    """Exit codes of every invar command (documented in `invar --help`)."""

    OK = 0                # clean
    VIOLATIONS = 1        # invariants violated at or above --fail-on
    BAD_INPUT = 2         # bad usage, missing script, malformed invariant file
    PIPELINE_CRASHED = 3  # the user's script raised or exited non-zero
    SCRIPT_SYNTAX = 4     # the script is not valid Python
    STORE_UNWRITABLE = 5  # the store directory cannot be created or written
    STORE_CORRUPT = 6     # the store file is not a usable database
    INTERNAL = 70         # a bug in invar: please report it


EXIT_TEXT: Dict[Exit, str] = {
    Exit.OK: "clean",
    Exit.VIOLATIONS: "invariants violated (at or above --fail-on)",
    Exit.BAD_INPUT: "bad usage, missing script or malformed invariant file",
    Exit.PIPELINE_CRASHED: "the pipeline itself crashed",
    Exit.SCRIPT_SYNTAX: "the script has a syntax error",
    Exit.STORE_UNWRITABLE: "the store cannot be written",
    Exit.STORE_CORRUPT: "the store file is corrupt",
    Exit.INTERNAL: "an internal error in invar (please report it)",
}


def exit_help(*codes: Tuple[Exit, Optional[str]]) -> str:
    """The `Exit codes: ...` epilog of a command: the codes it can return, each with its
    own wording (None: the general one), and always the internal error last."""
    items = list(codes) + [(Exit.INTERNAL, None)]
    return "Exit codes: " + "; ".join(f"{int(c)} {text or EXIT_TEXT[c]}" for c, text in items) + "."


EXIT_HELP = exit_help(*((c, None) for c in Exit if c is not Exit.INTERNAL))  # every command
_STORE_READ = ((Exit.BAD_INPUT, "bad usage, no store at --store, or no such (or an ambiguous) id"),
               (Exit.STORE_CORRUPT, None))
_RUNS_SCRIPT = ((Exit.PIPELINE_CRASHED, None), (Exit.SCRIPT_SYNTAX, None), (Exit.STORE_UNWRITABLE, None),
                (Exit.STORE_CORRUPT, None))
TRACE_EXITS = exit_help((Exit.OK, "the run was recorded"), (Exit.BAD_INPUT, "bad usage or missing script"),
                        *_RUNS_SCRIPT)
INFER_EXITS = exit_help((Exit.OK, "the invariant file was written"),
                        (Exit.BAD_INPUT, "bad usage, missing script or run, or nothing to learn "
                                         "(the reference ran no optimizer step)"), *_RUNS_SCRIPT)
CHECK_EXITS = exit_help((Exit.OK, None), (Exit.VIOLATIONS, "invariants violated (at or above --fail-on), "
                                                          "or nothing could be checked"),
                        (Exit.BAD_INPUT, None), *_RUNS_SCRIPT)
READ_EXITS = exit_help((Exit.OK, "success"), *_STORE_READ)
EXPORT_EXITS = exit_help((Exit.OK, "rendered"), (Exit.BAD_INPUT, "bad usage, no such file or invariant set, "
                                                                "malformed invariant file, or OUTPUT not writable"),
                         (Exit.STORE_CORRUPT, None))
DIFF_EXITS = exit_help((Exit.OK, "no differences"), (Exit.VIOLATIONS, "A and B differ"),
                       (Exit.BAD_INPUT, "no such file or invariant set, or a malformed one"),
                       (Exit.STORE_CORRUPT, None))


class UserError(Exception):
    """A problem the user can fix; printed as one line, no traceback."""

    def __init__(self, message: str, code: Exit):
        super().__init__(message)
        self.code = code


def _fail(message: str, code: Exit) -> None:
    raise UserError(message, code)


def _err(message: str) -> None:
    click.echo(message, err=True)


# -- shared options ---------------------------------------------------------------------
def store_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--store", "store_dir", default=".invar", show_default=True,
                        envvar="INVAR_STORE", help="Directory of the trace store (SQLite).")(f)


def script_arguments(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.argument("script_args", nargs=-1, type=click.UNPROCESSED)(f)
    return click.argument("script", type=click.Path(dir_okay=False))(f)


# Recording (trace, infer) observes densely; checking needs every step only at the start
# (structural bugs by step 1) and samples afterwards, which keeps its overhead low.
RECORD_SAMPLING = (50, 10)
CHECK_SAMPLING = (5, 5)


def trace_options(sampling: Tuple[int, int], ranks_default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The tracing options of trace, infer and check, with this command's defaults."""
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        # Applied bottom-up: --help lists them in the reverse of this order.
        f = click.option("--nproc-per-node", "nproc_per_node", type=int, default=None, metavar="N",
                         help="Run SCRIPT on N local ranks under torchrun, one invar per rank "
                              f"(docs/distributed.md).  [default: {ranks_default}]")(f)
        f = click.option("--block-depth", default=1, show_default=True, metavar="N",
                         help="Module levels below the root model that form a block.")(f)
        f = click.option("--sample-every", default=sampling[1], show_default=True, type=int, metavar="N",
                         help="After the dense steps, observe every N-th optimizer step.")(f)
        return click.option("--dense-steps", default=sampling[0], show_default=True, type=int, metavar="N",
                            help="Observe every optimizer step before step N.")(f)
    return decorate


def _config(steps: int, dense_steps: Optional[int], sample_every: Optional[int], block_depth: int,
            sampling: tuple = RECORD_SAMPLING) -> Any:
    from tracer.session import TraceConfig
    for name, value in (("--steps", steps), ("--dense-steps", dense_steps), ("--sample-every", sample_every)):
        if value is not None and value < 0:
            _fail(f"{name} must be >= 0, got {value}", Exit.BAD_INPUT)
    if block_depth < 1:
        _fail(f"--block-depth must be >= 1, got {block_depth}", Exit.BAD_INPUT)
    return TraceConfig(steps=steps, dense_steps=sampling[0] if dense_steps is None else dense_steps,
                       sample_every=sampling[1] if sample_every is None else sample_every,
                       block_depth=block_depth)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_HELP)
@click.version_option(__version__, prog_name="invar")
def cli() -> None:
    """invar: catch silent bugs in PyTorch training pipelines.

    Learn invariants from a few known-good reference runs (`infer`), review them as a
    file (`export`, `diff`), and check new or changed pipelines against them (`check`).
    Scripts run unmodified: arguments after `--` go to the script.
    """


# -- trace / runs / show / sets ---------------------------------------------------------
@cli.command(epilog=TRACE_EXITS)
@script_arguments
@click.option("--steps", default=0, show_default=True, help="End the run after K optimizer steps (0: run to the end).")
@click.option("--label", default=None, help="A name for the run in `invar runs`.")
@store_option
@trace_options(RECORD_SAMPLING, "1 (no torchrun)")
def trace(script: str, script_args: Sequence[str], steps: int, label: Optional[str], store_dir: str,
          dense_steps: int, sample_every: int, block_depth: int, nproc_per_node: Optional[int]) -> None:
    """Run SCRIPT once under the tracer and record it in the store."""
    _check_script(script)
    from invariants import cli_distributed as ranked
    if ranked.distributed(nproc_per_node):  # one invar per rank (docs/distributed.md)
        return ranked.trace(click.get_current_context())
    from tracer.runner import trace_to_store
    cfg = _config(steps, dense_steps, sample_every, block_depth)
    with _open_store(store_dir) as store:
        res = trace_to_store(store, script, script_args, cfg, label=label)
    click.echo(_run_summary(res))
    if res.crashed:
        _print_crash(res)
        sys.exit(Exit.PIPELINE_CRASHED)


def _run_summary(res: Any) -> str:
    budget = "" if res.status != "budget" else " (step budget reached)"
    lines = [f"run {res.run_id}  {Path(res.script).name}  {res.status}",
             f"  steps         {res.steps} optimizer steps{budget}",
             f"  phases        {', '.join(res.phases) or 'none'}",
             f"  variables     {res.variables} ({res.observations} observations)",
             f"  graph         {res.graph}",
             f"  faults        {'; '.join(res.faults) if res.faults else 'none'}",
             f"  duration      {res.seconds:.2f} s"]
    return "\n".join(lines)


def _print_crash(res: Any) -> None:
    _err(f"invar: the pipeline crashed: {res.error}")
    if res.traceback:
        _err(res.traceback.rstrip())
    _err(f"invar: the partial trace is kept as run {res.run_id}")


# -- infer / check ----------------------------------------------------------------------
@cli.command(epilog=INFER_EXITS)
@click.argument("script", required=False, type=click.Path(dir_okay=False))
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--runs", "n_runs", default=3, show_default=True, help="Reference runs to trace (reseeded).")
@click.option("--steps", default=30, show_default=True, help="Optimizer steps per reference run.")
@click.option("-o", "--output", default="invariants.yaml", show_default=True,
              help="Invariant file to write (.yaml or .json).")
@click.option("--from", "from_runs", multiple=True, help="Mine stored runs instead of tracing (repeatable).")
@click.option("--explain", is_flag=True, help="Also list every discarded candidate and why.")
@store_option
@trace_options(RECORD_SAMPLING, "1 (no torchrun)")
def infer(script: Optional[str], script_args: Sequence[str], n_runs: int, steps: int, output: str,
          from_runs: Sequence[str], explain: bool, store_dir: str, dense_steps: int, sample_every: int,
          block_depth: int, nproc_per_node: Optional[int]) -> None:
    """Learn invariants from reference runs of SCRIPT and write them to a file."""
    if not from_runs and not script:
        _fail("give a SCRIPT to trace, or --from RUN_ID to mine stored runs", Exit.BAD_INPUT)
    if n_runs < 1:
        _fail(f"--runs must be >= 1, got {n_runs}", Exit.BAD_INPUT)
    if script and not from_runs:
        _check_script(script)  # before any progress line
    from invariants import cli_distributed as ranked
    if ranked.distributed(nproc_per_node):  # one invar per rank (docs/distributed.md)
        return ranked.infer(click.get_current_context())
    from invariants import workflow
    if from_runs:
        outcome = workflow.infer_from_store(from_runs, store_dir)
    else:
        cfg = _config(steps, dense_steps, sample_every, block_depth)
        _warn(workflow.support_warning(n_runs))
        try:
            outcome = workflow.infer(script, script_args, runs=n_runs, steps=steps, store_dir=store_dir,
                                     config=cfg, progress=_err)
        except workflow.PipelineCrashed as e:
            _print_crash(e.result)
            sys.exit(Exit.PIPELINE_CRASHED)
    _write_invariants(outcome, output, store_dir, explain)


def _write_invariants(outcome: Any, output: str, store_dir: str, explain: bool) -> None:
    """infer's ending (also on several ranks): refuse an empty reference, write the file,
    keep a copy in the store, summarise."""
    from invariants import invfile, workflow
    for w in outcome.warnings:
        _warn(w)
    empty = workflow.nothing_learned(outcome)
    if empty:
        _fail(f"nothing to learn, {output} not written: {empty}", Exit.BAD_INPUT)
    if not outcome.invariants.invariants:
        _warn("no candidate survived mining: the file holds no invariant (--explain says why each "
              "was discarded)")
    invfile.dump(outcome.invariants, output)
    set_id = _save_set(outcome.invariants, store_dir, output)
    click.echo(_infer_summary(outcome, output))
    click.echo(f"also stored as invariant set {set_id} in {store_dir}")
    if explain:
        click.echo("\nDiscarded candidates")
        for iid, reason in outcome.mined.discarded:
            click.echo(f"  {iid}: {reason}")


def _save_set(invs: Any, store_dir: str, label: str) -> str:
    """Keeps a copy of the set in the store; returns its id (usable as --against/export SOURCE)."""
    from invariants import invfile
    # A random suffix, as run ids have: two infers in one second must not replace each other.
    set_id = "set-" + time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
    with _open_store(store_dir) as store:
        store.save_invariant_set(set_id, label, invfile.dumps(invs, "json"))
    return set_id


def _infer_summary(outcome: Any, output: str) -> str:
    from collections import Counter
    from invariants.mine import family
    invs = outcome.invariants.invariants
    by_family = Counter(family(i) for i in invs)
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


@cli.command(epilog=CHECK_EXITS)
@script_arguments
@click.option("--against", required=True, help="Invariant file (or stored invariant set id or unique prefix).")
@click.option("--steps", default=None, type=int, help="Optimizer steps to trace [default: the reference's].")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif", "junit"]), default="text",
              show_default=True)
@click.option("-o", "--output", default=None, help="Write the report here instead of stdout.")
@click.option("--fail-fast", is_flag=True, help="Stop the run at the first violation at or above --fail-on.")
@click.option("--fail-on", type=click.Choice(["error", "warning"]), default="error", show_default=True)
@store_option
@trace_options(CHECK_SAMPLING, "as many as the reference ran on")
def check(script: str, script_args: Sequence[str], against: str, steps: Optional[int], fmt: str,
          output: Optional[str], fail_fast: bool, fail_on: str, store_dir: str, dense_steps: int,
          sample_every: int, block_depth: int, nproc_per_node: Optional[int]) -> None:
    """Check SCRIPT against learned invariants while it runs."""
    _check_script(script)
    from invariants import report as rep
    from invariants import workflow
    invs = workflow.load_invariants(against, store_dir)
    from invariants import cli_distributed as ranked
    if ranked.distributed(nproc_per_node, invs):  # one invar per rank (docs/distributed.md)
        return ranked.check(click.get_current_context(), invs)
    budget = steps if steps is not None else int(invs.meta.get("steps") or 30)
    cfg = _config(budget, dense_steps, sample_every, block_depth, CHECK_SAMPLING)
    # A machine-readable report owns stdout: the script's own prints go to stderr.
    redirect = contextlib.redirect_stdout(sys.stderr) if fmt != "text" and not output else contextlib.nullcontext()
    with redirect:
        result = workflow.check(script, script_args, invs, against=against, steps=budget, fail_fast=fail_fast,
                                fail_on=fail_on, store_dir=store_dir, config=cfg)
    text = rep.RENDERERS[fmt](result)
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
        _err(f"report written to {output}")
    else:
        click.echo(text)
    check_exit(result, to_stderr=fmt != "text" or bool(output))


def check_exit(result: Any, to_stderr: bool, crashed: str = "crashed") -> None:
    """Exits as a check's result says; a failure the report states only in its body is
    repeated on stderr when the report is not text on the terminal."""
    if result.crash:
        _err(f"invar: the pipeline {crashed}: {result.crash}")
        sys.exit(Exit.PIPELINE_CRASHED)
    if to_stderr:
        for line in (result.failure, result.coverage_warning and "warning: " + result.coverage_warning):
            if line:
                _err(f"invar: {line}")
    if result.failed:
        sys.exit(Exit.VIOLATIONS)


# -- export / diff ----------------------------------------------------------------------
@cli.command(epilog=EXPORT_EXITS)
@click.argument("source")
@click.option("-o", "--output", default=None, help="Output file [default: stdout].")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json", "md"]), default=None,
              help="Output format [default: from the output's extension, else yaml].")
@store_option
def export(source: str, output: Optional[str], fmt: Optional[str], store_dir: str) -> None:
    """Render an invariant file or stored invariant set (an id or a unique prefix, see
    `invar sets`) for review (yaml, json, md)."""
    from invariants import invfile, review, workflow
    invs = workflow.load_invariants(source, store_dir)
    if fmt is None:
        ext = Path(output).suffix.lower() if output else ""
        fmt = {".json": "json", ".md": "md"}.get(ext, "yaml")
    text = review.render_markdown(invs) if fmt == "md" else invfile.dumps(invs, fmt)
    if output:
        try:
            if fmt == "md":
                Path(output).write_text(text, encoding="utf-8")
            else:
                invfile.dump(invs, output, fmt)
        except OSError as e:
            _fail(f"cannot write {output}: {e.strerror or e}", Exit.BAD_INPUT)
        _err(f"wrote {len(invs.invariants)} invariants to {output} ({fmt})")
    else:
        click.echo(text, nl=False)


@cli.command(epilog=DIFF_EXITS)
@click.argument("a")
@click.argument("b")
@store_option
def diff(a: str, b: str, store_dir: str) -> None:
    """Show invariants added, removed and changed from A to B (exit 1 if they differ)."""
    from invariants import diff as diffmod
    from invariants import workflow
    d = diffmod.diff(workflow.load_invariants(a, store_dir), workflow.load_invariants(b, store_dir))
    click.echo(diffmod.render_diff(d))
    if d:
        sys.exit(Exit.VIOLATIONS)


# -- shapes -----------------------------------------------------------------------------
@cli.command(epilog=exit_help((Exit.OK, None), (Exit.BAD_INPUT, "bad usage or --probe, missing script, "
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
    from invariants import shapes as shapes_mod
    try:
        sizes = [tuple(int(v) for v in p.lower().split("x")) for p in probes]
    except ValueError:
        _fail(f"--probe takes sizes like 3x224x224, got {', '.join(probes)}", Exit.BAD_INPUT)
    with contextlib.redirect_stdout(sys.stderr):
        outcome = shapes_mod.run(script, script_args, sizes)
    if outcome.report is None:
        _fail(f"the model was never called: {outcome.reason}", Exit.PIPELINE_CRASHED
              if outcome.crashed else Exit.BAD_INPUT)
    click.echo(json.dumps(outcome.to_json(), indent=2) if fmt == "json" else outcome.text())


# -- entry point ------------------------------------------------------------------------
def _check_script(script: str) -> None:
    """A missing script or a syntax error fails here, before any progress line or launch."""
    from tracer.runner import check_script
    check_script(script)


def _warn(message: Optional[str]) -> None:
    if message:
        _err(f"invar: warning: {message}")


class _open_store:
    """Opens the store, turning StoreError into a one-line user error with its exit code.
    `create=False` for commands that only read: a missing store is then "no store at DIR"."""

    def __init__(self, directory: str, create: bool = True):
        self.directory, self.create = directory, create

    def __enter__(self) -> Any:
        from tracer.store import Store, StoreError
        try:
            self.store = Store(self.directory, create=self.create)
        except StoreError as e:
            _fail(str(e), _store_exit(e))
        return self.store

    def __exit__(self, *exc: Any) -> None:
        self.store.close()


def _store_exit(e: Any) -> Exit:
    return {"corrupt": Exit.STORE_CORRUPT, "schema": Exit.STORE_CORRUPT,
            "missing": Exit.BAD_INPUT}.get(e.kind, Exit.STORE_UNWRITABLE)


def _script_exit(e: Any) -> Exit:
    return Exit.SCRIPT_SYNTAX if e.kind == "syntax" else Exit.BAD_INPUT


# Library errors that are the user's to fix, by (module, class): looked up in sys.modules,
# since importing tracer.runner for its ScriptError would import torch into every command.
# An exception of a module that was never imported cannot have been raised.
_LIBRARY_ERRORS: Tuple[Tuple[str, str, Callable[[Any], Exit]], ...] = (
    ("tracer.runner", "ScriptError", _script_exit),
    ("invariants.invfile", "InvariantFileError", lambda e: Exit.BAD_INPUT),
    ("tracer.store", "StoreError", _store_exit),
)


def _library_exit(e: BaseException) -> Optional[Exit]:
    """The exit code of a library error meant for the user, None for anything else."""
    for module, name, code in _LIBRARY_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(e, cls):
            return code(e)
    return None


def _register() -> None:
    # Commands kept in their own modules (each imports its helpers from here).
    from invariants import cli_corpus, cli_store
    for command in (cli_store.runs, cli_store.show, cli_store.sets, cli_corpus.eval_, cli_corpus.bench,
                    cli_corpus.demo):
        cli.add_command(command)


# Only the module imported under its own name registers: run as `python -m` (or re-imported
# as `__mp_main__` by a spawned worker) it would import itself once more, half-initialised.
if __name__ == "invariants.cli":
    _register()


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: maps library errors to one-line messages and exit codes."""
    try:
        cli.main(args=argv, prog_name="invar", standalone_mode=False)
    except click.exceptions.Abort:
        _err("invar: aborted")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(Exit.BAD_INPUT)
    except UserError as e:
        _err(f"invar: {e}")
        sys.exit(e.code)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        _err("invar: interrupted")
        sys.exit(130)
    except Exception as e:
        code = _library_exit(e)
        if code is not None:
            _err(f"invar: {e}")
            sys.exit(code)
        _err("invar: internal error — please report it with the traceback below:")
        _err(traceback.format_exc().rstrip())
        sys.exit(Exit.INTERNAL)


if __name__ == "__main__":
    # `python -m invariants.cli`: run the imported module's main, so that the commands in
    # other modules and the error classes they raise are this very module's.
    from invariants.cli import main as imported_main
    imported_main()
