"""The probes' HTML reports (`invar probe lr|robustness --format html`): the verdict, the LR
range test's curve (loss against lr, log scale, with the configured, steepest and divergence
rates marked) or the metric per input shift, and the tables of the text report."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from invariants.app.html.figures import Figure, to_svg
from invariants.app.html.page import bullet_list, document, esc, figure, footer, paragraph, section, table

MARKS = (("lr_configured", "configured", "#c0392b", "-"), ("lr_steepest", "steepest descent", "#1e8449", "--"),
         ("lr_diverge", "divergence", "#7d3c98", ":"))


def _verdict(word: str, ok: bool, reason: str) -> str:
    cls = "v-ok" if ok else "v-failed"
    return f'<div class="verdict {cls}"><b>{esc(word)}</b>{esc(reason)}</div>'


def lr_curve_figure(rep: Dict[str, Any]) -> Figure:
    """Smoothed (line) and raw (dots) loss against lr, the three rates as vertical lines."""
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.subplots()
    raw = rep.get("raw_curve") or []
    if raw:
        ax.plot([p[0] for p in raw], [p[1] for p in raw], ".", color="#9aa5b1", ms=4, label="loss")
    ax.plot([p[0] for p in rep["curve"]], [p[1] for p in rep["curve"]], "-", color="#1f4e9a", label="smoothed loss")
    for key, label, color, style in MARKS:
        if rep.get(key):
            ax.axvline(rep[key], color=color, ls=style, lw=1.2, label=f"{label} {rep[key]:.3g}")
    region = rep.get("steepest_region")
    if region:
        ax.axvspan(region[0], region[1], color="#1e8449", alpha=0.08)
    losses = [p[1] for p in rep["curve"] if p[1] == p[1]]
    if losses:
        top = losses[0] + 2 * (max(losses[0], 1e-12) - min(losses))
        ax.set_ylim(min(losses) - 0.05 * abs(min(losses)), min(max(losses), top) * 1.05)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (largest group)")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def lr_page(script: str, rep: Dict[str, Any], groups: Sequence[float]) -> str:
    """The lr probe's page."""
    ok = rep["verdict"] == "ok"
    rows = [("configured", rep["lr_configured"]), ("steepest descent", rep["lr_steepest"]),
            ("divergence", rep["lr_diverge"])]
    body = ["<h1>invar probe lr</h1>", paragraph(script, "sub"),
            _verdict(rep["verdict"], ok, rep["reason"]), paragraph(rep["active"], "note"),
            section("Loss against learning rate", [figure(to_svg(lr_curve_figure(rep), "lr"),
                                                          "dots: each step's loss; line: centred smoothing")], "curve"),
            section("Rates", [table(["rate", "lr"], [(n, "-" if v is None else f"{v:.3g}") for n, v in rows], [1]),
                              paragraph(f"parameter groups' configured rates: {', '.join(f'{g:.3g}' for g in groups)}",
                                        "note") if len(groups) > 1 else ""], "rates"),
            bullet_list(rep.get("notes") or []), footer([])]
    return document("invar probe lr", body)


def shifts_figure(res: Dict[str, Any]) -> Figure:
    """The metric under each shift, the baseline as a line."""
    metric = res.get("metric", "accuracy")
    rows = res.get("shifts") or []
    fig = Figure(figsize=(max(4.0, 1.1 * len(rows) + 2), 3.2))
    ax = fig.subplots()
    names = [f"{s['name']}={s['value']:g}" for s in rows]
    ax.bar(names, [s[metric] for s in rows], color="#5d8fc9")
    ax.axhline(res["baseline"][metric], color="#1e8449", ls="--", lw=1.2, label=f"baseline {res['baseline'][metric]:.3g}")
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.tight_layout()
    return fig


def robustness_page(script: str, res: Dict[str, Any], findings: List[str]) -> str:
    """The robustness probe's page."""
    metric = res.get("metric", "accuracy")
    parts = ["<h1>invar probe robustness</h1>", paragraph(script, "sub"),
             _verdict("ok" if not findings else "fail", not findings,
                      f"baseline {metric} {res['baseline'][metric]:.3g} on {res.get('eval_samples')} samples"),
             bullet_list(findings)]
    if res.get("shifts"):
        parts.append(section(f"{metric.capitalize()} per input shift", [
            figure(to_svg(shifts_figure(res), "shifts")),
            table(["shift", metric, "drop"], [(f"{s['name']}={s['value']:g}", f"{s[metric]:.3g}", f"{s['drop']:+.3f}")
                                              for s in res["shifts"]], [1, 2])], "shifts"))
    per_class = (res["baseline"].get("per_class") or {})
    if per_class:
        parts.append(section("Accuracy per class", [table(["class", "accuracy"], [
            (c, f"{a:.3g}") for c, a in sorted(per_class.items(), key=lambda kv: kv[1])], [1])], "classes"))
    dead = res.get("dead_units") or {}
    if dead:
        parts.append(section("Dead units after training", [table(["layer", "dead", "units"], [
            (n, f"{d['dead_fraction']:.1%}", d["units"]) for n, d in dead.items()], [1, 2])], "dead"))
    norm = res.get("normalisation")
    if norm:
        parts.append(section("Evaluation inputs against training inputs", [table(
            ["channel-mean shift (train std)", "limit", "spread ratio", "normalised alike"],
            [(f"{norm['mean_shift']:.2f}", f"{norm['mean_shift_limit']:.2f}", f"{norm['std_ratio']:.2f}",
              "yes" if norm["normalised_alike"] else "no")], [0, 1, 2])], "normalisation"))
    parts += [bullet_list(res.get("notes") or []), footer([])]
    return document("invar probe robustness", parts)
