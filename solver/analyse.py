"""analyse(): shape questions about a model, answered before a single optimizer step."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import sympy
from torch import nn

from solver import confirm, z3query
from solver.call import CallSpec, TensorSlot
from solver.reasons import plain_reason
from solver.results import Counterexample, Proved, Result, Unknown
from solver.symbolic import SymbolicRun, symbolic_run

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class Probe:
    size: Tuple[int, ...]        # input size without the batch dim
    accepted: Optional[bool]     # None: undecided
    blame: Tuple[str, ...]       # modules whose guards reject it


@dataclass(frozen=True)
class ShapeReport:
    """Symbolic shapes, accepted sizes, and cost of a model as functions of its input."""

    input_names: Tuple[str, ...]                 # e.g. ("B", "3", "H", "W")
    output_shape: Tuple[str, ...]
    batch_polymorphic: Result
    output_width: Optional[int]
    label_check: Optional[Result]
    side_min: Optional[int]                      # of the square side or the sequence length
    side_max: Optional[int]
    guards: Tuple[Tuple[str, str], ...]          # (expression, module)
    probes: Tuple[Probe, ...]
    stages: Tuple[Tuple[str, Tuple[str, ...]], ...]
    flops: str
    activation_bytes: str
    notes: Tuple[str, ...]
    seconds: float
    domain_kind: str = ""                        # "square side", "sequence length" or "" (none)
    call: str = ""                               # how the model was called: model(Tensor[8, 12], targets=...)
    _run: Optional[SymbolicRun] = field(default=None, repr=False, compare=False)
    _symbols: Tuple[Any, ...] = field(default=(), repr=False, compare=False)

    @property
    def batch_index(self) -> int:
        """The primary input's batch dim (1 for a sequence-first [T, B, F] input)."""
        return self.input_names.index("B") if "B" in self.input_names else 0

    def _subs(self, input_shape: Sequence[int]) -> Dict[Any, int]:
        return {s: int(v) for s, v in zip(self._symbols, input_shape) if isinstance(s, sympy.Symbol)}

    def cost_at(self, input_shape: Sequence[int]) -> Tuple[Optional[int], Optional[int]]:
        """(FLOPs, activation bytes) of one forward at a concrete input shape (with batch)."""
        if self._run is None:
            return None, None
        values = self._subs(input_shape)
        return _int(self._run.flops, values), _int(self._run.activation_bytes, values)

    def stage_shape_at(self, module: str, input_shape: Sequence[int]) -> Optional[Tuple[int, ...]]:
        """A stage's output shape at a concrete input shape (with batch)."""
        if self._run is None:
            return None
        values = self._subs(input_shape)
        for name, dims in reversed(self._run.records):
            if name == module or name.startswith(module + "."):
                got = [_int(d, values) for d in dims]
                return None if any(g is None for g in got) else tuple(got)  # type: ignore[misc]
        return None

    def domain_text(self) -> str:
        """The accepted input sizes in words: square side (images), sequence length
        ([B, T, F] or token ids [B, T]), or why the question does not apply."""
        if not self.domain_kind:
            return "the input has no symbolic spatial or sequence dim: the side question does not apply"
        if self.side_min is None:
            return f"{self.domain_kind} unknown"
        top = self.side_max if self.side_max is not None else "unbounded"
        return f"{self.domain_kind} {self.side_min}..{top}"

    def to_json(self) -> Dict[str, Any]:
        return {
            "output": {"shape": list(self.output_shape), "batch_polymorphic": self.batch_polymorphic.status,
                       "detail": str(self.batch_polymorphic), "width": self.output_width},
            "label_check": None if self.label_check is None else {
                "status": self.label_check.status, "detail": str(self.label_check)},
            "domain": {"kind": self.domain_kind or None, "side_min": self.side_min, "side_max": self.side_max,
                       "guards": [{"expr": e, "module": m} for e, m in self.guards]},
            "probes": [{"size": list(p.size), "accepted": p.accepted, "blame": list(p.blame)}
                       for p in self.probes],
            "stages": [{"module": m, "shape": list(s)} for m, s in self.stages],
            "cost": {"flops": self.flops, "activation_bytes": self.activation_bytes},
            "input": list(self.input_names), "call": self.call, "notes": list(self.notes), "seconds": round(self.seconds, 3),
        }


def _int(e: Any, values: Dict[Any, int]) -> Optional[int]:
    try:
        v = e.subs(values) if hasattr(e, "subs") else e
        return int(v)
    except (TypeError, ValueError):
        return None


def _names(slot: TensorSlot, batch_index: int) -> List[str]:
    """The primary input's dims in words: B at the batch dim, H/W/D for an image's
    spatial dims, T/U/V for sequence dims, the size itself for a fixed dim."""
    image = slot.dtype.is_floating_point and len(slot.shape) >= 4
    spatial = ["H", "W", "D"] if image else ["T", "U", "V"]
    out, k = [], 0
    for i, d in enumerate(slot.dims):
        if i == batch_index and isinstance(d, str):
            out.append("B")
        elif isinstance(d, str):
            out.append(spatial[k] if k < len(spatial) else f"S{k}")
            k += 1
        else:
            out.append(str(d))
    return out


