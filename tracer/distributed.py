"""The cross-rank observer: what no single rank of a distributed run can see.

Under `torchrun` every rank traces itself (its own run in the shared store). The
`CrossRankObserver` extension adds, at every observed step of the primary optimizer: each
rank reduces its replica to a few numbers (per-block digests of parameters and gradients,
a fingerprint of each sample of its batch, its batch size and learning rates; digests.py),
the ranks exchange them with one `all_gather` of a small fixed-size float64 tensor
(rank_payload.py) over the user's default process group, and every rank compares the
gathered table the same way (rank_compare.py) and records the same `dist.*` observations
(docs/observations.md). Which ranks each finding concerns is kept as data too: the run's
fact `cross_rank_findings` (FINDINGS_FACT).

Deadlock discipline. A collective must be reached by every rank the same number of times.
The observer runs in the primary optimizer's post-step hook at observed steps, a set that
is deterministic in the step count and therefore the same on every rank of a lock-stepped
(DDP) job; the payload has a fixed size whatever the model or the batch; and local faults
never skip the collective: the observer catches its own digest and comparison errors (the
rank sends NaNs instead, and stays on for the next collective), so the session never
disables it on one rank only. What cannot be made safe is a job whose ranks are at
different optimizer steps (their own collectives already mismatch): see docs/distributed.md.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from tracer.blocks import block_map
from tracer.digests import MAX_SAMPLES, block_digest, layout_hash, sample_fingerprints
from tracer.extension import Extension, SessionView
from tracer.calls import primary_input
from tracer.rank_compare import RankFinding, compare
from tracer.rank_payload import MAX_BLOCKS, Header, PayloadLayout

FINDINGS_FACT = "cross_rank_findings"  # run fact: [{step, variable, ranks, majority}] where ranks differ
BlockGroups = Tuple[List[str], List[List[torch.Tensor]], float]  # names, parameters, layout hash


class CrossRankObserver(Extension):
    """Compares the ranks of a distributed job at observed steps.

    Records nothing unless `torch.distributed` is initialised when the step happens."""

    name = "dist"

    def __init__(self, max_samples: int = MAX_SAMPLES, max_blocks: int = MAX_BLOCKS):
        self.layout = PayloadLayout(max_samples, max_blocks)
        self._input: Optional[Tuple[int, int, torch.Tensor]] = None  # step, batch, fingerprints
        self._blocks: Optional[Tuple[tuple, BlockGroups]] = None
        self.local_faults: List[str] = []
        self.findings: List[Tuple[int, RankFinding]] = []  # (step, finding) where ranks differ

    def on_input(self, session: SessionView, root: torch.nn.Module, args: tuple,
                 kwargs: Mapping[str, Any]) -> None:
        step = session.step
        if not (root.training and torch.is_grad_enabled()) or not session.observed(step):
            return
        if self._input is not None and self._input[0] == step:
            return  # the first training batch of a step (gradient accumulation calls more)
        try:
            x = primary_input(args, kwargs)
            if x is not None and x.dim() >= 1 and x.shape[0] > 0:
                self._input = (step, int(x.shape[0]), sample_fingerprints(x, self.layout.max_samples))
        except Exception as e:  # never let a fault here make this rank skip a collective
            self.local_faults.append(f"fingerprint: {type(e).__name__}: {e}")

    def on_step(self, session: SessionView, optimizer: Optional[torch.optim.Optimizer]) -> None:
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return
        try:
            local, names = self.payload(session, optimizer)
        except Exception as e:  # send NaNs rather than skip the collective
            self.local_faults.append(f"digest: {type(e).__name__}: {e}")
            local, names = self.layout.failed(session.step), []
        world = dist.get_world_size()
        payload = local.to(_comm_device())
        out = [torch.empty_like(payload) for _ in range(world)]
        dist.all_gather(out, payload)
        table = torch.stack(out).cpu().tolist()
        try:
            found = compare(table, names, self.layout)
        except Exception as e:  # recorded, but the observer stays on: the next collective needs it
            self.local_faults.append(f"compare: {type(e).__name__}: {e}")
            session.record("train", "tracer.fault", f"dist: compare: {type(e).__name__}: {e}"[:500])
            return
        for finding in found:
            session.record("train", finding.variable, finding.value)
            text = finding.text()
            if text:
                session.record("train", finding.variable + ".ranks", text)
            if finding.ranks:
                self.findings.append((session.step, finding))

    def facts(self) -> Dict[str, Any]:
        if not self.findings:
            return {}
        return {FINDINGS_FACT: [{"step": step, "variable": f.variable, "ranks": list(f.ranks),
                                 "majority": list(f.majority)} for step, f in self.findings]}

    def payload(self, session: SessionView,
                optimizer: Optional[torch.optim.Optimizer]) -> Tuple[torch.Tensor, List[str]]:
        """This rank's payload for the step, and the names of the blocks in it."""
        head: Dict[Header, float] = {Header.STEP: float(session.step)}
        fps: Optional[torch.Tensor] = None
        if self._input is not None and self._input[0] == session.step:
            head[Header.BATCH], fps = float(self._input[1]), self._input[2]
            head[Header.SAMPLES] = float(fps.numel())
        groups = optimizer.param_groups if optimizer is not None else []  # None: the script's own updates
        lrs = [float(g["lr"]) for g in groups if isinstance(g.get("lr"), (int, float, torch.Tensor))]
        head[Header.GROUPS] = float(len(groups))
        if lrs:
            head[Header.LR_MAX] = max(lrs)
            head[Header.LR_HASH] = sum(lr * (i + 1) for i, lr in enumerate(lrs))
        names: List[str] = []
        blocks: Optional[torch.Tensor] = None
        root = session.root
        if root is not None:
            names, groups, head[Header.LAYOUT] = self._block_groups(root, session.config.block_depth)
            head[Header.BLOCKS] = float(len(names))
            digests = [block_digest(params) for params in groups]
            if digests:
                blocks = torch.stack([d.to(digests[0].device) for d in digests]).cpu()  # one transfer
        head[Header.OK] = 1.0
        return self.layout.encode(head, fps, blocks), names

    def _block_groups(self, root: torch.nn.Module, depth: int) -> BlockGroups:
        key = tuple(id(q) for q in root.parameters())
        if self._blocks is None or self._blocks[0] != key:
            bm = block_map(root, depth)
            names = list(bm.names)
            groups = [[q for _, q in bm.params[b]] for b in names]
            most = self.layout.max_blocks
            if len(names) > most:  # fold the tail into one comparison slot
                rest = [q for g in groups[most - 1:] for q in g]
                names = names[: most - 1] + [f"{names[most - 1]}+{len(names) - most}more"]
                groups = groups[: most - 1] + [rest]
            shapes = [tuple(q.shape) for g in groups for q in g]
            self._blocks = (key, (names, groups, layout_hash(names, shapes)))
        return self._blocks[1]


def _comm_device() -> torch.device:
    backend = str(torch.distributed.get_backend())
    if "nccl" in backend and "gloo" not in backend and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
