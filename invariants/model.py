"""The invariant set as plain, immutable data: what `invar infer` writes, people review,
and `invar check` evaluates. No I/O here; `invariants.invfile` reads and writes files.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

SCHEMA_VERSION = 1

PHASES = ("train", "eval", "any")
SEVERITIES = ("error", "warning")
SEVERITY_RANK = {"warning": 1, "error": 2}  # higher is more severe


def at_least(severity: str, level: str) -> bool:
    """Whether `severity` is `level` or more severe (an unknown severity is neither)."""
    return SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK[level]

STATUSES = ("proposed", "accepted", "disabled")
# Where an entry comes from: mined from reference runs (the default, not written) or the
# built-in set that holds for virtually every correct pipeline (invariants/builtin.py).
ORIGINS = ("mined", "builtin")
# The fixed order of an entry's keys in a written file.
ENTRY_KEYS = ("id", "template", "target", "expect", "when", "severity", "status", "locus",
              "origin", "support", "why")
# A target holding one WILDCARD quantifies over every observed variable it matches
# (`block.*.no_grad_fraction`: every block); later targets with a WILDCARD take the text
# the first target's matched (`input.c*.mean` with `input.c*.std`: the same channel).
WILDCARD = "*"
# meta keys people look for first; any others follow in sorted order.
META_ORDER = ("script", "args", "runs", "steps", "seed", "created", "torch", "invar")


class FrozenMap(Mapping[str, Any]):
    """A read-only mapping over a private copy of plain data (dicts, lists, scalars).

    It compares equal to any mapping with the same items (so `inv.expect == {"min": 0.0}`
    works) and is hashable, which makes `Invariant` and `InvariantSet` hashable. Nested
    lists stay lists so that values keep the types the file and the templates use; they
    are copies owned by this mapping.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Optional[Mapping[str, Any]] = None):
        self._data: Dict[str, Any] = _copy_plain(dict(data or {}))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(_freeze(self._data))

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


@functools.lru_cache(maxsize=None)
def target_pattern(target: str) -> Optional["re.Pattern[str]"]:
    """The regular expression of a quantified target (its WILDCARD matches one or more
    characters, dots included: block names have dots); None for a plain variable name."""
    if WILDCARD not in target:
        return None
    head, _, tail = target.partition(WILDCARD)
    return re.compile(re.escape(head) + "(.+)" + re.escape(tail) + r"\Z")


def _copy_plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _copy_plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_copy_plain(x) for x in v]
    return v


def _freeze(v: Any) -> Any:
    # Hashable projection; key order is irrelevant to equality, so it must be to the hash.
    if isinstance(v, Mapping):
        return frozenset((k, _freeze(x)) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


@dataclass(frozen=True)
class When:
    """Where an invariant applies: a phase (train | eval | any) and an inclusive step
    window; an end of None leaves the window open."""

    phase: str = "train"
    steps: Tuple[int, Optional[int]] = (0, None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))


@dataclass(frozen=True)
class Support:
    """The evidence behind an invariant: reference runs and observations it was fitted on,
    the observed span ([min, max] for numbers, the observed values for categories), and the
    first step any reference run observed it at (None: not recorded)."""

    runs: int
    observations: int
    span: Optional[Tuple[Any, ...]] = None
    first: Optional[int] = None

    def __post_init__(self) -> None:
        if self.span is not None:
            object.__setattr__(self, "span", tuple(self.span))


