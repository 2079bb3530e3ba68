"""The commands on a corpus: eval, bench, demo."""
from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import click

from invariants.app.cli.common import Exit, err, exit_help
from invariants.errors import UsageError


@click.command("eval", epilog=exit_help((Exit.OK, "every bug found, no false alarm"),
                                      (Exit.VIOLATIONS, "a bug variant missed, an error-level false alarm, or an "
                                                       "incomplete check of a clean run"),
                                      (Exit.BAD_INPUT, "bad usage or no such corpus")))
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
@click.option("--html", "html_dir", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="Also write each check's HTML report (as `check --format html` renders it) to "
                   "DIR/CASE/VARIANT.html; needs the report extra (matplotlib).")
def eval_(corpus_dir: str, fmt: str, output: Optional[str], jobs: int, n_runs: int, steps: int,
          threads: Optional[int], html_dir: Optional[str]) -> None:
    """Score invar on a corpus: infer from each reference, check every variant.

    Exits 1 if a bug variant is missed or an ok variant / fresh-seed reference gets an
    error-level violation, learned or built-in (the "no reference" column)."""
    from invariants.app import evaluate
    if html_dir:
        from invariants.app import outputs
        outputs.prepare("html", None)  # a missing matplotlib is a usage error now, not after the runs
    try:
        report = evaluate.evaluate(corpus_dir, jobs=jobs, runs=n_runs, steps=steps, progress=err,
                                   threads=threads, html_dir=html_dir)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    text = evaluate.render_markdown(report) if fmt == "md" else json.dumps(report.to_json(), indent=2)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        err(f"wrote {output}")
    else:
        click.echo(text)
    t = report.totals()
    err(f"evaluated {len(report.invariants)} cases in {report.seconds:.0f} s")
    nr = t["no_reference"]  # the same runs against the built-in set (docs/builtin.md)
    if t["recall"] < 1.0 or t["false_alarms"] or t["loo_false_alarms"] or t["whole_run_false_alarms"] \
            or t["incomplete_clean_runs"] or (nr["universal_bugs"] and nr["recall"] < 1.0) or nr["false_alarms"] \
            or nr["loo_false_alarms"] or nr["whole_run_false_alarms"]:
        sys.exit(Exit.VIOLATIONS)


@click.command(epilog=exit_help((Exit.OK, None), (Exit.BAD_INPUT, "bad usage, or no scripts to time")))
@click.argument("scripts", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--steps", default=40, show_default=True, help="Optimizer steps per timed run.")
@click.option("--repeats", default=3, show_default=True, help="Interleaved repeats per mode.")
@click.option("--mining-runs", default=5, show_default=True)
@click.option("--mining-steps", default=200, show_default=True)
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="torch intra-op threads [default: torch's]; 1 gives steadier ratios on shared cores.")
def bench(scripts: Sequence[str], steps: int, repeats: int, mining_runs: int, mining_steps: int,
          threads: Optional[int]) -> None:
    """Print tracer overhead (infer and check mode vs untraced) and mining time, as ratios.

    SCRIPTS default to every corpus reference. Each script runs untraced, traced as infer
    records it, and traced as check evaluates it, interleaved. `infer` and `check` compare
    median step times (a typical step); the `mean` columns compare mean step times, which
    spread the cost of the observed steps (and of evaluation passes) over all steps. Each
    ratio is the median over repeats of the ratio within one repeat."""
    from invariants.app import bench as b
    if threads:
        import torch
        torch.set_num_threads(threads)
    targets = list(scripts) or _single_process_references()
    if not targets:
        raise UsageError("no scripts given and no corpus/*/reference.py found")
    from invariants.app import shapes as shapes_mod
    click.echo(f"{'pipeline':<40} {'plain ms/step':>13} {'infer':>8} {'check':>8} "
               f"{'infer mean':>10} {'check mean':>10} {'static s':>9}")
    for script in targets:
        try:
            t = b.step_overhead(script, steps=steps, repeats=repeats, progress=err)
        except ValueError as e:
            raise UsageError(str(e)) from None
        with contextlib.redirect_stdout(io.StringIO()):
            static = shapes_mod.run(script, [])
        seconds = f"{static.report.seconds:.2f}" if static.report else "-"
        click.echo(f"{_short(script):<40} {1000 * t.median_step('plain'):>13.2f} "
                   f"{t.ratio('infer'):>7.2f}x {t.ratio('check'):>7.2f}x "
                   f"{t.mean_ratio('infer'):>9.2f}x {t.mean_ratio('check'):>9.2f}x {seconds:>9}")
    m = b.mining_time(mining_runs, mining_steps)
    click.echo(f"mining {mining_runs} runs x {mining_steps} steps ({int(m['observations'])} observations): "
               f"{m['seconds']:.2f} s, {int(m['invariants'])} invariants")


def _single_process_references() -> List[str]:
    """corpus/*/reference.py, except cases launched on several ranks (docs/distributed.md)."""
    from corpus import cases
    out = []
    for case in cases.case_dirs(root=Path("corpus")):
        if not (cases.load(case) or {}).get("launch") and (case / "reference.py").is_file():
            out.append(str(case / "reference.py"))
    return out


def _short(path: str) -> str:
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


@click.command(epilog=exit_help((Exit.OK, "the bug variant was caught"), (Exit.VIOLATIONS, "it was missed")))
@click.option("--store", "store_dir", default=None, help="Store directory [default: a temporary one].")
def demo(store_dir: Optional[str]) -> None:
    """Infer invariants from a corpus reference, then check one of its bug variants."""
    from invariants.app import demo as demo_mod
    code = demo_mod.demo(store_dir, echo=click.echo, progress=err)
    sys.exit(code)
