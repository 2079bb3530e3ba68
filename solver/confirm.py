"""Symbolic verdicts checked on a concrete forward before they are reported.

A guard on torch's symbolic path is a condition of the branch the example took, not
always a requirement of the model: a contiguity test on a transposed view (what
nn.MultiheadAttention(batch_first=True) feeds its in-projection) asks whether the batch
size is 1 and records Ne(B, 1), though B=1 runs fine. So no size is called rejected, and
no output called malformed, until a forward of the model's meta copy at that size agrees
(solver.symbolic.concrete_run). A size the concrete forward accepts is excluded and the
question asked again, at most MAX_CONFIRMATIONS times; past that the answer is Unknown.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import sympy
from torch import nn

from solver import z3query
from solver.results import Counterexample, Proved, Result, Unknown
from solver.symbolic import ConcreteRun, SymbolicRun, concrete_run

MAX_CONFIRMATIONS = 3  # concrete forwards one question may spend on symbolic-path artefacts


def owner_text(model: nn.Module, owner: str) -> str:
    """A guard's owner in words: "module `attn` (MultiheadAttention)" or the model's forward."""
    if not owner:
        return f"the model's own forward ({type(model).__name__})"
    try:
        return f"module `{owner}` ({type(model.get_submodule(owner)).__name__})"
    except AttributeError:
        return f"module `{owner}`"


def guards_text(model: nn.Module, failing: Sequence[Tuple[Any, str]], show: Callable[[Any], str]) -> str:
    """"guard Ne(B, 1) of module `attn` (MultiheadAttention)", several joined by "and"."""
    parts = [f"{show(g)} of {owner_text(model, o)}" for g, o in failing[:3]]
    more = f" (+{len(failing) - 3} more)" if len(failing) > 3 else ""
    return ("guard " if len(failing) == 1 else "guards ") + " and ".join(parts) + more


def _rejects(failing: Sequence[Any]) -> str:
    return "rejects" if len(failing) <= 1 else "reject"


def _values(run: SymbolicRun, point: Dict[str, int]) -> Dict[Any, int]:
    """Every input symbol's value: the point's where it has one, the example's otherwise."""
    return {d: int(point.get(str(d), size)) for d, size in zip(run.symbols, run.spec.x0.shape)
            if isinstance(d, sympy.Symbol)}


def _at(e: Any, values: Dict[Any, int]) -> Optional[int]:
    try:
        return int(e.subs(values) if hasattr(e, "subs") else e)
    except (TypeError, ValueError):
        return None


def _point_text(run: SymbolicRun, values: Dict[Any, int], names: Dict[str, str]) -> str:
    """"B=1", plus the primary input's sizes that differ from the example's ("B=1, T=7")."""
    bi, shape = run.batch_index, run.spec.x0.shape
    parts = [f"{names.get(str(s), str(s))}={values[s]}" for i, s in enumerate(run.symbols)
             if isinstance(s, sympy.Symbol) and (i == bi or values[s] != int(shape[i]))]
    return ", ".join(parts)


def _dims_text(dims: Optional[Sequence[int]]) -> str:
    return "no tensor" if dims is None else f"[{', '.join(map(str, dims))}]"


def _run(model: nn.Module, run: SymbolicRun, sizes: Dict[int, int]) -> ConcreteRun:
    """concrete_run, with a failure trusted only when the example's own sizes run: else
    the fake-tensor path cannot run this model and the failure is undecided."""
    conc = concrete_run(model, run.spec, sizes)
    if conc.decided and conc.error:
        example = concrete_run(model, run.spec, {})
        if not example.ok:
            return ConcreteRun(conc.shapes, None, f"{conc.error}; at the example's own sizes too: "
                               f"{example.error}", conc.module, decided=False)
    return conc