def _stage_names(model: nn.Module) -> List[str]:
    names = []
    for name, child in model.named_children():
        if isinstance(child, CONTAINERS):
            names += [f"{name}.{n}" for n, _ in child.named_children()]
        else:
            names.append(name)
    return names


def analyse(model: nn.Module, example_inputs: Any, kwargs: Optional[Mapping[str, Any]] = None, *,
            label_classes: Optional[int] = None, probes: Sequence[Sequence[int]] = (),
            timeout_ms: int = 2000) -> ShapeReport:
    """Answers the shape questions for `model` called as `model(*example_inputs, **kwargs)`,
    the way the script called it (solver/call.py: non-tensor arguments passed through,
    targets and states tied to the primary input's batch and sequence sizes).

    Never raises on a model it cannot handle: what it cannot decide is Unknown with the
    reason in words. A size is called rejected (a batch-size counterexample, a rejected
    probe, a domain bound) only when a concrete forward of the meta copy, called the same
    way, fails there too, since torch's guards also hold branch conditions that are no
    requirement (solver/confirm.py). Raises TypeError only for arguments that are not a
    module and a call with a tensor."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"analyse() needs an nn.Module, got {type(model).__name__}")
    try:
        spec = CallSpec.of(example_inputs, kwargs)
    except TypeError:
        raise TypeError("analyse() needs at least one example input tensor") from None
    start = time.perf_counter()
    notes: List[str] = []
    run: Optional[SymbolicRun] = None
    failures: List[str] = []
    for concrete in (False, True):
        try:
            run = symbolic_run(model, spec, concrete=concrete)
            break
        except Exception as e:  # unsupported ops surface as many exception types
            failures.append(plain_reason(e))
    if failures:
        when = "with symbolic sizes" if run is not None else "with symbolic or fixed sizes"
        notes.append(f"the model could not run on fake tensors {when}: {'; '.join(dict.fromkeys(failures))}")
    if run is None:
        reason = notes[-1]
        return ShapeReport(tuple(_names(spec.x0, 0)), (), Unknown(reason), None, None, None, None, (), (),
                           (), "?", "?", tuple(notes), time.perf_counter() - start, call=spec.describe())
    if run.concrete:
        notes.append("sizes are concrete (the symbolic run failed): shape facts hold for this input only")
    if run.ruled:
        notes.append(f"RNN shapes from invar's own rule: {', '.join(run.ruled)}")
    syms, bi, x0 = run.symbols, run.batch_index, spec.x0
    names = _names(x0, bi)
    rename = {s: sympy.Symbol(n) for s, n in zip(syms, names) if isinstance(s, sympy.Symbol)}
    show = lambda e: str(e.xreplace(rename)) if hasattr(e, "xreplace") else str(e)  # noqa: E731
    guards = [g for g, _ in run.guards]
    positive = [str(s) for s in rename]
    # sizes torch's path pinned to the example's (an unrolled RNN, a Python loop over a
    # size): its guards say nothing about other sizes. An own rule's pin is real.
    pinned = {s: vo for s, vo in run.specialised.items() if vo[1] not in run.ruled}
    out = run.output or []
    width = int(out[-1]) if out and not hasattr(out[-1], "free_symbols") else None
    batch = syms[bi] if syms and isinstance(syms[bi], sympy.Symbol) else None
    if run.output is None:
        poly: Result = Unknown("the model has no tensor output")
    elif not out:
        poly = Unknown("the model's output is a 0-dim tensor (no batch dim)")
    elif batch is None:
        poly = Unknown("the batch size is not symbolic (concrete fallback)")
    elif batch in pinned:
        poly = Unknown(_pinned_reason(model, "batch size", *pinned[batch]))
    else:
        names_of = {str(k): str(v) for k, v in rename.items()}
        poly = confirm.batch_polymorphism(model, run, show, names_of, timeout_ms)
        if isinstance(poly, Counterexample):  # the model in the input's names (B, H, T)
            poly = Counterexample(poly.what, {names_of.get(k, k): v for k, v in poly.model.items()})
    label = None
    if label_classes is not None:
        if width is None:
            label = Unknown("the output width is not a constant")
        elif width == label_classes:
            label = Proved(f"output width {width} == {label_classes} label classes")
        else:
            label = Counterexample(f"output width {width} != {label_classes} label classes",
                                   {"width": width, "classes": label_classes})
    side_min = side_max = None
    spatial = [s for s, n in zip(syms, names) if isinstance(s, sympy.Symbol) and n in ("H", "W", "T")]
    kind = "" if not spatial else "sequence length" if "T" in names else "square side"
    for s in (s for s in spatial if s in pinned):
        notes.append(f"{kind} unknown: " + _pinned_reason(model, kind, *pinned[s]))
    if spatial and not any(s in pinned for s in spatial):
        square = [sympy.Eq(spatial[0], s) for s in spatial[1:]]
        bfix = [sympy.Eq(batch, int(x0.shape[bi]))] if batch is not None else []
        side_min = z3query.extremum(str(spatial[0]), guards + square + bfix, positive, False, timeout_ms)
        side_max = z3query.extremum(str(spatial[0]), guards + square + bfix, positive, True, timeout_ms)
        # each bound says the next side is rejected: confirmed concretely like any rejection
        for step in (-1, 1):
            bound = side_min if step < 0 else side_max
            if bound is None or (step < 0 and bound <= 1):
                continue
            moved, note = confirm.widen(model, run, spatial, bound, step, kind)
            if note:
                notes.append(note)
            if moved is None:  # no bound confirmed on this side: the domain is unknown
                side_min = side_max = None
                break
            side_min, side_max = (moved, side_max) if step < 0 else (side_min, moved)
    probe_results = [_probe(model, run, size, pinned, show, notes) for size in probes]
    stages = []
    for stage in _stage_names(model):
        last = next((dims for name, dims in reversed(run.records)
                     if name == stage or name.startswith(stage + ".")), None)
        if last is not None:
            stages.append((stage, tuple(show(d) for d in last)))
    return ShapeReport(
        input_names=tuple(names), output_shape=tuple(show(d) for d in out), batch_polymorphic=poly,
        output_width=width, label_check=label, side_min=side_min, side_max=side_max,
        guards=tuple((show(g), o) for g, o in run.guards), probes=tuple(probe_results),
        stages=tuple(stages), flops=show(run.flops), activation_bytes=show(run.activation_bytes),
        notes=tuple(notes), seconds=time.perf_counter() - start, domain_kind=kind, call=spec.describe(),
        _run=run, _symbols=tuple(syms))


def _probe(model: nn.Module, run: SymbolicRun, size: Sequence[int], pinned: Dict[Any, Tuple[int, str]],
           show: Callable[[Any], str], notes: List[str]) -> Probe:
    """Whether an input size (without the batch dim) is accepted: the guards' answer, a
    rejection confirmed by a concrete forward called the script's way."""
    syms, bi = run.symbols, run.batch_index
    full = [int(v) for v in size]
    full.insert(bi, int(run.spec.x0.shape[bi]))
    if len(full) != len(syms):
        return Probe(tuple(size), None, (f"expected {len(syms) - 1} dims",))
    values = {s: v for s, v in zip(syms, full) if isinstance(s, sympy.Symbol)}
    fixed_ok = all(int(s) == v for s, v in zip(syms, full) if not isinstance(s, sympy.Symbol))
    if fixed_ok and any(values[s] != pinned[s][0] for s in values if s in pinned):
        return Probe(tuple(size), None, ())  # a size torch's path pinned
    accepted, blame = z3query.check_concrete(run.guards, values)
    if not fixed_ok:
        accepted, blame = False, ["(input channels)"] + blame
    if accepted is False:  # a rejection is reported only when a concrete forward agrees
        accepted, note = confirm.rejection(model, run, full, values, show)
        blame = [] if accepted else blame
        if note:
            notes.append(note)
    return Probe(tuple(size), accepted, tuple(blame))


