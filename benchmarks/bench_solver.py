"""Static analysis time per model (median of 5 warm runs): `python benchmarks/bench_solver.py`."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from solver import analyse  # noqa: E402
from tests.solver_models import LSTMClassifier, ResNet18, TinyVGG, mlp  # noqa: E402

MODELS = [
    ("ResNet-18 (width 16, 64x64)", lambda: ResNet18(37), torch.randn(8, 3, 64, 64)),
    ("ResNet-18 (width 64, 224x224)", lambda: ResNet18(1000, width=64), torch.randn(2, 3, 224, 224)),
    ("TinyVGG (Flatten->Linear)", TinyVGG, torch.randn(8, 3, 32, 32)),
    ("MLP", lambda: mlp(20, 3), torch.randn(8, 20)),
    ("Embedding+LSTM", LSTMClassifier, torch.randint(0, 100, (8, 12))),
]


def main() -> None:
    analyse(TinyVGG(), torch.randn(2, 3, 32, 32))  # warm the imports
    print(f"{'model':<32} {'median s':>9} {'output':>12}  batch-polymorphic")
    for name, make, x in MODELS:
        model = make()
        times = []
        for _ in range(5):
            t = time.perf_counter()
            r = analyse(model, x)
            times.append(time.perf_counter() - t)
        print(f"{name:<32} {statistics.median(times):>9.3f} {'[' + ', '.join(r.output_shape) + ']':>12}  "
              f"{r.batch_polymorphic.status}")


if __name__ == "__main__":
    main()
