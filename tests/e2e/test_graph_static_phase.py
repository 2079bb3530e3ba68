"""End-to-end: the static phase (solver and graph capture) at the root model's first call
is invisible to the user's program, and what it claims holds for real forwards."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import pytest
import torch
from torch import nn

import solver
from solver.call import CallSpec
from tests.conftest import SCRIPTS, run_invar
from tracer.calls import model_output
from tracer.extension import Extension
from tracer.runner import run_script
from tracer.session import StopRequested, TraceConfig

HOOKS = SCRIPTS / "hook_counter.py"


def _counts(text: str) -> list:
    return [line for line in text.splitlines() if line.startswith(("step ", "forward "))]


def test_the_users_hooks_count_the_same_calls_traced_and_untraced(tmp_path: Path) -> None:
    plain = subprocess.run([sys.executable, str(HOOKS)], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    expected = _counts(plain.stdout)
    assert len(expected) == 8 and expected[:2] == ["forward (8, 3, 8, 8)", "step 0 calls global=8 head=1"]
    r = run_invar("infer", str(HOOKS), "--runs", "1", "--steps", "0", "-o", str(tmp_path / "inv.yaml"),
                  "--store", str(tmp_path / "store"))
    assert r.returncode == 0, r.stderr
    assert _counts(r.stdout) == expected


# -- every size the solver calls rejected is rejected by a real forward -------------------
class _FirstCall(Extension):
    """Keeps the root model and its first call's arguments, and ends the run there."""

    name = "first_call"

    def __init__(self) -> None:
        self.call: Optional[Tuple[nn.Module, tuple, Mapping[str, Any]]] = None

    def on_first_call(self, session: Any, root: nn.Module, args: tuple, kwargs: Mapping[str, Any]) -> None:
        self.call = (root, args, dict(kwargs))
        raise StopRequested("first call")


def _corpus_scripts() -> List[Path]:
    from corpus.cases import case_dirs, load
    scripts = []
    for case in case_dirs():
        meta = load(case)
        if (meta.get("launch") or {}).get("nproc"):
            continue  # a launched case: its ranks run in other processes
        scripts.append(case / (meta.get("reference") or {}).get("script", "reference.py"))
        scripts += [case / v["script"] for v in meta.get("variants") or []]
    return scripts


def _output(model: nn.Module, spec: CallSpec, sizes: Dict[int, int]) -> Optional[Tuple[int, ...]]:
    """The prediction's shape of an eager forward of a copy of the model, called the
    script's way with the primary input's dims at `sizes`; None when the forward fails."""
    def make(slot: Any) -> torch.Tensor:
        shape = spec.shape(slot, sizes)
        return torch.randn(shape, dtype=slot.dtype) if slot.dtype.is_floating_point else torch.zeros(shape, dtype=slot.dtype)
    args, kwargs = spec.build(make)
    try:
        with torch.no_grad():
            out = model_output(model(*args, **kwargs))
    except Exception:  # the model's own errors are the answer
        return None
    return () if out is None else tuple(out.shape)


def _runs(model: nn.Module, spec: CallSpec, sizes: Dict[int, int]) -> bool:
    return _output(model, spec, sizes) is not None


