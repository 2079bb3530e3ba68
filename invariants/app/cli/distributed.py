"""The distributed side of `invar trace|infer|check` (docs/distributed.md).

`--nproc-per-node N` makes the command a launcher: it runs the same command once per rank
under torch.distributed.run, then merges the ranks' runs from the store and renders one
result. Started by torchrun (RANK/WORLD_SIZE set), the command is one rank: it traces
itself; when the user started torchrun, rank 0 then waits for the others and merges.
Parse, call the library (invariants.app.ranks), render.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, List, Optional, Tuple

import click

from invariants.app.cli.common import (Exit, allow_unchecked_option, check_exit, check_output, err, exit_help,
                                       learned_block_depth, print_crash, run_summary, store_option, trace_config,
                                       write_invariants, write_report)
from invariants.app.scripts import check_script
from invariants.app.store import DB_NAME, Store
from invariants.app.workflow import CHECK_SAMPLING, RECORD_SAMPLING, SEED_STRIDE, reference_steps
from invariants.errors import UsageError


def distributed(nproc_per_node: Optional[int], invariants: Any = None) -> bool:
    """Whether the command runs the distributed way: launched as a rank, or asked to launch."""
    from tracer.rank_env import RankInfo
    in_rank = RankInfo.from_env() is not None
    if nproc_per_node is not None and nproc_per_node < 1:
        raise UsageError(f"--nproc-per-node must be >= 1, got {nproc_per_node}")
    if in_rank and nproc_per_node is not None and nproc_per_node > 1:
        raise UsageError("--nproc-per-node launches torchrun, but this process already is a rank of one "
                         "(RANK is set): drop the option")
    if nproc_per_node is None and invariants is not None:
        nproc_per_node = int(invariants.meta.get("nproc_per_node") or 1)
    return in_rank or (nproc_per_node or 1) > 1


def rank_argv(ctx: click.Context) -> List[str]:
    """The command line each rank runs: the same options without --nproc-per-node."""
    out: List[str] = []
    script, script_args = None, []
    for p in ctx.command.params:
        value = ctx.params.get(p.name)
        if isinstance(p, click.Argument):
            if p.name == "script_args":
                script_args = list(value or ())
            else:
                script = value
            continue
        if p.name == "nproc_per_node" or value is None or p.name == "help":
            continue
        if getattr(p, "is_flag", False):
            out += [p.opts[0]] if value else []
        elif getattr(p, "multiple", False):
            for item in value:
                out += [p.opts[0], str(item)]
        else:
            out += [p.opts[0], str(value)]
    return out + ([str(script)] if script else []) + ["--"] + script_args


def _nproc(ctx: click.Context, invariants: Any = None) -> int:
    n = ctx.params.get("nproc_per_node")
    if n is None and invariants is not None:
        n = int(invariants.meta.get("nproc_per_node") or 1)
        err(f"invar: the invariants were learned on {n} ranks; launching {n} "
             f"(--nproc-per-node 1 runs one process)")
    return int(n or 1)


def _launch(ctx: click.Context, verb: str, nproc: int, stdout: Any = None) -> tuple:
    from invariants.app import ranks
    check_script(ctx.params["script"])  # missing script / syntax error: exit 2 / 4 before launching
    group = ranks.new_group()
    code = ranks.launch(verb, rank_argv(ctx), nproc, group, stdout=stdout)
    with Store(ctx.params["store_dir"]) as store:
        runs = ranks.group_runs(store, group)
    if not runs:
        err(f"invar: torchrun exited with status {code} before any rank recorded a run")
        sys.exit(Exit.PIPELINE_CRASHED)
    return group, runs


# -- trace --------------------------------------------------------------------------------------
def trace(ctx: click.Context) -> None:
    from invariants.app import ranks
    from tracer.rank_env import RankInfo
    p = ctx.params
    info = RankInfo.from_env()
    if info is None:
        nproc = _nproc(ctx)
        _, runs = _launch(ctx, "trace", nproc)
        for r in runs:
            click.echo(f"rank {r.rank}: run {r.run.id}  {r.run.status}, {r.run.steps} steps"
                       + (f"  ({r.run.error})" if r.run.error else ""))
        fail = ranks.failure(runs, nproc)
        if fail:
            err(f"invar: the pipeline failed: {fail}")
            sys.exit(Exit.PIPELINE_CRASHED)
        return
    cfg = trace_config(p["steps"], p["dense_steps"], p["sample_every"], p["block_depth"], RECORD_SAMPLING)
    res = ranks.trace_rank(p["store_dir"], p["script"], p["script_args"], cfg, info, label=p["label"] or "trace")
    if not ranks.launched_by_invar():
        click.echo(f"[rank {info.rank}/{info.world_size}] " + run_summary(res))
    _gather(info, p["store_dir"], [res.run_id] if res.run_id else [], failed=res.crashed or res.status == "terminated")
    if res.crashed:
        print_crash(res)
        sys.exit(Exit.PIPELINE_CRASHED)


# -- infer --------------------------------------------------------------------------------------
def infer(ctx: click.Context) -> None:
    from invariants.app import ranks
    from tracer.rank_env import RankInfo
    p = ctx.params
    if p.get("from_runs"):
        raise UsageError("--from mines stored runs: drop --nproc-per-node")
    if not p.get("script"):
        raise UsageError("give a SCRIPT to trace")
    n_runs = p["n_runs"]
    if n_runs < 1:
        raise UsageError(f"--runs must be >= 1, got {n_runs}")
    info = RankInfo.from_env()
    if info is None:
        nproc = _nproc(ctx)
        err(f"invar: {n_runs} reference run(s) of {p['script']} on {nproc} ranks (torchrun) ...")
        group, runs = _launch(ctx, "infer", nproc)
        _mine_and_write(ctx, runs, nproc)
        return
    cfg = trace_config(p["steps"], p["dense_steps"], p["sample_every"], p["block_depth"], RECORD_SAMPLING)
    recorded: List[str] = []
    failed = False
    for i in range(n_runs):
        if info.rank == 0:
            err(f"reference run {i + 1}/{n_runs}: tracing {p['steps'] or 'all'} steps on "
                 f"{info.world_size} ranks ...")
        res = ranks.trace_rank(p["store_dir"], p["script"], p["script_args"], cfg, info,
                               label=f"infer {i + 1}/{n_runs}", seed_offset=i * SEED_STRIDE, reference=i)
        recorded += [res.run_id] if res.run_id else []
        if res.crashed or res.status == "terminated":
            if res.crashed:
                print_crash(res)
            failed = True
            break
    gathered = _gather(info, p["store_dir"], recorded, failed=failed)
    if failed:
        sys.exit(Exit.PIPELINE_CRASHED)
    if ranks.launched_by_invar():
        return
    if info.rank != 0:
        err(f"invar: rank {info.rank} done; rank 0 mines the invariants")
        return
    if gathered is not None:  # the gather was the wait: every rank's runs are here, or named
        with Store(p["store_dir"]) as store:
            runs = ranks.group_runs(store, info.group)
    else:
        runs = ranks.wait_for_group(p["store_dir"], info.group, info.world_size, n_runs)
    _mine_and_write(ctx, runs, info.world_size, gathered.unreached if gathered else None)


def _mine_and_write(ctx: click.Context, runs: List[Any], nproc: int, unreached: Any = None) -> None:
    from invariants.app import ranks, workflow
    p = ctx.params
    fail = ranks.failure(runs, nproc, p["n_runs"], unreached)
    if fail:
        err(f"invar: a reference run failed: {fail}")
        err("invar: the partial traces are kept in the store (`invar runs`)")
        sys.exit(Exit.PIPELINE_CRASHED)
    # Each rank's run of a reference run is one run to the miner.
    fix = f"use --runs {-(-workflow.PER_RUN_SUPPORT // nproc)} or more"
    outcome = workflow.infer_from_store(ranks.reference_run_ids(runs), p["store_dir"], support_fix=fix)
    outcome.invariants = ranks.mine_meta(outcome.invariants, nproc)
    write_invariants(outcome, p["output"], p["store_dir"], bool(p.get("explain")))


# -- check --------------------------------------------------------------------------------------
def check(ctx: click.Context, invariants: Any) -> None:
    from invariants.app import ranks
    from tracer.rank_env import RankInfo
    p = ctx.params
    if p["fail_fast"]:
        raise UsageError("--fail-fast is not supported on several ranks (all ranks must stop at the same "
                         "step); drop it")
    budget = p["steps"] if p["steps"] is not None else reference_steps(invariants)
    block_depth = learned_block_depth(invariants, p["against"], p["block_depth"])  # before any launch
    info = RankInfo.from_env()
    if info is None:
        nproc = _nproc(ctx, invariants)
        # A machine-readable report owns stdout: the ranks' own prints go to stderr.
        stdout = sys.stderr if p["fmt"] != "text" and not p["output"] else None
        group, _ = _launch(ctx, "check", nproc, stdout=stdout)
        _report(ctx, invariants, ranks.check_group(p["store_dir"], group, invariants, nproc, script=p["script"],
                                                   against=p["against"], fail_on=p["fail_on"]))
        return
    cfg = trace_config(budget, p["dense_steps"], p["sample_every"], block_depth, CHECK_SAMPLING)
    redirect = (contextlib.redirect_stdout(sys.stderr) if p["fmt"] != "text" and not p["output"]
                else contextlib.nullcontext())
    with redirect:
        res = ranks.trace_rank(p["store_dir"], p["script"], p["script_args"], cfg, info, label="check",
                               seed_offset=ranks.seed_offset())
    if res.crashed:
        print_crash(res)
    code = Exit.PIPELINE_CRASHED if res.crashed else Exit.OK
    gathered = _gather(info, p["store_dir"], [res.run_id] if res.run_id else [],
                       failed=res.crashed or res.status == "terminated")
    if ranks.launched_by_invar():
        sys.exit(code)
    if info.rank != 0:
        err(f"invar: rank {info.rank} done (run {res.run_id}); rank 0 prints the merged report")
        sys.exit(code)
    if gathered is None:
        ranks.wait_for_group(p["store_dir"], info.group, info.world_size)
    _report(ctx, invariants, ranks.check_group(p["store_dir"], info.group, invariants, info.world_size,
                                               script=p["script"], against=p["against"], fail_on=p["fail_on"],
                                               unreached=gathered.unreached if gathered else None))


def _gather(info: Any, store_dir: str, run_ids: List[str], failed: bool) -> Any:
    """A rank of a multi-node job started by the user's torchrun (or with INVAR_GATHER=1):
    sends its runs to rank 0, which writes them into its store (merge.gather_runs); the
    GatherOutcome, or None when the ranks share a store and nothing is gathered."""
    from invariants.app import merge, ranks
    from tracer.rank_gather import gather_wanted
    if ranks.launched_by_invar() or not gather_wanted():
        return None
    if info.rank == 0:
        err(f"invar: gathering the traces of {info.world_size} ranks on rank 0 ...")
    out = merge.gather_runs(store_dir, info, run_ids, failed=failed)
    if out.error:
        err(f"invar: rank {info.rank}: the gather failed ({out.error}); this rank's runs stay in {store_dir} "
            f"(`invar merge STORE...` combines the nodes' stores)")
    elif info.rank == 0:
        got = sum(out.imported.values())
        err(f"invar: gathered {got} run(s) from {info.world_size - 1 - len(out.unreached)} other rank(s) in "
            f"{out.seconds:.2f} s ({out.bytes_received} bytes; {dict(out.imported)})")
        for rank, why in sorted(out.unreached.items()):
            err(f"invar: rank {rank} sent nothing: {why}")
    else:
        err(f"invar: rank {info.rank} sent {out.bytes_sent} bytes to rank 0 ({out.observations} observations, "
            f"{out.steps} observed steps) in {out.seconds:.2f} s")
    return out


def _report(ctx: click.Context, invariants: Any, result: Any) -> None:
    from invariants import allow, builtin
    from invariants.app import outputs, workflow
    p = ctx.params
    result = workflow.coverage_from_store(result, invariants, p["store_dir"])  # what was not checked, and why
    result = builtin.annotate(result, invariants, allow.rules_from(p.get("allow") or (), p.get("allow_files") or ()))
    result.allow_unchecked = bool(p.get("allow_unchecked"))
    text, told = outputs.finish(result, invariants, p["fmt"], p["store_dir"], p.get("tensorboard"))
    for line in told:
        err(f"invar: {line}")
    write_report(text, p["output"])
    check_exit(result, to_stderr=p["fmt"] != "text" or bool(p["output"]), crashed="failed")


# -- merge --------------------------------------------------------------------------------------
MERGE_EXITS = exit_help((Exit.OK, "the stores were merged (with --against: and the launch is clean)"),
                        (Exit.VIOLATIONS, "with --against: invariants violated"),
                        (Exit.BAD_INPUT, "bad usage, a STORE that does not exist, no launch to check"),
                        (Exit.PIPELINE_CRASHED, "with --against: a rank of the launch crashed or was killed"),
                        (Exit.STORE_UNWRITABLE, None), (Exit.STORE_CORRUPT, None))


@click.command(epilog=MERGE_EXITS)
@click.argument("stores", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--against", default=None, metavar="FILE",
              help="Also check one merged launch against these invariants and print its report, as rank 0 "
                   "would have (the latest check launch, or --group).")
@click.option("--group", default=None, metavar="ID", help="The launch to check (a group id from the list).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif", "junit"]), default="text",
              show_default=True, help="Report format (with --against).")
@click.option("-o", "--output", default=None, help="Write the report here instead of stdout.")
@click.option("--fail-on", type=click.Choice(["error", "warning"]), default="error", show_default=True)
@allow_unchecked_option
@store_option
def merge(stores: Tuple[str, ...], against: Optional[str], group: Optional[str], fmt: str, output: Optional[str],
          fail_on: str, allow_unchecked: bool, store_dir: str) -> None:
    """Merge the trace stores of a multi-node job into --store, for jobs whose ranks could
    not send their traces to rank 0 (a rank killed before the end, a node lost): copy each
    node's store directory here, then `invar merge node0/.invar node1/.invar --store all`.

    Every run is copied once (a run already in --store is kept unless the copy got further),
    then each launch found is listed with its ranks and how they ended, naming the rank that
    failed first; a restarted torchrun attempt (--max-restarts) is a launch of its own.
    With --against FILE the launch is checked and reported as `invar check` would have.
    """
    from invariants.app import merge as merging, ranks, workflow
    for source in stores:
        if not (Path(source) / DB_NAME).is_file():
            raise UsageError(f"STORE {source!r} holds no store ({DB_NAME}): give the store directories "
                             f"copied from the nodes (their --store)")
    check_output(output)
    done = merging.merge_stores(list(stores), store_dir)
    for source, counts in done.sources.items():
        err(f"invar: {source}: " + (", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "no runs"))
    with Store(store_dir) as store:
        found = ranks.launches(store)
    to_stdout = against is None or fmt == "text" and not output
    echo = click.echo if to_stdout else err
    for gid, runs in found.items():
        world = max(r.run.world_size for r in runs)
        per_rank = len({r.reference for r in runs})
        fail = ranks.failure(runs, world, per_rank)
        echo(f"{gid}  {runs[0].kind}  attempt {runs[0].attempt}  {world} ranks  {len(runs)} runs  "
             + (f"FAILED: {fail}" if fail else "complete"))
    if against is None:
        return
    checks = [g for g, runs in found.items() if runs[0].kind == "check"]
    chosen = group or (checks[-1] if checks else None)
    if chosen not in found:
        raise UsageError(f"no launch {chosen!r} in {store_dir}" if chosen else
                         f"no check launch in {store_dir} to check against {against}; give --group")
    invs = workflow.load_invariants(against, store_dir)
    runs = found[chosen]
    world = max(r.run.world_size for r in runs)
    _report(click.get_current_context(), invs, ranks.check_group(store_dir, chosen, invs, world,
                                                                 script=runs[0].run.script, against=against,
                                                                 fail_on=fail_on))
