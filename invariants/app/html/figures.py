"""The report's plots, drawn with matplotlib (Agg, no display) and embedded as inline SVG.

Two kinds: a grid of panels, each one variable over steps (the checked run against the
reference runs' envelope and the invariant's bound, a violation marked), and the per-block
panel (one row per block, one column per statistic: the reference range as a bar, the
checked run as a dot), which stays readable at 200 blocks.

Data-carrying artists get ids (`…-checked-N`, `…-envelope-N`, `…-blocks-N`) so that a test
can hide them and see that they drew something.
"""
from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")  # no display, ever: reports are rendered on servers and in CI

from matplotlib.figure import Figure  # noqa: E402  (after the backend is chosen)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from invariants.app.html.bounds import Bound  # noqa: E402
from invariants.app.html.traces import Envelope, Points  # noqa: E402

REFERENCE = "#9db4cf"
CHECKED = "#1f4e9a"
BOUND = "#c0392b"
VIOLATION = "#d62728"
WINDOW = "#f2f2f2"
WIDE = 100.0  # a positive series spanning more than this factor is drawn on a log scale
PANEL_SIZE = (3.6, 2.4)  # inches per panel
LEGEND_COLUMNS, LEGEND_ROW = 3, 0.17  # a figure's legend: entries per row, inches per row
BLOCK_ROW = 0.17  # inches per block row
BLOCKS_IN_VIEW = 40  # a per-block panel with more rows scrolls in its own box
_STRIP = (re.compile(r"^.*?(?=<svg)", re.S), re.compile(r"<metadata>.*?</metadata>\s*", re.S),
          re.compile(r'\s+xmlns(:\w+)?="[^"]*"'))
_IDS = re.compile(r'(\bid="|url\(#|href="#)')


@dataclass
class Panel:
    """One variable over steps: the checked run's values (`raw`: every value where a step has
    several), the reference envelope or, without one, the span the invariant was fitted on,
    the invariant's bound lines, the step window, and the step of a violation."""

    title: str
    checked: Points = field(default_factory=list)
    raw: Points = field(default_factory=list)
    envelope: Optional[Envelope] = None
    span: Optional[Tuple[float, float]] = None
    bounds: List[Bound] = field(default_factory=list)
    window: Tuple[int, Optional[int]] = (0, None)
    mark: Optional[int] = None
    mark_value: Optional[float] = None  # the violating value, where the checked run's values are unknown
    note: str = ""


@dataclass
class BlockRow:
    """One block in the per-block panel: per statistic, the reference (low, high), the
    checked run's typical value (None: not observed; no key: no checked run) and the
    invariants' bounds (low, high; None: open); `flagged`: a violation names it."""

    name: str
    reference: Dict[str, Tuple[float, float]]
    checked: Dict[str, Optional[float]] = field(default_factory=dict)
    flagged: bool = False
    bounds: Dict[str, Tuple[Optional[float], Optional[float]]] = field(default_factory=dict)


def to_svg(fig: Figure, prefix: str) -> str:
    """The figure as an inline <svg> element: no XML prolog, metadata or namespace URLs, and
    every id prefixed so that several figures live in one page without clashes."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": prefix}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    for pattern in _STRIP:
        text = pattern.sub("", text)
    return _IDS.sub(lambda m: m.group(1) + prefix + "-", text)


def panels_figure(panels: Sequence[Panel], columns: int = 3) -> Figure:
    """A grid of panels with one legend under it."""
    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    fig = Figure()
    axes = list(fig.subplots(rows, columns, squeeze=False).flat)
    legend: Dict[str, object] = {}
    for i, (ax, panel) in enumerate(zip(axes, panels)):
        for handle, label in zip(*_draw(ax, panel, i)):
            legend.setdefault(label, handle)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    _layout(fig, legend, PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows, left=0.6, top=0.42, wspace=0.32,
            hspace=0.75)
    return fig


def _layout(fig: Figure, legend: Dict[str, object], width: float, body: float, left: float, top: float,
            wspace: float, hspace: float = 0.2) -> None:
    """Sizes the figure around an area of axes `body` inches tall with fixed margins in
    inches (constrained layout would cost most of the rendering time) and room under it for
    the legend's rows."""
    rows = math.ceil(len(legend) / LEGEND_COLUMNS)
    bottom = 0.45 + (LEGEND_ROW * rows + 0.1 if legend else 0.0)  # the x-axis label, then the legend
    height = body + top + bottom
    fig.set_size_inches(width, height)
    fig.subplots_adjust(left=left / width, right=1 - 0.2 / width, top=1 - top / height, bottom=bottom / height,
                        wspace=wspace, hspace=hspace)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="lower center", ncols=min(LEGEND_COLUMNS, len(legend)),
                   fontsize=7, frameon=False)