def _probes(names: Sequence[str], shape: Sequence[int]) -> List[Tuple[int, ...]]:
    """Input sizes (without the batch dim) around the example's: half, double and an odd side."""
    spatial = [i for i, n in enumerate(names) if n in ("H", "W", "T")]
    if not spatial:
        return []
    side = shape[spatial[0]]
    out = []
    for s in sorted({max(1, side // 2), side * 2, side + 3}):
        size = [s if i in spatial else d for i, d in enumerate(shape)]
        out.append(tuple(d for i, d in enumerate(size) if names[i] != "B"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("script", _corpus_scripts(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_rejection_the_solver_claims_on_a_corpus_model_is_disproved_by_a_real_forward(script: Path) -> None:
    first = _FirstCall()
    # steps=3: without torch.optim the root is known after the first backward (its second call)
    run_script(script, [], TraceConfig(steps=3), lambda rows: None, extensions=[first])
    assert first.call is not None, f"{script.name} never called its model"
    root, args, kwargs = first.call
    spec = CallSpec.of(args, kwargs)
    names = solver.analyse(root, args, kwargs).input_names
    report = solver.analyse(root, args, kwargs, probes=_probes(names, spec.x0.shape))
    model = copy.deepcopy(root).eval()
    bi = names.index("B") if "B" in names else 0
    poly = report.batch_polymorphic
    print(f"{script.parent.name}/{script.name}: {spec.describe()} -> {poly.status}; {report.domain_text()}; probes "
          + ", ".join(f"{'x'.join(map(str, p.size))}:{p.accepted}" for p in report.probes))
    if isinstance(poly, solver.Counterexample):  # rejected there, or an output that is not [B, K] there
        b = poly.model["B"]
        example, out = _output(model, spec, {}), _output(model, spec, {bi: b})
        assert example is not None
        as_claimed = example[:1] == (spec.x0.shape[bi],) and out == (b,) + example[1:]
        assert out is None or not as_claimed, f"{poly} but B={b} gives {out}"
    if isinstance(poly, solver.Proved):
        assert _runs(model, spec, {bi: 1}) and _runs(model, spec, {bi: spec.x0.shape[bi] + 1}), str(poly)
    for p in report.probes:
        size = list(p.size)
        size.insert(bi, spec.x0.shape[bi])
        if p.accepted is not None:
            assert _runs(model, spec, dict(enumerate(size))) == p.accepted, f"probe {p.size}: {p.accepted}"
    spatial = [i for i, n in enumerate(names) if n in ("H", "W", "T")]
    for bound, beyond in ((report.side_min, -1), (report.side_max, 1)):
        if bound is None:
            continue
        assert _runs(model, spec, {i: bound for i in spatial}), f"{report.domain_text()}: {bound} fails"
        if bound + beyond >= 1:
            assert not _runs(model, spec, {i: bound + beyond for i in spatial}), \
                f"{report.domain_text()}: {bound + beyond} runs"


# -- graph facts through infer and check ---------------------------------------------------
@pytest.fixture(scope="module")
def plain_invariants(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("graph")
    r = run_invar("infer", str(SCRIPTS / "plain_train.py"), "--runs", "3", "--steps", "8", "-o", str(d / "inv.yaml"),
                  "--store", str(d / "store"))
    assert r.returncode == 0, r.stderr
    return d


def _check(d: Path, *args: str) -> dict:
    r = run_invar("check", str(SCRIPTS / "plain_train.py"), "--against", str(d / "inv.yaml"), "--store",
                  str(d / "store"), "--steps", "4", "--format", "json", "--", *args)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def test_a_detach_is_reported_at_step_0_with_its_line_and_a_valid_change_shows_no_structural_diff(
        plain_invariants: Path) -> None:
    doc = _check(plain_invariants, "--detach-features")
    graph = {v["target"][0]: v for v in doc["violations"] if v["template"] == "multiset"}
    line = next(i for i, text in enumerate((SCRIPTS / "plain_model.py").read_text().splitlines(), 1)
                if "h = h.detach()" in text)
    cut = graph["graph.block.features.0.cut_off"]
    assert cut["step"] == 0 and cut["family"] == "no_gradient" and cut["severity"] == "error"
    assert cut["observed"] == f"+ features.0 (cut off by `detach` at plain_model.py:{line})"
    assert graph["graph.block._root.blocking"]["observed"] == f"+ detach (plain_model.py:{line})"
    root = doc["causes"][0]
    assert root["family"] == "no_gradient" and cut["id"] in root["violations"]
    assert any(c["change"].startswith("+ features.0") for c in doc["structural_diff"]["changes"])
    valid = _check(plain_invariants, "--lr-scale", "1.5", "--batch", "24")
    assert not [v for v in valid["violations"] if v["template"] == "multiset"]
    assert valid["structural_diff"] == {"total": 0, "changes": []}
