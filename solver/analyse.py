"""analyse(): shape questions about a model, answered before a single optimizer step."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import sympy
import torch
from torch import nn

from solver import confirm, z3query
from solver.results import Counterexample, Proved, Result, Unknown
from solver.symbolic import SymbolicRun, dynamic_dims, symbolic_run

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
    _run: Optional[SymbolicRun] = field(default=None, repr=False, compare=False)
    _symbols: Tuple[Any, ...] = field(default=(), repr=False, compare=False)

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
            "input": list(self.input_names), "notes": list(self.notes), "seconds": round(self.seconds, 3),
        }


def _int(e: Any, values: Dict[Any, int]) -> Optional[int]:
    try:
        v = e.subs(values) if hasattr(e, "subs") else e
        return int(v)
    except (TypeError, ValueError):
        return None


def _names(x: torch.Tensor) -> List[str]:
    dyn = dynamic_dims(x)
    spatial = ["H", "W", "D"] if x.is_floating_point() and x.dim() >= 4 else ["T", "U", "V"]
    out, k = [], 0
    for i, d in enumerate(dyn):
        if i == 0:
            out.append("B")
        elif d:
            out.append(spatial[k] if k < len(spatial) else f"S{k}")
            k += 1
        else:
            out.append(str(int(x.shape[i])))
    return out


def _stage_names(model: nn.Module) -> List[str]:
    names = []
    for name, child in model.named_children():
        if isinstance(child, CONTAINERS):
            names += [f"{name}.{n}" for n, _ in child.named_children()]
        else:
            names.append(name)
    return names


def analyse(model: nn.Module, example_inputs: Any, *, label_classes: Optional[int] = None,
            probes: Sequence[Sequence[int]] = (), timeout_ms: int = 2000) -> ShapeReport:
    """Answers the shape questions for `model` called on `example_inputs`.

    Never raises on a model it cannot handle: what it cannot decide is Unknown with the
    reason. A size is called rejected (a batch-size counterexample, a rejected probe, a
    domain bound) only when a concrete forward of the meta copy fails there too, since
    torch's guards also hold branch conditions that are no requirement (solver/confirm.py).
    Raises TypeError only for arguments that are not a module and tensors."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"analyse() needs an nn.Module, got {type(model).__name__}")
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    inputs = tuple(x for x in inputs if isinstance(x, torch.Tensor))
    if not inputs:
        raise TypeError("analyse() needs at least one example input tensor")
    start = time.perf_counter()
    notes: List[str] = []
    run: Optional[SymbolicRun] = None
    for concrete in (False, True):
        try:
            run = symbolic_run(model, inputs, concrete=concrete)
            break
        except Exception as e:  # unsupported ops surface as many exception types
            notes.append(f"{'concrete' if concrete else 'symbolic'} run failed: "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    x0 = inputs[0]
    names = _names(x0)
    if run is None:
        reason = notes[-1] if notes else "the model could not be run on fake tensors"
        return ShapeReport(tuple(names), (), Unknown(reason), None, None, None, None, (), (),
                           (), "?", "?", tuple(notes), time.perf_counter() - start)
    if run.concrete:
        notes.append("sizes are concrete (the symbolic run failed): shape facts hold for this input only")
    if run.ruled:
        notes.append(f"RNN shapes from invar's own rule: {', '.join(run.ruled)}")
    syms = run.input_symbols[0]
    rename = {s: sympy.Symbol(n) for s, n in zip(syms, names) if isinstance(s, sympy.Symbol)}
    show = lambda e: str(e.xreplace(rename)) if hasattr(e, "xreplace") else str(e)  # noqa: E731
    guards = [g for g, _ in run.guards]
    positive = [str(s) for s in rename]
    # sizes torch's path pinned to the example's (an unrolled RNN, a Python loop over a
    # size): its guards say nothing about other sizes. An own rule's pin is real.
    pinned = {s: vo for s, vo in run.specialised.items() if vo[1] not in run.ruled}
    out = run.output or []
    width = int(out[-1]) if out and not hasattr(out[-1], "free_symbols") else None
    batch = syms[0] if syms and isinstance(syms[0], sympy.Symbol) else None
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
        poly = confirm.batch_polymorphism(model, inputs, run, show, names_of, timeout_ms)
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
        bfix = [sympy.Eq(batch, int(x0.shape[0]))] if batch is not None else []
        side_min = z3query.extremum(str(spatial[0]), guards + square + bfix, positive, False, timeout_ms)
        side_max = z3query.extremum(str(spatial[0]), guards + square + bfix, positive, True, timeout_ms)
        # each bound says the next side is rejected: confirmed concretely like any rejection
        for step in (-1, 1):
            bound = side_min if step < 0 else side_max
            if bound is None or (step < 0 and bound <= 1):
                continue
            moved, note = confirm.widen(model, inputs, run, spatial, bound, step, kind)
            if note:
                notes.append(note)
            if moved is None:  # no bound confirmed on this side: the domain is unknown
                side_min = side_max = None
                break
            side_min, side_max = (moved, side_max) if step < 0 else (side_min, moved)
    probe_results = []
    for size in probes:
        full = [int(x0.shape[0])] + [int(v) for v in size]
        if len(full) != len(syms):
            probe_results.append(Probe(tuple(size), None, (f"expected {len(syms) - 1} dims",)))
            continue
        values = {s: v for s, v in zip(syms, full) if isinstance(s, sympy.Symbol)}
        fixed_ok = all(int(s) == v for s, v in zip(syms, full) if not isinstance(s, sympy.Symbol))
        if fixed_ok and any(values[s] != pinned[s][0] for s in values if s in pinned):
            probe_results.append(Probe(tuple(size), None, ()))  # a size torch's path pinned
            continue
        accepted, blame = z3query.check_concrete(run.guards, values)
        if not fixed_ok:
            accepted, blame = False, ["(input channels)"] + blame
        if accepted is False:  # a rejection is reported only when a concrete forward agrees
            accepted, note = confirm.rejection(model, inputs, run, full, values, show)
            blame = [] if accepted else blame
            if note:
                notes.append(note)
        probe_results.append(Probe(tuple(size), accepted, tuple(blame)))
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
        notes=tuple(notes), seconds=time.perf_counter() - start, domain_kind=kind, _run=run,
        _symbols=tuple(syms))


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
