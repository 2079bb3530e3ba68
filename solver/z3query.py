"""The only module that imports z3 (lazily), with a fresh z3.Context for every query.

Guards and shape expressions arrive as sympy expressions from torch's ShapeEnv. They are
translated by a small table of rules (one per sympy/torch function); an expression with a
function the table lacks raises Unsupported naming it, which the caller turns into
Unknown(reason) rather than a crash.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import sympy

from solver.results import Counterexample, Proved, Result, Unknown

UNBOUNDED = 1 << 20  # sizes above this count as "no upper bound"


class Unsupported(Exception):
    """A sympy function without a z3 rule."""


def _z3() -> Any:
    import z3
    return z3


def _floordiv(z3: Any, a: Any, b: Any) -> Any:
    return a / b  # z3 Int division is floor division for positive divisors (sizes are)


# sympy/torch function name -> z3 builder over already-translated arguments
RULES: Dict[str, Callable[..., Any]] = {
    "Add": lambda z3, *a: z3.Sum(*a),                     # a + b + ...
    "Mul": lambda z3, *a: _product(a),                    # a * b * ...
    "FloorDiv": _floordiv,                                # torch's a // b
    "floor": lambda z3, a: a,                             # ints are already floored
    "Mod": lambda z3, a, b: a % b,                        # a mod b (b > 0)
    "PythonMod": lambda z3, a, b: a % b,                  # torch's Python-semantics mod
    "CleanDiv": lambda z3, a, b: a / b,                   # exact division
    "Max": lambda z3, *a: _fold(z3, a, lambda x, y: z3.If(x >= y, x, y)),
    "Min": lambda z3, *a: _fold(z3, a, lambda x, y: z3.If(x <= y, x, y)),
    "Equality": lambda z3, a, b: a == b,
    "Unequality": lambda z3, a, b: a != b,
    "StrictLessThan": lambda z3, a, b: a < b,
    "LessThan": lambda z3, a, b: a <= b,
    "StrictGreaterThan": lambda z3, a, b: a > b,
    "GreaterThan": lambda z3, a, b: a >= b,
    "And": lambda z3, *a: z3.And(*a),
    "Or": lambda z3, *a: z3.Or(*a),
    "Not": lambda z3, a: z3.Not(a),
}


def _product(args: Sequence[Any]) -> Any:
    out = args[0]
    for a in args[1:]:
        out = out * a
    return out


def _fold(z3: Any, args: Sequence[Any], f: Callable[[Any, Any], Any]) -> Any:
    out = args[0]
    for a in args[1:]:
        out = f(out, a)
    return out


class Translator:
    """sympy -> z3 in one fresh context; symbols become z3 Ints."""

    def __init__(self) -> None:
        z3 = _z3()
        self.z3 = z3
        self.ctx = z3.Context()
        self.symbols: Dict[str, Any] = {}

    def symbol(self, name: str) -> Any:
        if name not in self.symbols:
            self.symbols[name] = self.z3.Int(name, self.ctx)
        return self.symbols[name]

    def __call__(self, e: Any) -> Any:
        z3 = self.z3
        if isinstance(e, bool) or e is sympy.true or e is sympy.false:
            return z3.BoolVal(bool(e), self.ctx)
        if isinstance(e, int) or (isinstance(e, sympy.Integer)):
            return z3.IntVal(int(e), self.ctx)
        if isinstance(e, sympy.Rational):
            raise Unsupported(f"non-integer constant {e}")
        if isinstance(e, sympy.Symbol):
            return self.symbol(str(e))
        if isinstance(e, sympy.Pow) and e.exp.is_Integer and int(e.exp) > 0:
            return _product([self(e.base)] * int(e.exp))
        name = type(e).__name__
        rule = RULES.get(name)
        if rule is None:
            raise Unsupported(f"no z3 rule for {name} (in {str(e)[:80]})")
        return rule(z3, *[self(a) for a in e.args])


def _model(t: Translator, m: Any) -> Dict[str, int]:
    return {k: m[v].as_long() for k, v in t.symbols.items() if m[v] is not None}


def prove(claim: Any, assumptions: Sequence[Any], positive: Sequence[str], what: str,
          timeout_ms: int = 2000) -> Result:
    """Proved when assumptions ∧ ¬claim is unsat (symbols in `positive` are ≥ 1)."""
    try:
        t = Translator()
        s = t.z3.Solver(ctx=t.ctx)
        s.set("timeout", timeout_ms)
        s.add(*[t(a) for a in assumptions])
        s.add(t.z3.Not(t(claim)))
        for name in positive:
            s.add(t.symbol(name) >= 1)
        r = s.check()
    except Unsupported as e:
        return Unknown(str(e))
    if r == t.z3.unsat:
        return Proved(what)
    if r == t.z3.sat:
        return Counterexample(what, _model(t, s.model()))
    return Unknown(f"z3 gave up on '{what}' ({s.reason_unknown()})")


def extremum(target: str, assumptions: Sequence[Any], positive: Sequence[str], maximize: bool,
             timeout_ms: int = 2000) -> Optional[int]:
    """The smallest (largest) value of symbol `target` under the assumptions; None when
    unsatisfiable, unbounded (above UNBOUNDED) or undecided."""
    try:
        t = Translator()
        o = t.z3.Optimize(ctx=t.ctx)
        o.set("timeout", timeout_ms)
        o.add(*[t(a) for a in assumptions])
        for name in positive:
            o.add(t.symbol(name) >= 1)
        v = t.symbol(target)
        o.add(v <= UNBOUNDED)
        (o.maximize if maximize else o.minimize)(v)
        if o.check() != t.z3.sat:
            return None
        value = o.model()[v].as_long()
    except Unsupported:
        return None
    return None if value >= UNBOUNDED else value


def failing_guards(guards: Sequence[Tuple[Any, str]], values: Dict[Any, int]
                   ) -> Tuple[List[Tuple[Any, str]], bool]:
    """The cheap check before any solver: substitute concrete sizes into every guard.
    Returns the (guard, owner) pairs that come out false, and whether some guard stayed
    undecided (symbols left free, or an expression sympy cannot evaluate)."""
    failing: List[Tuple[Any, str]] = []
    undecided = False
    for expr, owner in guards:
        try:
            v = expr.subs(values) if hasattr(expr, "subs") else expr
        except Exception:  # sympy raises several types on odd expressions
            undecided = True
            continue
        if v is sympy.false or v is False:
            failing.append((expr, owner))
        elif not (v is sympy.true or v is True):
            undecided = True
    return failing, undecided


def check_concrete(guards: Sequence[Tuple[Any, str]], values: Dict[Any, int]) -> Tuple[Optional[bool], List[str]]:
    """Whether concrete sizes pass every guard: (accepted, or None when undecided;
    modules owning the failing guards, "(model forward)" for the model's own forward)."""
    failing, undecided = failing_guards(guards, values)
    blame: List[str] = []
    for _, owner in failing:
        if (owner or "(model forward)") not in blame:
            blame.append(owner or "(model forward)")
    if blame:
        return False, blame
    return (None if undecided else True), []
