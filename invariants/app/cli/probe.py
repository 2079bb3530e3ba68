"""`invar probe lr|robustness`: active probes run on the unmodified script (docs/probes.md)."""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Dict, Optional, Sequence

import click

from invariants.app.cli.common import Exit, check_output, check_timeout, err, exit_help, script_arguments, \
    store_option, write_report
from invariants.app.workflow import PipelineCrashed
from invariants.errors import UsageError

PROBE_EXITS = ((Exit.PIPELINE_CRASHED, "the script crashed before the probe had what it needs"),
               (Exit.SCRIPT_SYNTAX, None), (Exit.STORE_UNWRITABLE, None), (Exit.INTERRUPTED, None))


@click.group()
def probe() -> None:
    """Active probes on the unmodified script: an LR range test before training (`lr`), and
    robustness to input shifts and the trained model's health after it (`robustness`).

    Unlike `trace` and `check` they change what the run does (`lr` sets the learning rate)
    or evaluate its model again; they never change a file of the script's. Each run is
    traced into the store like `invar trace`'s."""


def _common(f: Any) -> Any:
    f = click.option("--timeout", type=float, default=None, metavar="S",
                     help="End the probe's run after S seconds.")(f)
    f = click.option("-o", "--output", default=None, metavar="OUT", help="Write the report to OUT (else stdout).")(f)
    f = click.option("--format", "fmt", type=click.Choice(["text", "json", "html"]), default="text",
                     show_default=True, help="html: one self-contained page with the plot (needs "
                                             "torch-invar[report]; give -o).")(f)
    return store_option(f)


def _run(store_dir: str, script: str, args: Sequence[str], spec: Dict[str, Any], steps: int,
         timeout: Optional[float]) -> "tuple[Any, Dict[str, Any]]":
    from invariants.app.probes import PROBE_RESULT
    from invariants.app.supervisor import traced_run
    err(f"invar: probing {script} ({spec['name']}); the script's own output follows on stderr")
    # Sparse observation: the probe needs the tracer's hooks, not its full record.
    settings = {"steps": steps, "dense_steps": 1, "sample_every": 0, "block_depth": 1}
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the report's
        res = traced_run(store_dir, script, args, settings, label=f"probe {spec['name']}", probe=spec,
                         timeout=timeout)
    result = dict(res.facts.get(PROBE_RESULT) or {})
    err(f"invar: run {res.run_id} {res.status} after {res.steps} optimizer steps ({res.seconds:.1f} s)")
    return res, result


def _command(ok: str, failed: str, bad: str, *more: Any) -> Any:
    """A probe subcommand whose --help lists its exit codes."""
    return probe.command(epilog=exit_help((Exit.OK, ok), (Exit.VIOLATIONS, failed), (Exit.BAD_INPUT, bad), *more,
                                          *PROBE_EXITS))


@_command("the configured lr is ok", "the configured lr is too_high or too_low",
          "bad usage, or the script cannot be probed (no torch.optim optimizer)",
          (Exit.INCOMPLETE, "the curve could not decide (too few steps, a loss that never fell)"))
@script_arguments
@click.option("--steps", default=50, show_default=True, type=int, metavar="K",
              help="Optimizer steps of the sweep (one loss each), from --min to --max.")
@click.option("--min", "lr_min", default=1e-6, show_default=True, type=float, help="The sweep's first lr.")
@click.option("--max", "lr_max", default=10.0, show_default=True, type=float, help="The sweep's last lr.")
@_common
def lr(script: str, script_args: Sequence[str], steps: int, lr_min: float, lr_max: float, store_dir: str,
       fmt: str, output: Optional[str], timeout: Optional[float]) -> None:
    """LR range test: run SCRIPT for K optimizer steps while raising the learning rate
    geometrically from --min to --max, and say whether the script's own lr is ok.

    Every parameter group of the optimizer keeps its ratio to the largest one, which stands
    for "the" lr; the script's scheduler is overridden for the probe. The run ends when the
    smoothed loss passes 4x its minimum. Reported: the lr of steepest descent of the smoothed
    loss, the lr where the loss turns worse than where the sweep began (divergence), the
    configured lr and the verdict: too_high within half a decade of divergence or above,
    too_low more than 10x below the steepest-descent region, else ok."""
    from invariants.app.probes import lr as lrmod
    from invariants.app.probes import render
    if steps < lrmod.MIN_POINTS:
        raise UsageError(f"--steps must be at least {lrmod.MIN_POINTS}, got {steps}")
    if not (0 < lr_min < lr_max) or lr_max == float("inf"):
        raise UsageError(f"--min and --max must satisfy 0 < min < max, got {lr_min:g} and {lr_max:g}")
    _check_format(fmt, output)
    spec = {"name": "lr", "steps": steps, "lr_min": lr_min, "lr_max": lr_max}
    res, result = _run(store_dir, script, script_args, spec, steps + 1, check_timeout(timeout))
    _refuse(res, result)
    rep = lrmod.analyse(result.get("curve") or [], result.get("lr_configured"), result.get("stopped_at"))
    note = render.sweep_note(int(result.get("steps") or 0), steps, result.get("stopped_at"),
                             rep.curve[-1][0] if rep.curve else None, lr_max)
    if note:
        rep.notes.append(note)
    if res.status == "crashed":
        rep.notes.append(f"the script crashed during the sweep ({res.error}); the curve up to then is used")
    out = rep.to_json()
    groups = result.get("groups") or []
    if fmt == "html":
        from invariants.app.html.probe_page import lr_page
        text = lr_page(script, out, groups)
    else:
        text = render.json_text(out) if fmt == "json" else render.lr_text(script, out, groups,
                                                                           int(result.get("steps") or 0))
    write_report(text, output)
    sys.exit(render.exit_for_lr(rep.verdict))


