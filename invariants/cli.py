"""The `invar` command: parse, call the library, render. Exit codes live in `Exit`."""
from __future__ import annotations

import contextlib
import enum
import io
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

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


EXIT_HELP = """Exit codes: 0 clean; 1 invariants violated (at or above --fail-on); 2 bad usage,
missing script or malformed invariant file; 3 the pipeline itself crashed; 4 the script
has a syntax error; 5 the store cannot be written; 6 the store file is corrupt; 70 an
internal error in invar (please report it)."""


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


def trace_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--dense-steps", default=None, type=int,
                     help="Observe every step below this one ... [default: 50; check: 5]")(f)
    f = click.option("--sample-every", default=None, type=int,
                     help="... then every N-th step. [default: 10; check: 5]")(f)
    f = click.option("--block-depth", default=1, show_default=True,
                     help="Module levels below the root model that form a block.")(f)
    f = click.option("--nproc-per-node", "nproc_per_node", type=int, default=None,
                     help="Run SCRIPT on N local ranks under torchrun, one invar per rank "
                          "(docs/distributed.md). [check: the reference's]")(f)
    return f


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


# -- trace / runs / show ----------------------------------------------------------------
@cli.command(epilog=EXIT_HELP)
@script_arguments
@click.option("--steps", default=0, show_default=True, help="End the run after K optimizer steps (0: run to the end).")
@click.option("--label", default=None, help="A name for the run in `invar runs`.")
@store_option
@trace_options
def trace(script: str, script_args: Sequence[str], steps: int, label: Optional[str], store_dir: str,
          dense_steps: int, sample_every: int, block_depth: int, nproc_per_node: Optional[int]) -> None:
    """Run SCRIPT once under the tracer and record it in the store."""
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


@cli.command(epilog=EXIT_HELP)
@store_option
def runs(store_dir: str) -> None:
    """List the runs in the store."""
    with _open_store(store_dir) as store:
        items = store.runs()
    if not items:
        click.echo(f"no runs in {store_dir}")
        return
    click.echo(f"{'run':<24} {'status':<10} {'steps':>5}  {'started':<19}  label / script")
    for r in items:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started))
        click.echo(f"{r.id:<24} {r.status:<10} {r.steps:>5}  {started}  "
                   f"{r.label or ''} {Path(r.script).name}".rstrip())


@cli.command(epilog=EXIT_HELP)
@click.argument("run_id")
@store_option
def show(run_id: str, store_dir: str) -> None:
    """Summarise one stored run (an id or a unique prefix)."""
    with _open_store(store_dir) as store:
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


# -- infer / check ----------------------------------------------------------------------
@cli.command(epilog=EXIT_HELP)
@click.argument("script", required=False, type=click.Path(dir_okay=False))
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--runs", "n_runs", default=3, show_default=True, help="Reference runs to trace (reseeded).")
@click.option("--steps", default=30, show_default=True, help="Optimizer steps per reference run.")
@click.option("-o", "--output", default="invariants.yaml", show_default=True,
              help="Invariant file to write (.yaml or .json).")
@click.option("--from", "from_runs", multiple=True, help="Mine stored runs instead of tracing (repeatable).")
@click.option("--explain", is_flag=True, help="Also list every discarded candidate and why.")
@store_option
@trace_options
def infer(script: Optional[str], script_args: Sequence[str], n_runs: int, steps: int, output: str,
          from_runs: Sequence[str], explain: bool, store_dir: str, dense_steps: int, sample_every: int,
          block_depth: int, nproc_per_node: Optional[int]) -> None:
    """Learn invariants from reference runs of SCRIPT and write them to a file."""
    from invariants import cli_distributed as ranked
    if ranked.distributed(nproc_per_node):  # one invar per rank (docs/distributed.md)
        return ranked.infer(click.get_current_context())
    from invariants import invfile, workflow
    if not from_runs and not script:
        _fail("give a SCRIPT to trace, or --from RUN_ID to mine stored runs", Exit.BAD_INPUT)
    if n_runs < 1:
        _fail(f"--runs must be >= 1, got {n_runs}", Exit.BAD_INPUT)
    if from_runs:
        outcome = workflow.infer_from_store(from_runs, store_dir)
    else:
        cfg = _config(steps, dense_steps, sample_every, block_depth)
        try:
            outcome = workflow.infer(script, script_args, runs=n_runs, steps=steps, store_dir=store_dir,
                                     config=cfg, progress=_err)
        except workflow.PipelineCrashed as e:
            _print_crash(e.result)
            sys.exit(Exit.PIPELINE_CRASHED)
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
    set_id = "set-" + time.strftime("%Y%m%d-%H%M%S")
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