@dataclass(frozen=True)
class Invariant:
    """One reviewed (or to-be-reviewed) fact about healthy training runs.

    `target` names traced variables (docs/observations.md); `expect` holds the template's
    parameters (registry `EXPECT`); `locus` is the module/block it is about, None for the
    whole run. Sequences and mappings passed in are copied into immutable forms.
    """

    id: str
    template: str
    target: Tuple[str, ...]
    expect: Mapping[str, Any]
    when: When
    severity: str
    status: str
    support: Support
    why: str
    locus: Optional[str] = None
    origin: str = "mined"

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", tuple(self.target))
        if not isinstance(self.expect, FrozenMap):
            object.__setattr__(self, "expect", FrozenMap(self.expect))

    @property
    def quantified(self) -> bool:
        """Whether the invariant quantifies over variables (its first target has a WILDCARD)."""
        return WILDCARD in self.target[0]

    def instance(self, variable: str) -> Optional["Invariant"]:
        """The invariant about `variable` that this quantified one stands for, if its first
        target matches it: every WILDCARD replaced by what it matched, the id `ID[match]`;
        None otherwise."""
        pattern = target_pattern(self.target[0])
        m = pattern.match(variable) if pattern is not None else None
        if m is None:
            return None
        return dataclasses.replace(self, id=f"{self.id}[{m.group(1)}]",
                                   target=tuple(t.replace(WILDCARD, m.group(1), 1) for t in self.target))

    def to_data(self) -> Dict[str, Any]:
        """Plain data in file order (ENTRY_KEYS; expect in the template's EXPECT order)."""
        from invariants import registry  # lazy: registry imports every template module
        try:
            order = tuple(registry.template(self.template).EXPECT)
        except KeyError:
            order = ()  # the file validator names the unknown template
        s = self.support
        return {
            "id": self.id, "template": self.template, "target": list(self.target),
            "expect": _ordered(self.expect, order),
            "when": {"phase": self.when.phase, "steps": list(self.when.steps)},
            "severity": self.severity, "status": self.status, "locus": self.locus,
            **({} if self.origin == "mined" else {"origin": self.origin}),
            "support": {"runs": s.runs, "observations": s.observations,
                        "span": None if s.span is None else _canonical(s.span),
                        **({} if s.first is None else {"first": s.first})},
            "why": self.why,
        }


def make_id(template: str, target: Sequence[str], phase: str) -> str:
    """A stable, readable id: `range:input.mean@train`, `equal:a,b@eval`.

    Built from names only (never from fitted numbers), so re-mining the same pipeline
    gives the same ids and `invar diff` can line entries up.
    """
    return f"{template}:{','.join(target)}@{phase}"


def sort_key(inv: Invariant) -> Tuple[str, str, str]:
    """The canonical order of invariants in a file: by block, then template, then id."""
    return (inv.locus or "", inv.template, inv.id)


def _ordered(m: Mapping[str, Any], first: Tuple[str, ...] = ()) -> Dict[str, Any]:
    # `first` keys in that order, then the rest sorted: the same data always reads the same.
    keys = [k for k in first if k in m] + sorted(k for k in m if k not in first)
    return {k: _canonical(m[k]) for k in keys}


def _canonical(v: Any) -> Any:
    if isinstance(v, Mapping):
        return _ordered(v)
    if isinstance(v, (list, tuple)):
        return [_canonical(x) for x in v]
    return v


@dataclass(frozen=True)
class InvariantSet:
    """A schema version, how the reference runs were made (`meta`: script, args, runs,
    steps, created, torch and invar versions, ...), and the invariants; ids are unique."""

    schema: int
    meta: Mapping[str, Any] = field(default_factory=dict)
    invariants: Tuple[Invariant, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.meta, FrozenMap):
            object.__setattr__(self, "meta", FrozenMap(self.meta))
        object.__setattr__(self, "invariants", tuple(self.invariants))
        seen: Dict[str, int] = {}
        for i, inv in enumerate(self.invariants):
            if inv.id in seen:
                raise ValueError(f"duplicate invariant id {inv.id!r} "
                                 f"(positions {seen[inv.id]} and {i})")
            seen[inv.id] = i

    def to_data(self) -> Dict[str, Any]:
        """Plain, canonically ordered data (what invariant files hold): meta keys in
        META_ORDER then sorted, invariants sorted by (locus or "", template, id)."""
        invs = sorted(self.invariants, key=sort_key)
        return {"schema": self.schema, "meta": _ordered(self.meta, META_ORDER),
                "invariants": [i.to_data() for i in invs]}

    def by_id(self) -> Dict[str, Invariant]:
        """id -> invariant, in set order."""
        return {inv.id: inv for inv in self.invariants}

    def active(self) -> Tuple[Invariant, ...]:
        """The invariants `invar check` evaluates: every status except `disabled`."""
        return tuple(inv for inv in self.invariants if inv.status != "disabled")

    def with_status(self, id: str, status: str) -> "InvariantSet":
        """A new set in which invariant `id` has `status`; KeyError for an unknown id."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r} (expected one of {', '.join(STATUSES)})")
        if id not in self.by_id():
            raise KeyError(f"no invariant with id {id!r} in this set")
        return dataclasses.replace(self, invariants=tuple(
            dataclasses.replace(inv, status=status) if inv.id == id else inv
            for inv in self.invariants))
