"""The probes' reports as text (a small table and the verdict) and JSON, and the reference
comparison of `probe robustness --against` (a probe's JSON, or an invariant file's bounds on
dead units). Pure Python: no torch."""
from __future__ import annotations

import json
import math
import re
from typing import Any, Dict, List, Optional, Sequence

ACTIVE = ("ACTIVE PROBE: it set the learning rate of every parameter group itself (ratios kept, the "
          "script's scheduler suspended); no file of the script's was changed")
DEAD_WORSE = 0.25   # a layer's dead fraction this much above the reference's is a finding
DEAD_ALONE = 0.5    # without a reference: a layer with more than half its units dead is one


def _g(v: Optional[float]) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"


def lr_text(script: str, rep: Dict[str, Any], groups: Sequence[float], steps: int) -> str:
    """The lr probe's report: its numbers, a loss-per-decade table, the verdict."""
    lines = [f"invar probe lr: {script}", f"  {ACTIVE}",
             f"  lr configured  {_g(rep['lr_configured'])}"
             + (f"   (largest of {len(groups)} groups: {', '.join(_g(g) for g in groups)})" if len(groups) > 1 else ""),
             f"  lr steepest    {_g(rep['lr_steepest'])}"
             + (f"   (steepest-descent region {_g(rep['steepest_region'][0])} - {_g(rep['steepest_region'][1])})"
                if rep.get("steepest_region") else ""),
             f"  lr diverge     {_g(rep['lr_diverge'])}",
             f"  steps          {steps} optimizer steps, {len(rep['curve'])} losses"]
    curve = rep["curve"]
    if curve:
        lines.append("")
        lines.append("  lr          smoothed loss")
        shown = _per_decade(curve, marks={"configured": rep["lr_configured"], "steepest": rep["lr_steepest"],
                                          "diverge": rep["lr_diverge"]})
        lines.extend(shown)
    lines.append("")
    lines.append(f"verdict: {rep['verdict']} - {rep['reason']}")
    lines.extend(f"note: {n}" for n in rep.get("notes") or [])
    return "\n".join(lines)


def _per_decade(curve: List[List[float]], marks: Dict[str, Optional[float]]) -> List[str]:
    """About three rows per decade of the curve, with a bar, and where the marks fall."""
    rows, last = [], None
    losses = [l for _, l in curve if isinstance(l, (int, float)) and math.isfinite(l)]
    lo, hi = (min(losses), max(losses)) if losses else (0.0, 1.0)
    for lr, loss in curve:
        x = math.log10(lr)
        if last is not None and x - last < 1 / 3 - 1e-9 and (lr, loss) != tuple(curve[-1]):
            continue
        last = x
        bar = "" if not math.isfinite(loss) else "#" * (1 + int(30 * (loss - lo) / max(hi - lo, 1e-12)))
        rows.append(f"  {lr:<10.3g}  {_g(loss):>8}  {bar}")
    for name, v in marks.items():
        if v:
            rows.append(f"  {name:>10} at lr {v:.3g}")
    return rows


def robustness_text(script: str, res: Dict[str, Any], findings: List[str], max_drop: float) -> str:
    """The robustness probe's report: baseline, shifts, health, findings."""
    metric = res.get("metric", "accuracy")
    base = res["baseline"]
    lines = [f"invar probe robustness: {script}",
             f"  final model evaluated on {res.get('eval_samples')} samples of the script's last evaluation pass",
             f"  baseline {metric}  {_g(base.get(metric))}", ""]
    if res.get("shifts"):
        head = "drop" if metric == "accuracy" else "increase"
        lines.append(f"  shift            {metric:>9}  {head:>8}")
        for s in res["shifts"]:
            flag = "  FAIL" if s["drop"] > max_drop else ""
            lines.append(f"  {s['name'] + '=' + format(s['value'], 'g'):<16} {_g(s[metric]):>9}  {s['drop']:>+8.3f}{flag}")
        lines.append("")
    per_class = base.get("per_class") or {}
    if per_class:
        worst = sorted(per_class.items(), key=lambda kv: kv[1])[:3]
        lines.append(f"  per-class accuracy  {len(per_class)} classes, lowest: "
                     + ", ".join(f"class {c} {_g(a)}" for c, a in worst))
    dead = res.get("dead_units") or {}
    if dead:
        some = {name: d for name, d in dead.items() if d["dead_fraction"] > 0}
        lines.append(f"  dead units (never positive on the evaluation data): {len(some)} of {len(dead)} rectifier "
                     f"layers have some")
        for name, d in some.items():
            lines.append(f"    {name:<28} {d['dead_fraction']:>6.1%} of {d['units']}")
    norm = res.get("normalisation")
    if norm:
        alike = "yes" if norm["normalised_alike"] else "NO"
        lines.append(f"  eval inputs normalised like training: {alike} (mean shift {norm['mean_shift']:.2f} train "
                     f"std, limit {norm['mean_shift_limit']:.2f}; spread ratio {norm['std_ratio']:.2f}, limit 3)")
    lines.extend(f"  note: {n}" for n in res.get("notes") or [])
    lines.append("")
    lines.extend(f"FAIL: {f}" for f in findings)
    lines.append("verdict: " + ("fail" if findings else "ok"))
    return "\n".join(lines)