@cli.command(epilog=EXIT_HELP)
@script_arguments
@click.option("--against", required=True, help="Invariant file (or stored invariant set id).")
@click.option("--steps", default=None, type=int, help="Optimizer steps to trace [default: the reference's].")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif", "junit"]), default="text",
              show_default=True)
@click.option("-o", "--output", default=None, help="Write the report here instead of stdout.")
@click.option("--fail-fast", is_flag=True, help="Stop the run at the first violation at or above --fail-on.")
@click.option("--fail-on", type=click.Choice(["error", "warning"]), default="error", show_default=True)
@store_option
@trace_options
def check(script: str, script_args: Sequence[str], against: str, steps: Optional[int], fmt: str,
          output: Optional[str], fail_fast: bool, fail_on: str, store_dir: str, dense_steps: int,
          sample_every: int, block_depth: int, nproc_per_node: Optional[int]) -> None:
    """Check SCRIPT against learned invariants while it runs."""
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
    if result.crash:
        _err(f"invar: the pipeline crashed: {result.crash}")
        sys.exit(Exit.PIPELINE_CRASHED)
    if (result.errors if fail_on == "error" else result.errors + result.warnings):
        sys.exit(Exit.VIOLATIONS)


# -- export / diff ----------------------------------------------------------------------
@cli.command(epilog=EXIT_HELP)
@click.argument("source")
@click.option("-o", "--output", default=None, help="Output file [default: stdout].")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json", "md"]), default=None,
              help="Output format [default: from the output's extension, else yaml].")
@store_option
def export(source: str, output: Optional[str], fmt: Optional[str], store_dir: str) -> None:
    """Render an invariant file or stored invariant set for review (yaml, json, md)."""
    from invariants import invfile, review, workflow
    invs = workflow.load_invariants(source, store_dir)
    if fmt is None:
        ext = Path(output).suffix.lower() if output else ""
        fmt = {".json": "json", ".md": "md"}.get(ext, "yaml")
    text = review.render_markdown(invs) if fmt == "md" else invfile.dumps(invs, fmt)
    if output:
        if fmt == "md":
            Path(output).write_text(text, encoding="utf-8")
        else:
            invfile.dump(invs, output, fmt)
        _err(f"wrote {len(invs.invariants)} invariants to {output} ({fmt})")
    else:
        click.echo(text, nl=False)


@cli.command(epilog=EXIT_HELP)
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


# -- eval / bench / demo ----------------------------------------------------------------
@cli.command("eval", epilog=EXIT_HELP)
@click.argument("corpus_dir", default="corpus", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
@click.option("-o", "--output", default=None, help="Write the table here instead of stdout.")
@click.option("--jobs", default=1, show_default=True, help="Cases evaluated in parallel (one process each).")
@click.option("--runs", "n_runs", default=3, show_default=True, help="Reference runs per case.")
@click.option("--steps", default=30, show_default=True, help="Optimizer steps per run.")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="torch intra-op threads per case worker (and per rank of a launched case) "
                   "[default: 1 when --jobs > 1, else torch's default]. On a small shared machine "
                   "torch's default of one thread per core in every worker oversubscribes the cores.")
def eval_(corpus_dir: str, fmt: str, output: Optional[str], jobs: int, n_runs: int, steps: int,
          threads: Optional[int]) -> None:
    """Score invar on a corpus: infer from each reference, check every variant.

    Exits 1 if a bug variant is missed or an ok variant / fresh-seed reference gets an
    error-level violation."""
    from invariants import evaluate
    try:
        report = evaluate.evaluate(corpus_dir, jobs=jobs, runs=n_runs, steps=steps, progress=_err,
                                   threads=threads)
    except FileNotFoundError as e:
        _fail(str(e), Exit.BAD_INPUT)
    text = evaluate.render_markdown(report) if fmt == "md" else json.dumps(report.to_json(), indent=2)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        _err(f"wrote {output}")
    else:
        click.echo(text)
    t = report.totals()
    if t["recall"] < 1.0 or t["false_alarms"] or t["loo_false_alarms"]:
        sys.exit(Exit.VIOLATIONS)


