"""`invar check --tensorboard DIR`: the checked run's observed variables as TensorBoard
scalars and its violations and verdict as text (torch.utils.tensorboard), so that the run
sits next to the user's own curves.

Scalars are tagged `{phase}/{variable}` (`train/loss.value`, `eval/output.std`), one value
per observed step (the mean where a step recorded several, as an eval pass does); texts are
`invar/violations` (each at the step it was first seen) and `invar/verdict`. Each check
writes its own run folder, `DIR/invar-{run_id}`, so repeated checks never mix.
"""
from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

from invariants.app.store import Store
from invariants.errors import UsageError

EXTRA = "pip install 'torch-invar[tensorboard]'"


def require_tensorboard() -> None:
    """UsageError (exit 2) naming the package to install, when tensorboard is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise UsageError(f"--tensorboard writes event files with the tensorboard package, which is not installed: "
                         f"{EXTRA} (or pip install tensorboard)")


def scalars(rows: Any) -> Dict[Tuple[str, str], Dict[int, float]]:
    """(phase, variable) -> step -> mean of the step's numeric values."""
    by: Dict[Tuple[str, str], Dict[int, List[float]]] = {}
    for step, phase, variable, value, _ in rows:
        if value is not None:
            by.setdefault((phase, variable), {}).setdefault(step, []).append(value)
    return {key: {s: statistics.fmean(vs) for s, vs in steps.items()} for key, steps in by.items()}


def violation_text(v: Mapping[str, Any]) -> str:
    """One violation as a Markdown line (TensorBoard renders text as Markdown)."""
    return (f"**[{v['severity']}] {v['family']}**: `{' vs '.join(v['target'])}` ({v['phase']}, step {v['step']}) "
            f"observed {v['observed']}, expected {v['expected']} — `{v['id']}`")


def verdict_text(doc: Mapping[str, Any]) -> str:
    """The verdict and root causes with their fix hints, as Markdown."""
    s = doc.get("summary") or {}
    lines = [f"**{'clean' if s.get('verdict') == 'ok' else s.get('verdict')}**: {s.get('errors', 0)} error(s), "
             f"{s.get('warnings', 0)} warning(s); {s.get('invariants_checked', 0)} of "
             f"{s.get('invariants_total', 0)} invariants checked against `{doc.get('against', '')}`"]
    for i, c in enumerate(doc.get("causes") or [], 1):
        where = f" @ {c['locus']}" if c.get("locus") else ""
        lines.append(f"{i}. **[{c['severity']}] {c['family']}{where}**: {c['summary']}  \nfix: {c['hint']}")
    return "\n\n".join(lines)


def write_run(log_dir: str, doc: Mapping[str, Any], store_dir: str) -> str:
    """Writes the checked run (rank 0's, for a distributed check) under `log_dir`; returns
    the run folder written."""
    from torch.utils.tensorboard import SummaryWriter
    summary = doc.get("summary") or {}
    run_id = ((summary.get("run_id") or "").split(",") or [""])[0]
    if not run_id:
        raise UsageError("--tensorboard: the check recorded no run to write")
    with Store(store_dir, create=False) as store:
        series = scalars(store.observations(run_id))
    folder = Path(log_dir) / f"invar-{run_id}"
    try:
        writer = SummaryWriter(log_dir=str(folder))
    except OSError as e:
        raise UsageError(f"--tensorboard: cannot write to {folder}: {e.strerror or e}") from None
    with writer:
        for (phase, variable), by_step in sorted(series.items()):
            for step, value in sorted(by_step.items()):
                writer.add_scalar(f"{phase}/{variable}", value, step)
        for v in sorted(doc.get("violations") or [], key=lambda v: (v["step"], v["id"])):
            writer.add_text("invar/violations", violation_text(v), v["step"])
        writer.add_text("invar/verdict", verdict_text(doc), int(summary.get("steps") or 0))
    return str(folder)
