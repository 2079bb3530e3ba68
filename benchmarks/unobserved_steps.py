"""Cost of an unobserved training step, with and without lifting the module hooks.

    python benchmarks/unobserved_steps.py [--steps 60] [--repeats 20] [--threads 1]

After its first observed steps, a traced run mostly takes steps nobody records. torch's
global module hooks make every module call take the slow path of `Module.__call__`, so the
tracer lifts them from the root model's call to the next optimizer step
(`TraceConfig.lift_hooks`). For models with few and with many module calls per forward,
the same training loop runs interleaved: untraced, traced with the hooks kept, traced with
them lifted (every step after the 5th unobserved). Printed: median microseconds per untraced
step and, for each traced mode, the median over repeats of its ratio to the untraced run
of the same repeat.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from tracer.session import TraceConfig, TraceSession  # noqa: E402

DENSE = 5


def mlp() -> Tuple[nn.Module, torch.Tensor]:
    """5 modules per forward."""
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)), \
        torch.randn(64, 16)


def deep_mlp() -> Tuple[nn.Module, torch.Tensor]:
    """182 small modules per forward (a transformer-like depth of Linear/LayerNorm/GELU)."""
    layers: List[nn.Module] = [nn.Linear(16, 32)]
    for _ in range(60):
        layers += [nn.Linear(32, 32), nn.LayerNorm(32), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(32, 4)), torch.randn(8, 16)


def convnet() -> Tuple[nn.Module, torch.Tensor]:
    """40 modules per forward with convolutions dominating the step."""
    layers: List[nn.Module] = [nn.Conv2d(3, 8, 3, padding=1)]
    for _ in range(12):
        layers += [nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)), \
        torch.randn(16, 3, 16, 16)


def efficientnet() -> Tuple[nn.Module, torch.Tensor]:
    """The corpus's EfficientNet-b0-like network (MBConv, squeeze-excite), batch 64 at 32x32."""
    sys.path.insert(0, str(ROOT / "corpus" / "efficientnet_finetune"))
    from common import EfficientNet  # noqa: E402  (a corpus script's module, no invar import)
    return EfficientNet(num_classes=100), torch.randn(64, 3, 32, 32)


MODELS: Dict[str, Callable[[], Tuple[nn.Module, torch.Tensor]]] = {
    "mlp (5 modules)": mlp, "deep mlp (182 modules)": deep_mlp, "convnet (40 modules)": convnet,
    "efficientnet-like": efficientnet}


def _steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n: int,
           session: Optional[TraceSession]) -> List[float]:
    def loop() -> List[float]:
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)  # inside the session: it finds the root
        times = []
        for _ in range(n):
            start = time.perf_counter()
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            times.append(time.perf_counter() - start)
        return times[2 * DENSE:]  # the observed steps and a few after them are left out

    if session is None:
        return loop()
    with session:
        return loop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{'model':<24} {'plain us':>9} {'hooks kept':>11} {'lifted':>8}")
    for name, build in MODELS.items():
        model, x = build()
        with torch.no_grad():
            y = torch.randint(0, model(x).shape[1], (x.shape[0],))
        order = ["plain", "kept", "lifted"]
        plain: List[float] = []
        ratios: Dict[str, List[float]] = {"kept": [], "lifted": []}
        for rep in range(args.repeats):
            med: Dict[str, float] = {}
            for mode in order[rep % 3:] + order[:rep % 3]:
                session = None if mode == "plain" else TraceSession(
                    TraceConfig(dense_steps=DENSE, sample_every=0, lift_hooks=mode == "lifted"), lambda rows: None)
                med[mode] = statistics.median(_steps(model, x, y, args.steps, session))
            plain.append(med["plain"])
            for mode in ratios:  # a ratio within one repeat: the machine's speed drifts between them
                ratios[mode].append(med[mode] / med["plain"])
        print(f"{name:<24} {1e6 * statistics.median(plain):>9.1f} {statistics.median(ratios['kept']):>10.3f}x "
              f"{statistics.median(ratios['lifted']):>7.3f}x")


if __name__ == "__main__":
    main()
