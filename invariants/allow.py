"""Declared exceptions: `--allow FAMILY[@BLOCK]` and allow-list files.

A deliberate choice (a frozen backbone, gradients cleared by hand, an evaluation pass over
the training data) is declared once instead of edited out of the code or the invariant
file; a check still evaluates every invariant, and reports the violations an exception
covers as allowed, each with the rule that allowed it, instead of failing on them.

An allow-list file holds one rule per line, `FAMILY[@BLOCK]`, optionally followed by
`# why`; blank lines and lines starting with `#` are ignored.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Collection, Iterable, List, Optional, Sequence, Tuple

from invariants.check import Violation
from invariants.errors import UsageError

if TYPE_CHECKING:
    from invariants.report import CheckReport


@dataclass(frozen=True)
class Allow:
    """One declared exception: violations of `family` (in `block`, its sub-blocks or blocks
    matching it as a glob, when given) are allowed; `source` says where it was declared."""

    family: str
    block: Optional[str] = None
    why: str = ""
    source: str = "--allow"

    def __str__(self) -> str:
        return self.family + (f"@{self.block}" if self.block else "")

    def covers(self, v: Violation) -> bool:
        """Whether this rule allows the violation."""
        if v.family != self.family:
            return False
        if self.block is None:
            return True
        locus = v.locus or ""
        return locus == self.block or locus.startswith(self.block + ".") or fnmatch.fnmatchcase(locus, self.block)


def parse(rule: str, families: Collection[str], source: str = "--allow", why: str = "") -> Allow:
    """`FAMILY[@BLOCK]` as an Allow; UsageError naming the rule for an unknown family."""
    family, _, block = rule.strip().partition("@")
    if not family or (block == "" and "@" in rule):
        raise UsageError(f"{source}: expected FAMILY or FAMILY@BLOCK (e.g. frozen@backbone), got {rule!r}")
    if family not in families:
        raise UsageError(f"{source}: unknown cause family {family!r} in {rule!r}; known: {', '.join(sorted(families))}")
    return Allow(family, block or None, why, source)


def read_file(path: str, families: Collection[str]) -> List[Allow]:
    """The rules of an allow-list file (one `FAMILY[@BLOCK]  # why` per line)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read the allow-list {path}: {getattr(e, 'strerror', None) or e}") from None
    out = []
    for n, line in enumerate(lines, 1):
        rule, _, why = line.partition("#")
        if rule.strip():
            out.append(parse(rule, families, f"{path}:{n}", why.strip()))
    return out


def split(violations: Iterable[Violation], rules: Sequence[Allow]) -> Tuple[List[Violation], List[Tuple[Violation, Allow]]]:
    """(violations no rule allows, (violation, the first rule that allows it) for the rest)."""
    kept, allowed = [], []
    for v in violations:
        rule = next((r for r in rules if r.covers(v)), None)
        if rule is None:
            kept.append(v)
        else:
            allowed.append((v, rule))
    return kept, allowed


def notes(allowed: Sequence[Tuple[Violation, Allow]], rules: Sequence[Allow]) -> List[str]:
    """Report lines: per rule, what it allowed (or that it allowed nothing this run)."""
    out = []
    for rule in rules:
        mine = [v for v, r in allowed if r is rule]
        why = f" ({rule.why})" if rule.why else ""
        if not mine:
            out.append(f"allowed by {rule.source} {rule}{why}: nothing this run")
            continue
        first = min(mine, key=lambda v: (v.step, v.id))
        loci = sorted({v.locus for v in mine if v.locus})
        where = f" in {', '.join(loci[:6])}" + (f" (+{len(loci) - 6} more)" if len(loci) > 6 else "") if loci else ""
        out.append(f"allowed by {rule.source} {rule}{why}: {len(mine)} {rule.family.replace('_', ' ')} "
                   f"violation(s){where} — first: {first.message}")
    return out


def apply(report: "CheckReport", rules: Sequence[Allow]) -> "CheckReport":
    """The report with the violations the rules allow taken out of its violations and root
    causes and named in its notes instead (every rule gets a line, even one that allowed
    nothing, so a stale exception is seen)."""
    if not rules:
        return report
    from invariants.explain import explain  # networkx: only checks with rules pay for it
    report.violations, allowed = split(report.violations, rules)
    report.causes = explain(report.violations)
    report.notes = report.notes + notes(allowed, rules)
    return report


def rules_from(options: Sequence[str], files: Sequence[str] = ()) -> List[Allow]:
    """The rules of `--allow` options and allow-list files, checked against the cause
    families invar reports (each has a fix hint)."""
    from invariants.explain import HINTS
    families = set(HINTS)
    return [parse(o, families) for o in options] + [r for f in files for r in read_file(f, families)]