def findings(res: Dict[str, Any], max_drop: float, reference: Optional[Dict[str, Any]]) -> List[str]:
    """What fails the robustness probe: a drop above --max-drop, evaluation inputs not
    normalised like training ones, and dead units (against the reference's when given)."""
    out = []
    metric = res.get("metric", "accuracy")
    for s in res.get("shifts") or []:
        if s["drop"] > max_drop:
            out.append(f"{s['name']}={s['value']:g}: {metric} {'drop' if metric == 'accuracy' else 'increase'} "
                       f"{s['drop']:.3f} > --max-drop {max_drop:g}")
    norm = res.get("normalisation")
    if norm and not norm["normalised_alike"]:
        out.append(f"evaluation inputs are not normalised like training inputs: channel means differ by "
                   f"{norm['mean_shift']:.2f} training standard deviations, spreads by {norm['std_ratio']:.2f}x")
    ref_dead = (reference or {}).get("dead_units")
    for name, d in (res.get("dead_units") or {}).items():
        f = d["dead_fraction"]
        if ref_dead is not None:
            r = ref_dead.get(name, ref_dead.get(name.split("#")[0]))
            if r is not None and f > r + reference.get("margin", DEAD_WORSE):  # type: ignore[union-attr]
                out.append(f"{name}: {f:.0%} of its units are dead, the reference's {r:.0%}")
        elif f > DEAD_ALONE:
            out.append(f"{name}: {f:.0%} of its units are dead after training")
    ref_classes = ((reference or {}).get("baseline") or {}).get("per_class")
    if ref_classes:
        for c, acc in (res["baseline"].get("per_class") or {}).items():
            r = ref_classes.get(str(c), ref_classes.get(c))
            if r is not None and r - acc > max_drop:
                out.append(f"class {c}: accuracy {acc:.2f}, the reference's {r:.2f}")
    return out


DEAD_TARGET = re.compile(r"act\.(.+)\.dead_fraction$")


def load_reference(path: str) -> Dict[str, Any]:
    """--against: a `probe robustness` JSON report of the reference (every health value), or an
    invariant file (the upper bounds of its dead-unit invariants, learned during training)."""
    from invariants.errors import UsageError
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise UsageError(f"--against {path}: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and "baseline" in data:
        dead = {k: v["dead_fraction"] for k, v in (data.get("dead_units") or {}).items()}
        return {"dead_units": dead, "baseline": data["baseline"], "source": "probe report", "margin": DEAD_WORSE}
    from invariants import invfile
    invs = invfile.load(path)
    dead: Dict[str, float] = {}
    for inv in invs.invariants:
        m = DEAD_TARGET.match(inv.target[0]) if inv.target else None
        top = inv.expect.get("max") if m else None
        if m and isinstance(top, (int, float)):
            dead[m.group(1)] = float(top)
    # the bounds carry their own margin (learned from the reference runs' spread)
    return {"dead_units": dead, "source": "invariant file (dead-unit bounds of training)", "margin": 0.0}


def exit_for_lr(verdict: str) -> int:
    """0 ok, 1 too_high or too_low, 7 when the curve could not decide."""
    return {"ok": 0, "too_high": 1, "too_low": 1}.get(verdict, 7)


def sweep_note(steps: int, points: int, stopped: Optional[float], reached: Optional[float],
               lr_max: float) -> Optional[str]:
    """Why the sweep stopped short of --max, when it did without diverging."""
    if stopped is None and steps < points and reached is not None and reached < lr_max:
        return (f"the script ended after {steps} optimizer steps, before the sweep's {points}: it reached lr "
                f"{reached:.3g} of --max {lr_max:g}; lower --steps (fewer points) or let the script train longer")
    return None


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=lambda o: None)
