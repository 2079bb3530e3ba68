"""The cross-rank comparison of one step: the gathered payloads (rank_payload.py) in, the
`dist.*` findings out (docs/observations.md), the same on every rank.

A finding is data: the variable, its value and, where the ranks disagree, which ranks are
concerned and how they split. `text()` renders the human-readable `<variable>.ranks`
observation from it (`ranks 1: parameters of rank 1 differ from ranks 0,2,3`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from tracer.rank_payload import Header, PayloadLayout, RankRow

SAME = 1e-10  # relative difference under which two digests are the same replica

Groups = Tuple[Tuple[int, ...], ...]


@dataclass(frozen=True)
class RankFinding:
    """One `dist.*` value of a step on which the ranks agree (or that names no ranks)."""

    variable: str
    value: float

    @property
    def ranks(self) -> Tuple[int, ...]:
        """The ranks concerned, ascending (() when none is singled out)."""
        return ()

    @property
    def majority(self) -> Tuple[int, ...]:
        """The ranks that agree with the majority (() when there is none)."""
        return ()

    def text(self) -> str:
        """The `.ranks` observation: the ranks concerned, then what differs ("": nothing)."""
        return ""


def _named(ranks: Sequence[int], sentence: str) -> str:
    return f"ranks {','.join(str(r) for r in sorted(set(ranks)))}: {sentence}"


def _num(v: float) -> str:
    return str(int(v)) if math.isfinite(v) and v == int(v) else f"{v:.6g}"


def _joined(ranks: Sequence[int]) -> str:
    return ",".join(map(str, ranks))


@dataclass(frozen=True)
class Split(RankFinding):
    """The ranks fall into groups of equal `what` (the largest group first, ties: the
    lowest rank's); `values` (rank, value) are shown after the sentence when given."""

    what: str
    groups: Groups
    values: Tuple[Tuple[int, float], ...] = ()
    values_label: str = ""  # e.g. "largest per rank: "

    @property
    def majority(self) -> Tuple[int, ...]:
        total = sum(len(g) for g in self.groups)
        return self.groups[0] if len(self.groups[0]) * 2 > total else ()

    @property
    def ranks(self) -> Tuple[int, ...]:
        if self.majority:
            return tuple(sorted(r for g in self.groups[1:] for r in g))
        return tuple(sorted(r for g in self.groups for r in g))

    def text(self) -> str:
        odd, what = self.ranks, self.what
        if self.majority:
            lead = self.groups[0]
            sentence = (f"{what} of rank{'s' if len(odd) > 1 else ''} {_joined(odd)} differ "
                        f"from rank{'s' if len(lead) > 1 else ''} {_joined(lead)}")
        elif all(len(g) == 1 for g in self.groups):
            names = [str(r) for r in odd]
            sentence = f"{what} differ between ranks {', '.join(names[:-1])} and {names[-1]}"
        else:
            sentence = f"{what} differ with no majority: " + " | ".join(_joined(g) for g in self.groups)
        shown = ", ".join(f"rank {r}: {_num(v)}" for r, v in self.values)
        return _named(odd, sentence) + (f" ({self.values_label}{shown})" if self.values else "")


@dataclass(frozen=True)
class NonFinite(RankFinding):
    """Some ranks' digests of `what` are NaN or infinite."""

    what: str
    bad: Tuple[int, ...]

    @property
    def ranks(self) -> Tuple[int, ...]:
        return tuple(sorted(set(self.bad)))

    def text(self) -> str:
        return _named(self.bad, f"non-finite {self.what}")


@dataclass(frozen=True)
class IdenticalBatches(RankFinding):
    """Pairs of ranks whose batches (first samples, in order) are identical."""

    pairs: Tuple[Tuple[int, int], ...]

    @property
    def ranks(self) -> Tuple[int, ...]:
        return tuple(sorted({r for p in self.pairs for r in p}))

    def text(self) -> str:
        if not self.pairs:
            return ""
        return _named(self.ranks, "identical batches on " + ", ".join(f"ranks {a} and {b}" for a, b in self.pairs))


@dataclass(frozen=True)
class SharedSamples(RankFinding):
    """`value` samples were seen by more than one rank; `sharing`: those ranks."""

    sharing: Tuple[int, ...]

    @property
    def ranks(self) -> Tuple[int, ...]:
        return self.sharing

    def text(self) -> str:
        if not self.sharing:
            return ""
        return _named(self.sharing, f"{int(self.value)} of the samples compared appear on more than one rank")


def compare(table: List[List[float]], names: Sequence[str], layout: PayloadLayout = PayloadLayout()
            ) -> List[RankFinding]:
    """The `dist.*` findings of one step from the gathered table (row r: rank r's payload)
    and the block names."""
    rows = [layout.read(values) for values in table]
    world = len(rows)
    out: List[RankFinding] = [RankFinding("dist.world_size", float(world))]
    ok = [r for r in range(world) if rows[r].ok]
    out.append(_agreement("dist.step_mismatch", {r: rows[r][Header.STEP] for r in range(world)}, "steps"))
    out += _compare_batches(rows, ok)
    out += _compare_lr(rows, ok)
    layouts = _agreement("dist.layout_mismatch", {r: rows[r][Header.LAYOUT] for r in ok},
                         "model layouts (parameter shapes)")
    out.append(layouts)
    if layouts.value or len(ok) < 2:
        return out  # blocks of different models cannot be compared
    for b, name in enumerate(names):
        numel = rows[ok[0]].block(b)[0]
        for kind, part, what in (("param", 1, "parameters"), ("grad", 2, "gradients")):
            digests = [(r, rows[r].block(b)[part]) for r in ok]
            out.append(_divergence(f"dist.block.{name}.{kind}_divergence", digests, numel, what))  # type: ignore[arg-type]
    return out


def _split(items: Sequence[Tuple[int, Sequence[float]]]) -> Groups:
    """Ranks grouped by equal values, the largest group first (ties: the lowest rank's)."""
    groups: List[Tuple[List[int], Sequence[float]]] = []
    for r, v in items:
        for g, rep in groups:
            if _same(v, rep):
                g.append(r)
                break
        else:
            groups.append(([r], v))
    return tuple(tuple(g) for g, _ in sorted(groups, key=lambda gr: (-len(gr[0]), gr[0][0])))


def _same(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x == y or abs(x - y) <= SAME * max(abs(x), abs(y)) or (math.isnan(x) and math.isnan(y))
               for x, y in zip(a, b))


def _agreement(variable: str, values: Dict[int, float], what: str) -> RankFinding:
    """How many ranks differ from the majority on one value (and which, with the values)."""
    groups = _split([(r, [v]) for r, v in values.items()])
    if len(groups) <= 1:
        return RankFinding(variable, 0.0)
    return Split(variable, float(sum(len(g) for g in groups[1:])), what, groups,
                 tuple((r, values[r]) for r in sorted(values)))


def _divergence(variable: str, digests: List[Tuple[int, Sequence[float]]], numel: float, what: str) -> RankFinding:
    """Largest relative distance of a rank's replica from the majority's, and who is off."""
    bad = tuple(r for r, d in digests if any(math.isnan(v) or math.isinf(v) for v in d))
    if bad:
        return NonFinite(variable, float("nan"), what, bad)
    groups = _split(digests)
    if len(groups) == 1:
        return RankFinding(variable, 0.0)
    ref = dict(digests)[groups[0][0]]
    scale = max(math.sqrt(max(ref[2], 0.0)), 1e-30)
    worst = 0.0
    for _, d in digests:
        dn = abs(math.sqrt(max(d[2], 0.0)) - math.sqrt(max(ref[2], 0.0)))
        ds = abs(d[0] - ref[0]) / math.sqrt(max(numel, 1.0))
        worst = max(worst, dn, ds, abs(d[1] - ref[1]))
    return Split(variable, worst / scale, what, groups)


def _key(v: float) -> float:
    # Equal samples give bitwise-equal fingerprints on equal hardware; rounding to 12
    # significant digits also absorbs a reduction order that differs with the batch size.
    return float(f"{v:.12g}")


def _samples(row: RankRow) -> List[float]:
    return [_key(v) for v in row.samples()]


def _compare_batches(rows: List[RankRow], ok: List[int]) -> List[RankFinding]:
    seen = [r for r in ok if not math.isnan(rows[r][Header.BATCH])]
    if len(seen) < 2:
        return []
    sizes = {r: rows[r][Header.BATCH] for r in seen}
    spread = (max(sizes.values()) - min(sizes.values())) / max(sizes.values())
    out: List[RankFinding] = [RankFinding("dist.batch_size_divergence", spread) if spread == 0 else Split(
        "dist.batch_size_divergence", spread, "batch sizes", _split([(r, [v]) for r, v in sizes.items()]),
        tuple(sorted(sizes.items())))]
    pairs = tuple((a, b) for i, a in enumerate(seen) for b in seen[i + 1:]
                  if sizes[a] == sizes[b] and rows[a][Header.SAMPLES] > 0 and _samples(rows[a]) == _samples(rows[b]))
    out.append(IdenticalBatches("dist.batch_overlap", float(len(pairs)), pairs))
    owners: Dict[float, set] = {}
    for r in seen:
        for v in _samples(rows[r]):
            owners.setdefault(v, set()).add(r)
    shared = [rs for rs in owners.values() if len(rs) > 1]
    sharing = tuple(sorted({r for rs in shared for r in rs}))
    out.append(SharedSamples("dist.shared_samples", float(len(shared)), sharing))
    return out


def _compare_lr(rows: List[RankRow], ok: List[int]) -> List[RankFinding]:
    seen = [r for r in ok if not math.isnan(rows[r][Header.LR_MAX])]
    if len(seen) < 2:
        return []
    settings = [(r, [rows[r][Header.GROUPS], rows[r][Header.LR_MAX], rows[r][Header.LR_HASH]]) for r in seen]
    groups = _split(settings)
    if len(groups) == 1:
        return [RankFinding("dist.lr_divergence", 0.0)]
    worst = 1.0 if len({rows[r][Header.GROUPS] for r in seen}) > 1 else 0.0
    for field in (Header.LR_MAX, Header.LR_HASH):
        vals = [rows[r][field] for r in seen]
        top = max(abs(v) for v in vals)
        if top > 0:
            worst = max(worst, (max(vals) - min(vals)) / top)
    return [Split("dist.lr_divergence", worst, "learning rates", groups,
                  tuple((r, rows[r][Header.LR_MAX]) for r in seen), "largest per rank: ")]