def _draw(ax: object, p: Panel, i: int) -> Tuple[list, list]:
    ax.set_title(p.title + (f"\n{p.note}" if p.note else ""), fontsize=7.5, loc="left")
    ax.tick_params(labelsize=7)
    lo, hi = p.window
    if (lo, hi) != (0, None):
        ax.axvspan(lo, hi if hi is not None else _last_step(p), color=WINDOW, zorder=0, label="checked step window")
    if p.envelope is not None:
        _envelope(ax, p.envelope, i)
    elif p.span is not None:
        ax.axhspan(*p.span, color=REFERENCE, alpha=0.35, lw=0, label="reference span (from the invariant file)",
                   gid=f"envelope-{i}")
    for b in p.bounds:
        style = dict(color=BOUND, ls="--", lw=1.0, label=f"bound: {b.label}")
        if b.value is not None:
            ax.axhline(b.value, **style)
        elif b.points:
            xs, ys = zip(*b.points)
            ax.step(xs, ys, where="post", **style)
    if p.raw and len(p.raw) > len(p.checked):
        ax.plot(*zip(*p.raw), ls="none", marker=".", ms=2.5, color=CHECKED, alpha=0.5)
    if p.checked:
        xs, ys = zip(*p.checked)
        ax.plot(xs, ys, color=CHECKED, lw=1.4, marker="o" if len(xs) <= 3 else None, ms=4, label="checked run",
                gid=f"checked-{i}")
    if p.mark is not None:
        ax.axvline(p.mark, color=VIOLATION, ls=":", lw=1.2, label="violation (first step)")
        at = [v for s, v in p.checked if s == p.mark] or ([p.mark_value] if p.mark_value is not None else [])
        if at:
            ax.plot([p.mark], at[:1], ls="none", marker="X", ms=8, color=VIOLATION, zorder=5,
                    label="violating value")
    if not (p.checked or p.envelope or p.span or p.bounds or p.mark_value is not None):
        ax.text(0.5, 0.5, p.note or "no numeric value recorded", ha="center", va="center", fontsize=7,
                transform=ax.transAxes, color="#666")
    if _wide(p):
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    steps = _steps(p)
    if steps and max(steps) - min(steps) < 2:  # a once-per-run fact: a step, not a fraction of one
        ax.set_xlim(min(steps) - 1, max(steps) + 1)
    ax.set_xlabel("optimizer step", fontsize=7)
    return ax.get_legend_handles_labels()


def _envelope(ax: object, env: Envelope, i: int) -> None:
    label = f"reference runs ({env.runs}): min–max per step"
    if len(env.steps) > 1:
        ax.fill_between(env.steps, env.low, env.high, color=REFERENCE, alpha=0.55, lw=0, label=label,
                        gid=f"envelope-{i}")
        for edge in (env.low, env.high):  # a band of zero height (a fraction that is always 0) stays visible
            ax.plot(env.steps, edge, color=REFERENCE, lw=2.2, solid_capstyle="butt")
    else:  # a once-per-run fact: one step
        ax.errorbar(env.steps, [(env.low[0] + env.high[0]) / 2],
                    yerr=[[(env.high[0] - env.low[0]) / 2]], fmt="s", ms=7, color=REFERENCE, capsize=6, lw=3,
                    label=label, gid=f"envelope-{i}")


def _steps(p: Panel) -> List[int]:
    """The steps the panel has data at (the checked run, the envelope, the violation)."""
    steps = [s for s, _ in p.checked] + (list(p.envelope.steps) if p.envelope else [])
    return steps + ([p.mark] if p.mark is not None else [])


def _last_step(p: Panel) -> int:
    return max(_steps(p), default=p.window[0] + 1)