def _pinned_reason(model: nn.Module, what: str, value: int, owner: str) -> str:
    """Why a size has no symbolic answer: who specialised it to the example's value."""
    sub: Optional[nn.Module] = None
    if owner:
        try:
            sub = model.get_submodule(owner)
        except AttributeError:
            pass
    if isinstance(sub, (nn.RNNBase, nn.RNNCellBase)):
        who = f"the model's RNN `{owner}` ({type(sub).__name__})"
    elif owner:
        who = confirm.owner_text(model, owner)
    else:
        who = ("the model's own forward (a Python loop, a branch, or an op against a fixed-size tensor "
               "such as a view or a broadcast with a parameter, over that size)")
    return (f"{who} specialises the {what} to {value} on torch's symbolic path, "
            f"so other values of it are not analysed")


def prepool_stage(report: ShapeReport, input_shape: Sequence[int]) -> Optional[Tuple[str, Tuple[int, ...]]]:
    """The last stage whose output still has spatial dims (the map global pooling sees),
    with its spatial size at a concrete input shape."""
    constant = {str(d) for d in range(4096)}
    for module, dims in reversed(report.stages):
        # a map that still depends on the input size (not an adaptive pool's fixed 1x1)
        if len(dims) >= 4 and any(d not in constant for d in dims[2:]):
            shape = report.stage_shape_at(module, input_shape)
            if shape is not None:
                return module, tuple(shape[2:])
    return None
