"""Cost of the cross-rank comparison (tracer/distributed.py) per sampled step, side by side.

    python benchmarks/ddp_overhead.py [--nproc 2] [--steps 60] [--repeats 3]

Starts itself under torchrun (gloo, CPU). On every rank and for each model, the same DDP
training loop runs interleaved in three modes, every step observed: untraced, traced
without the comparison, traced with it (one all_gather of a small float64 tensor per
step). Printed by rank 0: median milliseconds per step of each mode, the difference the
comparison makes, the median time spent inside the comparison itself (digests,
fingerprints, the all_gather with its wait for the slower rank, the comparison) and the
local part of it (digests and fingerprints, no communication).
Timings are medians over interleaved repeats on shared cores: read them as ratios.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

from tracer.distributed import CrossRankObserver  # noqa: E402
from tracer.session import TraceConfig, TraceSession  # noqa: E402

MODELS = {  # name -> layer widths of an MLP
    "mlp-7k (corpus ddp_mlp)": [32, 64, 64, 8],
    "mlp-1.1M": [256, 512, 1024, 512, 10],
    "mlp-4.2M": [512, 1024, 2048, 1024, 10],
}
BATCH = 32


def mlp(widths: List[int]) -> nn.Module:
    layers: List[nn.Module] = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class TimedObserver(CrossRankObserver):
    """The observer, timing its own on_step and the local digests within it."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: List[float] = []
        self.local_seconds: List[float] = []

    def on_step(self, session: Any, optimizer: Any) -> None:
        start = time.perf_counter()
        super().on_step(session, optimizer)
        self.seconds.append(time.perf_counter() - start)

    def payload(self, session: Any, optimizer: Any) -> Any:
        start = time.perf_counter()
        out = super().payload(session, optimizer)
        self.local_seconds.append(time.perf_counter() - start)
        return out


def loop(widths: List[int], steps: int, session: Optional[TraceSession]) -> List[float]:
    g = torch.Generator().manual_seed(dist.get_rank())
    data = [(torch.randn(BATCH, widths[0], generator=g), torch.randint(0, widths[-1], (BATCH,), generator=g))
            for _ in range(8)]
    times: List[float] = []

    def run() -> None:  # the whole script's part, model and optimizer included, as under invar
        torch.manual_seed(0)
        model = DDP(mlp(widths))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        for i in range(steps):
            x, y = data[i % len(data)]
            start = time.perf_counter()
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            times.append(time.perf_counter() - start)

    if session is None:
        run()
    else:
        with session:
            run()
    return times[3:]  # first steps: allocator and first-call effects


def bench(steps: int, repeats: int) -> List[Dict[str, Any]]:
    every_step = TraceConfig(dense_steps=10 ** 9)  # every step is a sampled step
    out = []
    for name, widths in MODELS.items():
        samples: Dict[str, List[float]] = {"plain": [], "traced": [], "compared": []}
        inside: List[float] = []
        local: List[float] = []
        for _ in range(repeats):
            for mode in samples:
                dist.barrier()
                session = None
                if mode != "plain":
                    observer = TimedObserver()
                    session = TraceSession(every_step, lambda rows: None,
                                           extensions=[observer] if mode == "compared" else [])
                samples[mode] += loop(widths, steps, session)
                if mode == "compared":
                    inside += observer.seconds[3:]
                    local += observer.local_seconds[3:]
        params = sum(p.numel() for p in mlp(widths).parameters())
        out.append({"model": name, "params": params,
                    **{m: 1000 * statistics.median(v) for m, v in samples.items()},
                    "inside": 1000 * statistics.median(inside), "local": 1000 * statistics.median(local)})
    return out


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if "RANK" not in os.environ:
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
               __file__, "--steps", str(args.steps), "--repeats", str(args.repeats)]
        sys.exit(subprocess.run(cmd, env=env).returncode)
    dist.init_process_group("gloo")
    rows = bench(args.steps, args.repeats)
    if dist.get_rank() == 0:
        print(f"cross-rank comparison, {dist.get_world_size()} ranks (gloo, CPU, {torch.get_num_threads()} thread(s) "
              f"per rank), batch {BATCH}, every step sampled; median ms per step")
        print(f"{'model':<26} {'params':>9} {'untraced':>9} {'traced':>9} {'+compare':>9} {'delta':>8} "
              f"{'inside':>8} {'digests':>8}")
        for r in rows:
            print(f"{r['model']:<26} {r['params']:>9} {r['plain']:>9.2f} {r['traced']:>9.2f} {r['compared']:>9.2f} "
                  f"{r['compared'] - r['traced']:>+8.2f} {r['inside']:>8.2f} {r['local']:>8.2f}")
        print("delta: +compare - traced; inside: the comparison's own time (digests, all_gather including the "
              "wait for the slower rank, comparison); digests: its local part")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
