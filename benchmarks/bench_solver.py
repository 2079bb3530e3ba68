"""Static-phase time per model (median of 5 warm runs): the solver's shape analysis and the
graph capture with its facts (op kinds, gradient-blocking ops, gradient flow), as `infer`
and `check` run them at the root model's first call: `python benchmarks/bench_solver.py`."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, List, Tuple

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from solver import analyse  # noqa: E402
from tests.solver_models import LSTMClassifier, ResNet18, TinyGPT, TinyVGG, mlp  # noqa: E402
from tracer import graph_facts  # noqa: E402
from tracer.blocks import block_prefixes  # noqa: E402
from tracer.graph_build import capture_traced  # noqa: E402

MODELS = [
    ("ResNet-18 (width 16, 64x64)", lambda: ResNet18(37), (torch.randn(8, 3, 64, 64),)),
    ("ResNet-18 (width 64, 224x224)", lambda: ResNet18(1000, width=64), (torch.randn(2, 3, 224, 224),)),
    ("TinyVGG (Flatten->Linear)", TinyVGG, (torch.randn(8, 3, 32, 32),)),
    ("MLP", lambda: mlp(20, 3), (torch.randn(8, 20),)),
    ("Embedding+LSTM", LSTMClassifier, (torch.randint(0, 100, (8, 12)),)),
    ("GPT-style model(idx, targets)", TinyGPT, (torch.randint(0, 40, (8, 12)), torch.randint(0, 40, (8, 12)))),
]


def graph_phase(model: torch.nn.Module, args: tuple) -> str:
    """What the graph extension does at the first call: capture, then the block facts."""
    record, why = capture_traced(model, args, None, tuple(block_prefixes(model)))
    if record is None:
        return f"modules ({why})"
    graph_facts.op_kinds(record)
    graph_facts.blocking_ops(record)
    graph_facts.gradient_cuts(record, model)
    return record.kind


def median_seconds(fn: Callable[[], Any], repeats: int = 5) -> Tuple[float, Any]:
    times: List[float] = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    analyse(TinyVGG(), torch.randn(2, 3, 32, 32))  # warm the imports
    graph_phase(TinyGPT(), (torch.randint(0, 40, (2, 4)),))  # torch.export's first import, too
    print(f"{'model':<32} {'solver s':>9} {'graph s':>8} {'total s':>8} {'graph':>7} {'output':>14}  batch-polymorphic")
    for name, make, args in MODELS:
        model = make()
        solver_s, r = median_seconds(lambda: analyse(model, args))
        graph_s, kind = median_seconds(lambda: graph_phase(model, args))
        print(f"{name:<32} {solver_s:>9.3f} {graph_s:>8.3f} {solver_s + graph_s:>8.3f} {kind:>7} "
              f"{'[' + ', '.join(r.output_shape) + ']':>14}  {r.batch_polymorphic.status}")


if __name__ == "__main__":
    main()
