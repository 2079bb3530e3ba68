"""Verify the corpus: every pipeline runs, references and ok variants learn, bugs are silent
and their symptoms are measured.

    python -m corpus.verify [CASE ...] [--json] [--seed N] [--threads N] [--strict-budget]

Each script runs in this process (imported, `main([])` called) under `corpus.probe`. Per
script: it completes without an exception and prints a `METRICS {json}` line whose numbers
are finite; it evaluates the model before its 31st optimizer step. References (also re-run
with SEED=7, which must change the result) and ok variants must learn: test accuracy at
least min(3 x chance, (1 + chance) / 2), or for regression a test R^2 of at least 0.5. Bug
variants must show every measurement of their `measure:` list (corpus/measures/) against
the reference run. Budgets (full run <= 30 s, first 30 optimizer steps <= 5 s) are shown
and fail the run only with --strict-budget, as timings on shared cores are noisy. A
multi-process case whose spawned rank dies of a signal is run once more, marked `retried`.
Exit status: 0 when every check passes, 1 otherwise, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from corpus import cases
from corpus.measures import run_measure
from corpus.probe import Run, run_script

SEED_CHECK = 7          # the second reference run's SEED
FULL_BUDGET_S = 30.0
STEPS_BUDGET_S = 5.0
BUDGET_STEPS = 30
MIN_R2 = 0.5


@dataclass
class Check:
    name: str
    passed: bool
    text: str
    soft: bool = False   # shown, failing only under --strict-budget


@dataclass
class Row:
    """One script run and its checks."""

    case: str
    script: str
    kind: str            # ref | bug | ok
    seed: Optional[int]
    seconds: float
    seconds_30: Optional[float]
    steps: int
    first_eval: Optional[int]
    metric: str
    checks: List[Check] = field(default_factory=list)

    def passed(self, strict_budget: bool = False) -> bool:
        return all(c.passed for c in self.checks if strict_budget or not c.soft)


def learn_threshold(chance: float) -> float:
    """The accuracy a pipeline must reach to count as learning."""
    return min(3 * chance, (1 + chance) / 2)


ACCURACY_KEYS = ("test_acc", "accuracy")  # the metric names a classification run reports


def _metric_text(run: Run) -> str:
    m = run.metrics
    for key in ACCURACY_KEYS + ("test_r2",):
        if isinstance(m.get(key), (int, float)):
            return f"{key} {m[key]:.3f}"
    return "-"


def _basic_checks(run: Run, launched: bool) -> List[Check]:
    if run.error:
        return [Check("runs", False, f"raised {run.error}")]
    checks = []
    contract = run.model is not None and isinstance(run.result.get("metrics"), dict)
    printed = run.metrics_line is not None
    checks.append(Check("runs", contract and printed,
                        "completed; METRICS printed" if contract and printed else
                        f"main() must return {{'model': nn.Module, 'metrics': dict}} "
                        f"(ok: {contract}) and print METRICS {{json}} (ok: {printed})"))
    numbers = [v for v in (run.metrics_line or {}).values() if isinstance(v, (int, float))]
    finite = bool(numbers) and all(math.isfinite(v) for v in numbers)
    checks.append(Check("plausible", finite, "all metrics finite" if finite else
                        f"metrics not all finite: {run.metrics_line}"))
    first = run.first_eval_step()
    if launched:  # the ranks train in child processes, out of this process's hooks
        checks.append(Check("eval<=30", True, "not observable in-process (spawned ranks)", soft=True))
    else:
        checks.append(Check("eval<=30", first is not None and first <= BUDGET_STEPS,
                            f"first evaluation after {first} optimizer steps"))
    if run.probe.faults:
        checks.append(Check("probe", False, "; ".join(run.probe.faults)))
    if launched:
        checks.append(Check("budget", run.seconds <= FULL_BUDGET_S,
                            f"full {run.seconds:.1f} s (<= {FULL_BUDGET_S:g})", soft=True))
        return checks
    s30 = run.seconds_to_step(BUDGET_STEPS) or run.seconds
    within = run.seconds <= FULL_BUDGET_S and s30 <= STEPS_BUDGET_S
    checks.append(Check("budget", within, f"full {run.seconds:.1f} s (<= {FULL_BUDGET_S:g}), "
                        f"{BUDGET_STEPS} steps {s30:.1f} s (<= {STEPS_BUDGET_S:g})", soft=True))
    return checks


def _learns(run: Run, chance: float) -> Check:
    m = run.metrics
    key = next((k for k in ACCURACY_KEYS if isinstance(m.get(k), (int, float))), None)
    if key is not None:
        need = learn_threshold(chance)
        return Check("learns", m[key] >= need, f"{key} {m[key]:.3f} >= {need:.3f} (chance {chance:g})")
    if isinstance(m.get("test_r2"), (int, float)):
        return Check("learns", m["test_r2"] >= MIN_R2, f"test_r2 {m['test_r2']:.3f} >= {MIN_R2}")
    return Check("learns", False, "no test_acc or test_r2 metric to judge learning by")


def _seed_changes(a: Run, b: Run) -> Check:
    if a.model is None or b.model is None:
        return Check("seed", False, "no model to compare")
    pa, pb = dict(a.model.named_parameters()), dict(b.model.named_parameters())
    differ = any(not torch.equal(pa[k], pb[k]) for k in pa if k in pb)
    return Check("seed", differ, f"SEED={b.seed} " + ("changes the trained parameters" if differ
                                                      else "leaves the trained parameters identical"))


def _row(case: str, kind: str, run: Run, launched: bool = False) -> Row:
    checks = _basic_checks(run, launched)
    if run.retried:
        checks.append(Check("retried", True, f"first attempt: {run.retried}", soft=True))
    return Row(case=case, script=run.script, kind=kind, seed=run.seed, seconds=round(run.seconds, 2),
               seconds_30=(round(run.seconds_to_step(BUDGET_STEPS), 2)
                           if run.seconds_to_step(BUDGET_STEPS) is not None else None),
               steps=len(run.probe.steps), first_eval=run.first_eval_step(), metric=_metric_text(run),
               checks=checks)


def _run(path: Path, args: Sequence[str], seed: Optional[int], launched: bool) -> Run:
    """One script run. A launched case whose spawned rank died of a signal is run once more:
    the process launcher and gloo's teardown are not what the corpus verifies, and the retry
    is shown in the table."""
    run = run_script(path, args, seed=seed)
    if launched and run.error and "terminated with signal" in run.error:
        first = run.error
        run = run_script(path, args, seed=seed)
        run.retried = first
    return run


def verify_case(case_dir: Path, progress=lambda s: None, seed: Optional[int] = None) -> List[Row]:
    """Runs every script of one case (with SEED=seed when given) and returns its rows."""
    problems = cases.validate(case_dir)
    if problems:
        return [Row(case_dir.name, "case.yaml", "meta", None, 0.0, None, 0, None, "-",
                    [Check("contract", False, p) for p in problems])]
    meta = cases.load(case_dir)
    chance = float(meta["chance"])
    launched = bool(meta.get("launch"))
    ref_meta = meta["reference"]
    ref_path = case_dir / ref_meta["script"]
    ref_args = [str(a) for a in ref_meta.get("args") or []]
    progress(f"{case_dir.name}/{ref_path.name}")
    ref = _run(ref_path, ref_args, seed, launched)
    rows = [_row(case_dir.name, "ref", ref, launched)]
    rows[-1].checks.append(_learns(ref, chance))
    other = SEED_CHECK if seed != SEED_CHECK else SEED_CHECK + 1
    progress(f"{case_dir.name}/{ref_path.name} SEED={other}")
    reseeded = _run(ref_path, ref_args, other, launched)
    rows.append(_row(case_dir.name, "ref", reseeded, launched))
    rows[-1].checks += [_learns(reseeded, chance), _seed_changes(ref, reseeded)]
    del reseeded
    for v in meta["variants"]:
        progress(f"{case_dir.name}/{v['script']}")
        run = _run(case_dir / v["script"], [str(a) for a in v.get("args") or []], seed, launched)
        row = _row(case_dir.name, v["kind"], run, launched)
        if v["kind"] == "ok":
            row.checks.append(_learns(run, chance))
        elif run.error is None and ref.error is None:
            for spec in v["measure"]:
                f = run_measure(spec, run, ref)
                row.checks.append(Check(f.check, f.passed, f.text))
        else:
            row.checks.append(Check("symptom", False, "not measured: a run raised"))
        rows.append(row)
    return rows


def verify(names: Sequence[str] = (), progress=lambda s: None, seed: Optional[int] = None) -> List[Row]:
    """Verifies the named cases (all when empty), every script with SEED=seed when given."""
    rows: List[Row] = []
    for case in cases.case_dirs(list(names)):
        rows += verify_case(case, progress, seed)
    return rows


def render(rows: List[Row], strict_budget: bool = False) -> str:
    """The verification table: one line per run, then one line per symptom measurement."""
    head = f"{'case / script':44} {'kind':4} {'seed':>4} {'full s':>6} {'30-step s':>9} " \
           f"{'steps':>5} {'eval@':>5}  {'metric':16} result"
    out = [head, "-" * len(head)]
    case = None
    for r in rows:
        if r.case != case:
            case = r.case
            out.append(case)
        s30 = f"{r.seconds_30:.2f}" if r.seconds_30 is not None else f"({r.seconds:.2f})"
        first = "-" if r.first_eval is None else str(r.first_eval)
        verdict = "ok" if r.passed(strict_budget) else "FAIL"
        budget = next((c for c in r.checks if c.name == "budget"), None)
        if budget is not None and not budget.passed:
            verdict += " (over budget)"
        seed = "-" if r.seed is None else str(r.seed)
        out.append(f"  {r.script:42} {r.kind:4} {seed:>4} {r.seconds:6.2f} {s30:>9} {r.steps:5d} "
                   f"{first:>5}  {r.metric:16} {verdict}")
        for c in r.checks:
            if c.name in ("runs", "plausible", "eval<=30", "budget") and c.passed:
                continue
            mark = "ok  " if c.passed else ("over" if c.soft else "FAIL")
            out.append(f"      {mark} {c.name}: {c.text}")
    failed = [r for r in rows if not r.passed(strict_budget)]
    out.append("")
    out.append(f"{len(rows)} runs, {sum(len(r.checks) for r in rows)} checks, "
               f"{len(failed)} runs failing" + (": " + ", ".join(f"{r.case}/{r.script}" for r in failed)
                                                 if failed else ""))
    out.append(f"learning threshold: test accuracy >= min(3 x chance, (1 + chance) / 2); "
               f"regression: test R^2 >= {MIN_R2}. Eval must come within {BUDGET_STEPS} steps.")
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corpus.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", help="case folder names (default: all)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--seed", type=int, default=None, help="run every script with SEED=N")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--strict-budget", action="store_true", help="fail runs over the time budget")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        names = cases.case_dirs(args.cases)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    rows = verify([c.name for c in names], progress=lambda s: print(f"  running {s}", file=sys.stderr),
                  seed=args.seed)
    seconds = time.perf_counter() - start
    failed = sum(not r.passed(args.strict_budget) for r in rows)
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows], "failed": failed,
                          "seconds": round(seconds, 1)}, indent=1))
    else:
        print(render(rows, args.strict_budget))
        print(f"total {seconds:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