@cli.command(epilog=EXIT_HELP)
@click.argument("scripts", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--steps", default=40, show_default=True, help="Optimizer steps per timed run.")
@click.option("--repeats", default=3, show_default=True, help="Interleaved repeats per mode.")
@click.option("--mining-runs", default=5, show_default=True)
@click.option("--mining-steps", default=200, show_default=True)
def bench(scripts: Sequence[str], steps: int, repeats: int, mining_runs: int, mining_steps: int) -> None:
    """Print tracer overhead (infer and check mode vs untraced) and mining time, as ratios.

    SCRIPTS default to every corpus reference. Each script runs untraced, traced as infer
    records it, and traced as check evaluates it, interleaved; medians per step compared."""
    from invariants import bench as b
    targets = list(scripts) or _single_process_references()
    if not targets:
        _fail("no scripts given and no corpus/*/reference.py found", Exit.BAD_INPUT)
    from invariants import shapes as shapes_mod
    click.echo(f"{'pipeline':<40} {'plain ms/step':>13} {'infer':>8} {'check':>8} {'static s':>9}")
    for script in targets:
        t = b.step_overhead(script, steps=steps, repeats=repeats, progress=_err)
        with contextlib.redirect_stdout(io.StringIO()):
            static = shapes_mod.run(script, [])
        seconds = f"{static.report.seconds:.2f}" if static.report else "-"
        click.echo(f"{_short(script):<40} {1000 * t.medians['plain']:>13.2f} "
                   f"{t.ratio('infer'):>7.2f}x {t.ratio('check'):>7.2f}x {seconds:>9}")
    m = b.mining_time(mining_runs, mining_steps)
    click.echo(f"mining {mining_runs} runs x {mining_steps} steps ({int(m['observations'])} observations): "
               f"{m['seconds']:.2f} s, {int(m['invariants'])} invariants")


def _single_process_references() -> List[str]:
    """corpus/*/reference.py, except cases launched on several ranks (docs/distributed.md)."""
    import yaml
    out = []
    for case in sorted(Path("corpus").glob("*/case.yaml")):
        meta = yaml.safe_load(case.read_text()) or {}
        if not meta.get("launch") and (case.parent / "reference.py").is_file():
            out.append(str(case.parent / "reference.py"))
    return out


def _short(path: str) -> str:
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


@cli.command(epilog=EXIT_HELP)
@click.option("--store", "store_dir", default=None, help="Store directory [default: a temporary one].")
def demo(store_dir: Optional[str]) -> None:
    """Infer invariants from a corpus reference, then check one of its bug variants."""
    from corpus import harness
    code = harness.demo(store_dir, echo=click.echo, progress=_err)
    sys.exit(code)


# -- shapes -----------------------------------------------------------------------------
@cli.command(epilog=EXIT_HELP)
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
class _open_store:
    """Opens the store, turning StoreError into a one-line user error with its exit code."""

    def __init__(self, directory: str):
        self.directory = directory

    def __enter__(self) -> Any:
        from tracer.store import Store, StoreError
        try:
            self.store = Store(self.directory)
        except StoreError as e:
            _fail(str(e), _store_exit(e))
        return self.store

    def __exit__(self, *exc: Any) -> None:
        self.store.close()


def _store_exit(e: Any) -> Exit:
    return {"corrupt": Exit.STORE_CORRUPT, "schema": Exit.STORE_CORRUPT,
            "missing": Exit.BAD_INPUT}.get(e.kind, Exit.STORE_UNWRITABLE)


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: maps library errors to one-line messages and exit codes."""
    from invariants.invfile import InvariantFileError
    from tracer.runner import ScriptError
    from tracer.store import StoreError
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
    except ScriptError as e:
        _err(f"invar: {e}")
        sys.exit(Exit.SCRIPT_SYNTAX if e.kind == "syntax" else Exit.BAD_INPUT)
    except InvariantFileError as e:
        _err(f"invar: {e}")
        sys.exit(Exit.BAD_INPUT)
    except StoreError as e:
        _err(f"invar: {e}")
        sys.exit(_store_exit(e))
    except SystemExit:
        raise
    except KeyboardInterrupt:
        _err("invar: interrupted")
        sys.exit(130)
    except Exception:
        _err("invar: internal error — please report it with the traceback below:")
        _err(traceback.format_exc().rstrip())
        sys.exit(Exit.INTERNAL)


if __name__ == "__main__":
    main()