def _wide(p: Panel) -> bool:
    values = [v for _, v in p.checked]
    if p.envelope is not None:
        values += list(p.envelope.low) + list(p.envelope.high)
    values += [b.value for b in p.bounds if b.value is not None]
    values += [v for b in p.bounds for _, v in b.points]
    return _log_scale(values)


def _log_scale(values: Sequence[float]) -> bool:
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > WIDE


def blocks_figure(rows: Sequence[BlockRow], stats: Sequence[Tuple[str, str]]) -> Figure:
    """The per-block panel: blocks top to bottom, one column per (statistic, title)."""
    n = len(rows)
    font = 7 if n <= 60 else 5.5
    labels = 0.2 + max((len(r.name) for r in rows), default=4) * font * 0.62 / 72  # inches for the names
    fig = Figure()
    axes = fig.subplots(1, len(stats), sharey=True, squeeze=False)[0]
    for j, (ax, (stat, title)) in enumerate(zip(axes, stats)):
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=font)
        ax.grid(axis="x", color="#eee", lw=0.6)
        _block_column(ax, j, stat, rows)
    axes[0].set_yticks(range(n), [r.name for r in rows], fontsize=font)
    for label, r in zip(axes[0].get_yticklabels(), rows):
        if r.flagged:
            label.set_color(VIOLATION)
            label.set_fontweight("bold")
    axes[0].set_ylim(n - 0.5, -0.5)
    handles: Dict[str, object] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    _layout(fig, handles, 2.4 * len(stats) + labels + 0.3, BLOCK_ROW * n + 0.2, left=labels, top=0.3, wspace=0.12)
    return fig


def _block_column(ax: object, j: int, stat: str, rows: Sequence[BlockRow]) -> None:
    """One statistic over the blocks: reference ranges as bars, the invariants' bounds as
    ticks, the checked run's values as dots (× where it recorded none)."""
    ys = range(len(rows))
    refs = [r.reference.get(stat) for r in rows]
    checked = [r.checked.get(stat) for r in rows]
    limits = [(y, r.bounds[stat]) for y, r in zip(ys, rows) if stat in r.bounds]
    values = [v for pair in refs if pair for v in pair] + [v for v in checked if v is not None]
    if _log_scale(values):
        ax.set_xscale("log")
    elif stat.endswith("_fraction"):  # a fraction (docs/observations.md): its whole range, 0 and 1 in view
        ax.set_xlim(-0.05, 1.05)
    have = [(y, pair) for y, pair in zip(ys, refs) if pair]
    if have:
        # lines, not bars: a range of zero width (a fraction always 1) must stay visible
        ax.hlines([y for y, _ in have], [p[0] for _, p in have], [p[1] for _, p in have], lw=6,
                  color=REFERENCE, label="reference runs: min–max", gid=f"blocks-ref-{j}")
        ax.plot([p[0] for _, p in have], [y for y, _ in have], ls="none", marker="|", ms=7, mew=2.5,
                color=REFERENCE)
    if limits:
        ends = [(y, v) for y, pair in limits for v in pair if v is not None and (v > 0 or not _log_scale(values))]
        ax.plot([v for _, v in ends], [y for y, _ in ends], ls="none", marker="|", ms=9, mew=1.2, color=BOUND,
                label="invariant bounds")
    seen = [(y, v, refs[y]) for y, v in zip(ys, checked) if v is not None]
    if seen:
        compared = any(refs)  # with no reference at all (built-in invariants) nothing is outside it
        colors = [VIOLATION if compared and not (pair and _inside(v, pair)) else CHECKED for _, v, pair in seen]
        ax.scatter([v for _, v, _ in seen], [y for y, _, _ in seen], s=14, c=colors, zorder=3,
                   label="checked run (median; red: outside the reference's range or not in it)",
                   gid=f"blocks-checked-{j}")
    missing = [y for y, r in zip(ys, rows) if stat in r.checked and r.checked[stat] is None and refs[y]]
    if missing and values:
        ax.plot([min(values)] * len(missing), missing, ls="none", marker="x", ms=5, color=VIOLATION,
                label="not observed in the checked run")


def _inside(v: float, pair: Tuple[float, float]) -> bool:
    lo, hi = pair
    slack = 1e-9 + 1e-6 * max(abs(lo), abs(hi))
    return lo - slack <= v <= hi + slack