@_command("no shift dropped the metric by more than --max-drop, health as the reference's",
          "a drop above --max-drop, evaluation inputs normalised unlike training inputs, or dead units (above "
          "the reference's)", "bad usage or --shift, or no evaluation pass to probe")
@script_arguments
@click.option("--steps", default=0, show_default=True, type=int, metavar="K",
              help="End training after K optimizer steps (0: run the script to its end).")
@click.option("--shift", "shifts", multiple=True, metavar="NAME=V[,V]",
              help="An input shift, in the data's original scale: brightness=V (values times V), contrast=V "
                   "(each sample's values pulled towards its mean, V<1), noise=V (Gaussian, std V times the "
                   "data range); repeatable.  [default: brightness=0.5,1.5 contrast=0.5 noise=0.05]")
@click.option("--max-drop", default=0.1, show_default=True, type=float,
              help="The largest accepted drop of accuracy (or relative rise of a regression loss) under a shift.")
@click.option("--against", default=None, metavar="FILE",
              help="The reference's values: its `probe robustness --format json` report, or an invariant file "
                   "(its dead-unit bounds).")
@_common
def robustness(script: str, script_args: Sequence[str], steps: int, shifts: Sequence[str], max_drop: float,
               against: Optional[str], store_dir: str, fmt: str, output: Optional[str],
               timeout: Optional[float]) -> None:
    """Run SCRIPT (to its end, or K optimizer steps), then evaluate its final model on the
    inputs of the script's own last evaluation pass, as they are and under each shift, and
    report its health: dead units per rectifier layer, accuracy per class, and whether the
    evaluation inputs are normalised like the training inputs.

    Accuracy comes from the class scores and labels the script's evaluation loss gets (the
    loss itself for regression). The probe measures the script's normalisation (the loader's
    samples against the model's inputs) and applies each shift before it."""
    from invariants.app.probes import render, shifts as shiftmod
    parsed = shiftmod.parse(shifts or shiftmod.DEFAULT_SHIFTS)
    if steps < 0:
        raise UsageError(f"--steps must be >= 0, got {steps}")
    if not max_drop >= 0:
        raise UsageError(f"--max-drop must be >= 0, got {max_drop}")
    _check_format(fmt, output)
    reference = render.load_reference(against) if against else None
    spec = {"name": "robustness", "shifts": [list(p) for p in parsed]}
    res, result = _run(store_dir, script, script_args, spec, steps, check_timeout(timeout))
    _refuse(res, result)
    found = render.findings(result, max_drop, reference)
    out = {k: v for k, v in result.items() if k != "probe"}
    out["findings"] = found
    if reference is not None:
        out["against"] = {"file": against, "source": reference["source"]}
    if fmt == "html":
        from invariants.app.html.probe_page import robustness_page
        text = robustness_page(script, out, found)
    else:
        text = render.json_text(out) if fmt == "json" else render.robustness_text(script, out, found, max_drop)
    write_report(text, output)
    sys.exit(Exit.VIOLATIONS if found else Exit.OK)


def _check_format(fmt: str, output: Optional[str]) -> None:
    """Before anything runs: -o can be written, and html has matplotlib and a file to go to."""
    check_output(output)
    if fmt == "html":
        from invariants.app.html import require_matplotlib
        require_matplotlib()
        if not output:
            raise UsageError("--format html writes a page: give -o FILE.html")


def _refuse(res: Any, result: Dict[str, Any]) -> None:
    """A probe that got nothing to report: the script crashed (exit 3), or cannot be probed
    (exit 2, with the probe's reason)."""
    from invariants.app.store import CLEAN_ENDINGS
    usable = result.get("curve") or result.get("baseline")
    if res.status not in CLEAN_ENDINGS and not usable:
        raise PipelineCrashed(f"the script ended ({res.status}) before the probe had what it needs: {res.error}")
    if result.get("error") and not usable:
        raise UsageError(f"cannot probe {res.script}: {result['error']}")
    if not usable:  # the probe itself failed: a bug in invar
        faults = "; ".join(res.faults or []) or "no result was recorded"
        raise RuntimeError(f"the probe produced no result ({faults}); run {res.run_id} {res.status}")
