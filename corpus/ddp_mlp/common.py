"""Shared code of the ddp_mlp case: data, model, and a DistributedDataParallel training loop
on the gloo backend (CPU).

Run under torchrun (RANK/WORLD_SIZE set) a script is one rank of the job. Started plainly
(`python reference.py`), it spawns itself on WORLD (2) local processes and rank 0's result
is returned. Each variant passes its deviation to `run` as a keyword; the loop stays the
same code everywhere.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

WORLD = 2
FEATURES, CLASSES, TRAIN, TEST = 32, 8, 2048, 512


def make_data() -> tuple:
    """Class-conditional Gaussian blobs; a private generator, so the script's RNG is untouched."""
    g = torch.Generator().manual_seed(1234)
    centers = torch.randn(CLASSES, FEATURES, generator=g) * 1.5
    y = torch.randint(0, CLASSES, (TRAIN + TEST,), generator=g)
    x = centers[y] + torch.randn(TRAIN + TEST, FEATURES, generator=g)
    idx = torch.arange(TRAIN + TEST)
    return (TensorDataset(x[:TRAIN], y[:TRAIN], idx[:TRAIN]),
            TensorDataset(x[TRAIN:], y[TRAIN:], idx[TRAIN:]))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(FEATURES, 64)
        self.fc2 = nn.Linear(64, 64)
        self.head = nn.Linear(64, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x)))))


def parse(argv: Optional[List[str]], batch: int) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=batch, help="per-rank batch size")
    ap.add_argument("--lr", type=float, default=0.05)
    return ap.parse_args(argv)


def train(args: argparse.Namespace, *, seed: int = 0, sampler: bool = True, raw_module_every: int = 0,
          lr_by_local_rank: bool = False, clip_on_rank0_only: bool = False, accumulate: int = 1,
          init_method: Optional[str] = None) -> Dict[str, Any]:
    """One rank's training; the keywords are the variants' deviations from the reference.
    `init_method` None: the environment's rendezvous (torchrun)."""
    if init_method is None:
        dist.init_process_group("gloo")
    else:
        dist.init_process_group("gloo", init_method=init_method, rank=int(os.environ["RANK"]),
                                world_size=int(os.environ["WORLD_SIZE"]))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(int(os.environ.get("SEED", seed)))
    train_set, test_set = make_data()
    shard = DistributedSampler(train_set, shuffle=True, seed=0) if sampler else None
    loader = DataLoader(train_set, batch_size=args.batch, sampler=shard, shuffle=shard is None)
    test = DataLoader(test_set, batch_size=128)
    model = DDP(MLP())
    lr = args.lr
    if lr_by_local_rank:  # the bug: the linear scaling rule applied with LOCAL_RANK, not WORLD_SIZE
        lr = args.lr * (int(os.environ.get("LOCAL_RANK", rank)) + 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    step, seen, acc = 0, [], 0.0
    for epoch in range(args.epochs):
        if shard is not None:
            shard.set_epoch(epoch)
        model.train()
        for x, y, idx in loader:
            if epoch == 0:
                seen.append(idx)
            opt.zero_grad()
            if accumulate > 1:  # micro-batches: all-reduce only on the last one (valid)
                for i, (xs, ys) in enumerate(zip(x.chunk(accumulate), y.chunk(accumulate))):
                    sync = i == accumulate - 1
                    with (contextlib.nullcontext() if sync else model.no_sync()):
                        (F.cross_entropy(model(xs), ys) / accumulate).backward()
            else:
                # the bug: a "logging" step runs the unwrapped module, so backward() is not all-reduced
                net = model.module if raw_module_every and step % raw_module_every == raw_module_every - 3 else model
                loss = F.cross_entropy(net(x), y)
                loss.backward()
            if clip_on_rank0_only and rank == 0:
                # the bug: the gradient norm is logged with clip_grad_norm_, which also clips, on rank 0 only
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
                if step % 50 == 0:
                    print(f"step {step} grad norm {float(norm):.3f}")
            opt.step()
            step += 1
            if step % 20 == 0:
                acc = evaluate(model, test)
    acc = evaluate(model, test)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    replicas = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(replicas, flat)
    mine = torch.cat(seen)
    others = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(others, mine)
    shared = sum(int(torch.isin(mine, o).sum()) for r, o in enumerate(others) if r != rank)
    metrics = {"rank": rank, "world_size": world, "steps": step, "accuracy": round(acc, 4),
               "replica_max_diff": float(max((r - flat).abs().max() for r in replicas)),
               "samples_shared_with_other_ranks_epoch0": shared}
    dist.barrier()  # no rank tears its connections down while a peer still uses them
    dist.destroy_process_group()
    return {"model": model.module, "metrics": metrics}


@torch.no_grad()
def evaluate(model: nn.Module, test: DataLoader) -> float:
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y, _ in test)
    model.train()
    return correct / len(test.dataset)


def _spawned(rank: int, rendezvous: str, argv: Optional[List[str]], batch: int, options: Dict[str, Any],
             out: Any) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    result = train(parse(argv, batch), init_method=rendezvous, **options)
    if rank == 0:
        buf = io.BytesIO()
        torch.save(result["model"].state_dict(), buf)  # bytes: the queue outlives this process
        out.put({"metrics": result["metrics"], "state": buf.getvalue()})


def run(argv: Optional[List[str]] = None, *, batch: int = 32, **options: Any) -> Dict[str, Any]:
    """`main(argv)` of every variant: one rank under torchrun, else WORLD spawned ranks."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        result = train(parse(argv, batch), **options)
    else:
        # A file rendezvous: a TCP port picked here could be taken (or self-connected to)
        # before rank 0 listens on it.
        ctx = mp.get_context("spawn")
        out = ctx.SimpleQueue()
        with tempfile.TemporaryDirectory(prefix="ddp_mlp_") as tmp:
            rendezvous = "file://" + os.path.join(tmp, "rendezvous")
            mp.start_processes(_spawned, args=(rendezvous, argv, batch, options, out), nprocs=WORLD,
                               start_method="spawn")
        got = out.get()
        model = MLP()
        model.load_state_dict(torch.load(io.BytesIO(got["state"])))
        result = {"model": model, "metrics": got["metrics"]}
    if result["metrics"]["rank"] == 0:
        print("METRICS " + json.dumps(result["metrics"]))
    return result