def batch_polymorphism(model: nn.Module, run: SymbolicRun, show: Callable[[Any], str], names: Dict[str, str],
                       timeout_ms: int = 2000) -> Result:
    """Is the output [B, K] for every batch size B >= 1 (B in the dim where the example
    has it, the other dims independent of B), and is every B accepted? z3 over the run's
    guards, each counterexample confirmed by a concrete forward before it is one.

    `show` renders an expression in the input's names, `names` maps a symbol's name to
    its input name (s0 -> B)."""
    syms, out, bi = run.symbols, run.output or [], run.batch_index
    batch = syms[bi]
    ob = next((i for i, d in enumerate(out) if d == batch), 0)  # the output's batch dim
    guards = [g for g, _ in run.guards]
    positive = [str(s) for s in syms if isinstance(s, sympy.Symbol)]
    claim = sympy.And(sympy.Eq(out[ob], batch), *[sympy.Eq(d, d.subs(batch, 1)) if hasattr(d, "subs") else True
                                                   for i, d in enumerate(out) if i != ob])
    fixed = [sympy.Eq(s, int(v)) for i, (s, v) in enumerate(zip(syms, run.spec.x0.shape))
             if i != bi and isinstance(s, sympy.Symbol)]
    shape = f"[{', '.join(show(d) for d in out)}]"
    form = f"output is {shape} with dim {ob} = B for every B >= 1"
    example = _values(run, {})
    excluded: List[Any] = []      # points a concrete forward accepted, as sympy "not this point"
    artefacts: List[Tuple[str, List[Tuple[Any, str]], ConcreteRun]] = []
    while True:
        r = z3query.prove(claim, guards + excluded, positive, form, timeout_ms)
        if isinstance(r, Proved):
            r = z3query.prove(sympy.And(*guards) if guards else sympy.true, fixed + excluded, positive,
                              "every batch size B >= 1 is accepted", timeout_ms)
        if not isinstance(r, Counterexample):
            break
        values = _values(run, r.model)
        at = _point_text(run, values, names)
        failing, _ = z3query.failing_guards(run.guards, values)
        why = guards_text(model, failing, show) if failing else ""
        if len(artefacts) == MAX_CONFIRMATIONS:
            seen = ", ".join(a for a, _, _ in artefacts)
            return Unknown(f"{why or 'the symbolic path'} {_rejects(failing)} {at} on torch's symbolic path, "
                           f"but a concrete forward accepted each of the {MAX_CONFIRMATIONS} sizes its guards "
                           f"rejected before ({seen}): they are artefacts of the symbolic path, and other batch "
                           f"sizes were not checked concretely")
        conc = _run(model, run, run.sizes(values))
        widths = tuple(_at(d, {**values, batch: example[batch]}) for d in out)
        if not conc.decided:
            return Unknown(f"{why or 'the symbolic run'} {_rejects(failing)} {at}, and a concrete forward "
                           f"could not confirm it ({conc.error})")
        if conc.error:
            where = owner_text(model, conc.module)
            if failing:
                inside = "" if conc.module in {o for _, o in failing} else f", in {where}"
                return Counterexample(f"{at} is rejected by {why}: a concrete forward at that size fails too "
                                      f"({conc.error}{inside})", r.model)
            return Counterexample(f"{at} is rejected: a concrete forward fails in {where} ({conc.error}), "
                                  f"though no guard of the symbolic run excludes it", r.model)
        if conc.output is None or len(conc.output) != len(out) or conc.output[ob] != values[batch] or any(
                w is not None and w != c for i, (w, c) in enumerate(zip(widths, conc.output)) if i != ob):
            return Counterexample(f"output {shape} is not [B, K] for every B: at {at} a concrete forward gives "
                                  f"{_dims_text(conc.output)}", r.model)
        artefacts.append((at, failing, conc))
        excluded.append(sympy.Not(sympy.And(*[sympy.Eq(s, v) for s, v in values.items()
                                             if str(s) in r.model])))
    if not isinstance(r, Proved):
        return r
    if not artefacts:
        return Proved(form)
    rejected: Dict[Tuple[str, str], Tuple[Any, str]] = {}
    for _, failing, _ in artefacts:
        rejected.update({(str(g), o): (g, o) for g, o in failing})
    who = guards_text(model, list(rejected.values()), show) if rejected else "the symbolic path"
    seen = "; ".join(f"at {at} gives {_dims_text(c.output)}" for at, _, c in artefacts)
    one = len(rejected) <= 1
    return Proved(form, note=f"{who} {'is an artefact' if one else 'are artefacts'} of torch's symbolic path: "
                             f"{'it rejects' if one else 'they reject'} {', '.join(a for a, _, _ in artefacts)}, "
                             f"but a concrete forward {seen}")


def rejection(model: nn.Module, run: SymbolicRun, shape: Sequence[int], values: Dict[Any, int],
              show: Callable[[Any], str]) -> Tuple[Optional[bool], str]:
    """A probe the guards reject at `values` (the primary input's symbols), checked
    concretely: (accepted, note). False when a forward at `shape` (the primary input's,
    the tensors tied to it moved along) fails too, True with a note when it runs, None
    with a note when the fake-tensor path cannot run it."""
    failing, _ = z3query.failing_guards(run.guards, values)
    conc = _run(model, run, {i: int(d) for i, d in enumerate(shape)})
    size = "x".join(str(d) for i, d in enumerate(shape) if i != run.batch_index)
    why = guards_text(model, failing, show) if failing else "the symbolic run"
    if not conc.decided:
        return None, (f"probe {size}: {why} {_rejects(failing)} it, and a concrete forward could not confirm it "
                      f"({conc.error})")
    if conc.error:
        return False, ""
    return True, (f"probe {size}: {why} {_rejects(failing)} it on torch's symbolic path only: a concrete forward "
                  f"accepts it (output {_dims_text(conc.output)})")


def widen(model: nn.Module, run: SymbolicRun, sides: Sequence[Any], bound: int, step: int,
          kind: str) -> Tuple[Optional[int], str]:
    """A side bound from the guards, checked concretely one step beyond it (`step` -1 for
    the lower bound, +1 for the upper): the bound as confirmed, moved while a concrete
    forward accepts the next side (None past MAX_CONFIRMATIONS), and a note when moved."""
    side, accepted = bound, []
    for _ in range(MAX_CONFIRMATIONS):
        if side + step < 1:
            break
        values = _values(run, {str(s): side + step for s in sides})
        if not concrete_run(model, run.spec, run.sizes(values)).ok:
            break
        side += step
        accepted.append(side)
    else:
        return None, (f"{kind} unknown: the guards bound it at {bound}, but a concrete forward accepts "
                      f"{', '.join(map(str, accepted))} too (guards of torch's symbolic path, not the model's)")
    if not accepted:
        return bound, ""
    edge = "lower" if step < 0 else "upper"
    return side, (f"{kind} {edge} bound {bound} from the guards is an artefact of torch's symbolic path: a "
                  f"concrete forward accepts {', '.join(map(str, accepted))}")
