"""Distributed runs: which rank this process is, and the cross-rank observer.

Under `torchrun` every rank traces itself (its own run in the shared store). The
`CrossRankObserver` extension adds what no single rank can see: at every observed step of
the primary optimizer, each rank reduces its replica to a few numbers (per-block digests
of parameters and gradients, a fingerprint of each sample of its batch, its batch size and
learning rates), the ranks exchange them with one `all_gather` of a small fixed-size
float64 tensor over the user's default process group, and every rank records the same
`dist.*` observations (docs/observations.md).

Deadlock discipline. A collective must be reached by every rank the same number of times.
The observer runs in the primary optimizer's post-step hook at observed steps, a set that
is deterministic in the step count and therefore the same on every rank of a lock-stepped
(DDP) job; the payload has a fixed size whatever the model or the batch; and local faults
never skip the collective (the rank sends NaNs instead), because the session disables a
faulting extension on that rank only. What cannot be made safe is a job whose ranks are at
different optimizer steps (their own collectives already mismatch): see docs/distributed.md.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import signal
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from tracer.blocks import block_map
from tracer.extension import Extension

MAX_SAMPLES = 64   # sample fingerprints exchanged per rank and step
MAX_BLOCKS = 64    # blocks compared one by one; the rest are folded into the last slot
HEADER = 10        # step, batch, samples, (reserved), groups, lr max, lr hash, layout, blocks, ok
PER_BLOCK = 7      # numel, param sum / weighted sum / square sum, grad sum / weighted sum / square sum
PERIOD = 4093      # length of the weight pattern for parameter digests (prime)
SAME = 1e-10       # relative difference under which two digests are the same replica
_RANK_ENV = ("RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a distributed job, from torchrun's environment."""

    rank: int
    world_size: int
    local_rank: int
    group: str   # identifies one launch: every rank of it records the same value

    @staticmethod
    def from_env(env: Optional[Dict[str, str]] = None) -> Optional["RankInfo"]:
        """The rank of this process, or None when it was not started by torchrun."""
        e = os.environ if env is None else env
        if not all(k in e for k in _RANK_ENV):
            return None
        rank, world = int(e["RANK"]), int(e["WORLD_SIZE"])
        group = e.get("INVAR_GROUP") or _group_of_launch(e)
        return RankInfo(rank, world, int(e.get("LOCAL_RANK", rank)), group)


def _group_of_launch(env: Dict[str, str]) -> str:
    # Without invar's launcher, the ranks of one torchrun launch share its rendezvous id,
    # master address/port and restart count; a hash keeps the fact short.
    parts = [env.get(k, "") for k in ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT",
                                      "TORCHELASTIC_RESTART_COUNT")]
    return "torchrun-" + hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (torchrun tears the job down after another rank failed)."""


@contextlib.contextmanager
def sigterm_ends_run() -> Iterator[List[bool]]:
    """Turns SIGTERM into an exception the runner catches, so that a rank stopped by the
    launcher records how its run ended instead of vanishing; yields a flag list that holds
    True once the signal came. Only in the main thread; the previous handler is restored."""
    came: List[bool] = []

    def handler(signum: int, frame: Any) -> None:
        came.append(True)
        raise Terminated("terminated by SIGTERM")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield came
        return
    try:
        yield came
    finally:
        signal.signal(signal.SIGTERM, previous)


def destroy_default_group(incarnation: int) -> None:
    """Ends the script's default process group if a stopped run left it open, so that the
    next traced run in this process (reference run `incarnation`) can initialise it again.

    A re-created default group reuses its name, hence its keys in torchrun's store: a rank
    that re-initialises first reads a peer's stale address and hangs. Every rank moves the
    name on by the same amount (torch's private group counter, checked by the tests)."""
    dist = torch.distributed
    if not dist.is_available():
        return
    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    world = getattr(getattr(dist, "distributed_c10d", None), "_world", None)
    if world is not None and hasattr(world, "group_count"):
        world.group_count = max(world.group_count, 1000 * (incarnation + 1))


# -- digests ------------------------------------------------------------------------------
_PATTERNS: Dict[str, torch.Tensor] = {}


def _pattern(n: int, device: torch.device) -> torch.Tensor:
    """Fixed float64 weights in [-1, 1] (no random numbers consumed): the first n of one
    sequence, cached per device."""
    w = _PATTERNS.get(str(device))
    if w is None or w.numel() < n:
        size = max(n, 2 * w.numel() if w is not None else PERIOD)
        w = torch.cos(torch.arange(size, dtype=torch.float64, device=device) * 0.7548776662466927 + 0.1234)
        _PATTERNS[str(device)] = w
    return w[:n]


def _fold(rows: torch.Tensor) -> torch.Tensor:
    """[k, D] -> [k, min(D, PERIOD)] float64: element j is added into column j mod PERIOD,
    so that long rows are digested without a float64 copy of the whole tensor."""
    k, d = rows.shape
    full = d // PERIOD
    if not full:
        return rows.to(torch.float64)
    cols = rows[:, : full * PERIOD].reshape(k, full, PERIOD).sum(1, dtype=torch.float64)
    if d > full * PERIOD:
        cols[:, : d - full * PERIOD] += rows[:, full * PERIOD:].to(torch.float64)
    return cols


_WEIGHTS: Dict[Tuple[torch.dtype, str], torch.Tensor] = {}


def _weights(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[PERIOD, 2]: a column of ones and the weight pattern, in the tensor's dtype."""
    key = (dtype, str(device))
    w = _WEIGHTS.get(key)
    if w is None:
        w = torch.stack([torch.ones(PERIOD, dtype=torch.float64, device=device), _pattern(PERIOD, device)], 1)
        w = _WEIGHTS[key] = w.to(dtype)
    return w


@torch.no_grad()
def tensor_digest(t: torch.Tensor) -> torch.Tensor:
    """(sum, weighted sum, sum of squares) as float64 on the tensor's device.

    The weighted sum uses a fixed pattern of weights (period PERIOD), so a difference Δ
    between two replicas moves it by about ‖Δ‖ whatever Δ's direction; the sum of squares
    gives the scale. Two matrix-vector passes in the tensor's own precision (rows of PERIOD
    elements, then the row sums added in float64): equal tensors give equal digests, and a
    100-million-element tensor costs no copy."""
    flat = t.detach().reshape(-1)
    if flat.numel() == 0:
        return torch.zeros(3, dtype=torch.float64, device=t.device)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()  # half/bfloat16 matmul is slow or missing on some CPUs; integers
    w = _weights(flat.dtype, flat.device)
    rows = flat.numel() // PERIOD
    sums = torch.zeros(2, dtype=torch.float64, device=flat.device)
    if rows:
        sums += (flat[: rows * PERIOD].view(rows, PERIOD) @ w).sum(0, dtype=torch.float64)
    tail = flat[rows * PERIOD:]
    if tail.numel():
        sums += (tail @ w[: tail.numel()]).to(torch.float64)
    return torch.cat([sums, torch.dot(flat, flat).to(torch.float64).reshape(1)])


@torch.no_grad()
def sample_fingerprints(x: torch.Tensor, limit: int = MAX_SAMPLES) -> torch.Tensor:
    """One float64 per sample (the first `limit` rows of the batch): a weighted sum of its
    elements; equal samples give equal fingerprints, different ones almost surely not."""
    head = x.detach()[:limit]
    cols = _fold(head.reshape(head.shape[0], -1))
    return cols @ _pattern(cols.shape[1], cols.device)


def _layout_hash(names: Sequence[str], shapes: Sequence[Tuple[int, ...]]) -> float:
    h = hashlib.sha1(repr((tuple(names), tuple(shapes))).encode()).digest()
    return float(int.from_bytes(h[:6], "big"))  # exact in float64


# -- the observer -------------------------------------------------------------------------
class CrossRankObserver(Extension):
    """Session extension comparing the ranks of a distributed job at observed steps.

    Records nothing unless `torch.distributed` is initialised when the step happens."""

    name = "dist"

    def __init__(self, max_samples: int = MAX_SAMPLES, max_blocks: int = MAX_BLOCKS):
        self.max_samples, self.max_blocks = max_samples, max_blocks
        self.size = HEADER + max_samples + max_blocks * PER_BLOCK
        self._input: Optional[Tuple[int, int, torch.Tensor]] = None  # step, batch, fingerprints
        self._blocks: Optional[Tuple[tuple, Any, float]] = None
        self.local_faults: List[str] = []

    # called by the session for every call of the root model, outside its own observers
    def on_input(self, session: Any, module: torch.nn.Module, args: tuple) -> None:
        step = session.step
        if not (module.training and torch.is_grad_enabled()) or not session.observed(step):
            return
        if self._input is not None and self._input[0] == step:
            return  # the first training batch of a step (gradient accumulation calls more)
        try:
            x = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if x is not None and x.dim() >= 1 and x.shape[0] > 0:
                self._input = (step, int(x.shape[0]), sample_fingerprints(x, self.max_samples))
        except Exception as e:  # never let a fault here make this rank skip a collective
            self.local_faults.append(f"fingerprint: {type(e).__name__}: {e}")

    def on_step(self, session: Any, optimizer: torch.optim.Optimizer) -> None:
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return
        try:
            local, names = self._local(session, optimizer)
        except Exception as e:  # send NaNs rather than skip the collective
            self.local_faults.append(f"digest: {type(e).__name__}: {e}")
            local, names = torch.full((self.size,), float("nan"), dtype=torch.float64), []
            local[0] = session.step
        world = dist.get_world_size()
        device = _comm_device()
        payload = local.to(device)
        out = [torch.empty_like(payload) for _ in range(world)]
        dist.all_gather(out, payload)
        table = torch.stack(out).cpu().tolist()
        try:
            found = compare(table, names, self.max_samples)
        except Exception as e:  # recorded, but the observer stays on: the next collective needs it
            self.local_faults.append(f"compare: {type(e).__name__}: {e}")
            session.record("train", "tracer.fault", f"dist: compare: {type(e).__name__}: {e}"[:500])
            return
        for variable, value, text in found:
            session.record("train", variable, value)
            if text:
                session.record("train", variable + ".ranks", text)

    def _local(self, session: Any, optimizer: torch.optim.Optimizer) -> Tuple[torch.Tensor, List[str]]:
        root = session.root
        head = [float("nan")] * HEADER
        head[0] = float(session.step)
        fps: Optional[torch.Tensor] = None
        if self._input is not None and self._input[0] == session.step:
            head[1], fps = float(self._input[1]), self._input[2]
            head[2] = float(fps.numel())
        lrs = [float(g["lr"]) for g in optimizer.param_groups if isinstance(g.get("lr"), (int, float, torch.Tensor))]
        head[4] = float(len(optimizer.param_groups))
        if lrs:
            head[5] = max(lrs)
            head[6] = sum(lr * (i + 1) for i, lr in enumerate(lrs))
        names: List[str] = []
        digests: List[torch.Tensor] = []
        if root is not None:
            names, groups, head[7] = self._block_groups(root, session.config.block_depth)
            head[8] = float(len(names))
            for params in groups:
                digests.append(_block_digest(params))
        head[9] = 1.0
        body = torch.full((self.size - HEADER,), float("nan"), dtype=torch.float64)
        if fps is not None:
            body[: fps.numel()] = fps.cpu()
        if digests:
            blocks = torch.stack([d.to(digests[0].device) for d in digests]).cpu()  # one transfer
            start = self.max_samples
            body[start: start + blocks.numel()] = blocks.reshape(-1)
        return torch.cat([torch.tensor(head, dtype=torch.float64), body]), names

    def _block_groups(self, root: torch.nn.Module, depth: int) -> Tuple[List[str], List[list], float]:
        key = tuple(id(q) for q in root.parameters())
        if self._blocks is None or self._blocks[0] != key:
            bm = block_map(root, depth)
            names = list(bm.names)
            groups = [[q for _, q in bm.params[b]] for b in names]
            if len(names) > self.max_blocks:  # fold the tail into one comparison slot
                rest = [q for g in groups[self.max_blocks - 1:] for q in g]
                names = names[: self.max_blocks - 1] + [f"{names[self.max_blocks - 1]}+{len(names) - self.max_blocks}more"]
                groups = groups[: self.max_blocks - 1] + [rest]
            shapes = [tuple(q.shape) for g in groups for q in g]
            self._blocks = (key, (names, groups), _layout_hash(names, shapes))
        (names, groups), layout = self._blocks[1], self._blocks[2]
        return names, groups, layout


@torch.no_grad()
def _block_digest(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """numel, then digests of the parameters and of their gradients (zeros where None)."""
    device = params[0].device if params else torch.device("cpu")
    p = torch.zeros(3, dtype=torch.float64, device=device)
    g = torch.zeros(3, dtype=torch.float64, device=device)
    n = 0
    for q in params:
        n += q.numel()
        p += tensor_digest(q).to(device)
        if q.grad is not None:
            g += tensor_digest(q.grad).to(device)
    return torch.cat([torch.tensor([float(n)], dtype=torch.float64, device=device), p, g])


def _comm_device() -> torch.device:
    backend = str(torch.distributed.get_backend())
    if "nccl" in backend and "gloo" not in backend and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# -- comparing the gathered table ---------------------------------------------------------
# One observation: variable, value, and where it is nonzero a detail for people that starts
# with the ranks concerned: `ranks 1: rank 1 differs from rank 0,2,3` (ranks_of parses it).
Observation = Tuple[str, float, str]


def detail(ranks: Sequence[int], text: str) -> str:
    """The `.ranks` text of an observation: the ranks concerned, then what differs."""
    return f"ranks {','.join(str(r) for r in sorted(set(ranks)))}: {text}"


def ranks_of(text: str) -> Tuple[int, ...]:
    """The ranks a `detail` names (`ranks 0,1: ...` -> (0, 1)); () for other text."""
    head, sep, _ = text.partition(": ")
    if not sep or not head.startswith("ranks "):
        return ()
    try:
        return tuple(int(r) for r in head[len("ranks "):].split(","))
    except ValueError:
        return ()


def compare(table: List[List[float]], names: Sequence[str], max_samples: int = MAX_SAMPLES) -> List[Observation]:
    """The `dist.*` observations of one step from the gathered rows (row r: rank r's payload)."""
    world = len(table)
    out: List[Observation] = [("dist.world_size", float(world), "")]
    ok = [r for r in range(world) if table[r][9] == 1.0]
    out.append(_agreement("dist.step_mismatch", {r: table[r][0] for r in range(world)}, "steps"))
    out += _compare_batches(table, ok)
    out += _compare_lr(table, ok)
    layout = _agreement("dist.layout_mismatch", {r: table[r][7] for r in ok}, "model layouts (parameter shapes)")
    out.append(layout)
    if layout[1] or len(ok) < 2:
        return out  # blocks of different models cannot be compared
    for b, name in enumerate(names):
        base = HEADER + max_samples + b * PER_BLOCK
        for kind, off in (("param", 1), ("grad", 4)):
            digests = [(r, table[r][base + off: base + off + 3]) for r in ok]
            value, text = _divergence(digests, table[ok[0]][base], "parameters" if kind == "param" else "gradients")
            out.append((f"dist.block.{name}.{kind}_divergence", value, text))
    return out


def _split(items: Sequence[Tuple[int, Sequence[float]]]) -> List[List[int]]:
    """Ranks grouped by equal values, the largest group first (ties: the lowest rank's)."""
    groups: List[Tuple[List[int], Sequence[float]]] = []
    for r, v in items:
        for g, rep in groups:
            if _same(v, rep):
                g.append(r)
                break
        else:
            groups.append(([r], v))
    return [g for g, _ in sorted(groups, key=lambda gr: (-len(gr[0]), gr[0][0]))]


def _who(groups: List[List[int]], what: str) -> str:
    """A detail naming the ranks off the majority, or every rank when there is none."""
    total = sum(len(g) for g in groups)
    if len(groups[0]) * 2 > total:
        odd = sorted(r for g in groups[1:] for r in g)
        return detail(odd, f"{what} of rank{'s' if len(odd) > 1 else ''} {','.join(map(str, odd))} differ "
                           f"from rank{'s' if len(groups[0]) > 1 else ''} {','.join(map(str, groups[0]))}")
    every = sorted(r for g in groups for r in g)
    if all(len(g) == 1 for g in groups):
        names = [str(r) for r in every]
        return detail(every, f"{what} differ between ranks {', '.join(names[:-1])} and {names[-1]}")
    return detail(every, f"{what} differ with no majority: " + " | ".join(",".join(map(str, g)) for g in groups))


def _agreement(variable: str, values: Dict[int, float], what: str) -> Observation:
    """How many ranks differ from the majority on one value, naming them and the values."""
    groups = _split([(r, [v]) for r, v in values.items()])
    if len(groups) <= 1:
        return (variable, 0.0, "")
    shown = ", ".join(f"rank {r}: {_num(values[r])}" for r in sorted(values))
    return (variable, float(sum(len(g) for g in groups[1:])), _who(groups, what) + f" ({shown})")


def _divergence(digests: List[Tuple[int, List[float]]], numel: float, what: str) -> Tuple[float, str]:
    """Largest relative distance of a rank's replica from the majority's, and who is off."""
    bad = [r for r, d in digests if any(math.isnan(v) or math.isinf(v) for v in d)]
    if bad:
        return float("nan"), detail(bad, f"non-finite {what}")
    groups = _split(digests)
    if len(groups) == 1:
        return 0.0, ""
    ref = dict(digests)[groups[0][0]]
    scale = max(math.sqrt(max(ref[2], 0.0)), 1e-30)
    worst = 0.0
    for _, d in digests:
        dn = abs(math.sqrt(max(d[2], 0.0)) - math.sqrt(max(ref[2], 0.0)))
        ds = abs(d[0] - ref[0]) / math.sqrt(max(numel, 1.0))
        worst = max(worst, dn, ds, abs(d[1] - ref[1]))
    return worst / scale, _who(groups, what)


def _same(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x == y or abs(x - y) <= SAME * max(abs(x), abs(y)) or (math.isnan(x) and math.isnan(y))
               for x, y in zip(a, b))


def _num(v: float) -> str:
    return str(int(v)) if math.isfinite(v) and v == int(v) else f"{v:.6g}"


def _key(v: float) -> float:
    # Equal samples give bitwise-equal fingerprints on equal hardware; rounding to 12
    # significant digits also absorbs a reduction order that differs with the batch size.
    return float(f"{v:.12g}")


def _samples(table: List[List[float]], r: int) -> List[float]:
    return [_key(v) for v in table[r][HEADER: HEADER + int(table[r][2])]]


def _compare_batches(table: List[List[float]], ok: List[int]) -> List[Observation]:
    seen = [r for r in ok if not math.isnan(table[r][1])]
    if len(seen) < 2:
        return []
    sizes = {r: table[r][1] for r in seen}
    groups = _split([(r, [v]) for r, v in sizes.items()])
    spread = (max(sizes.values()) - min(sizes.values())) / max(sizes.values())
    out: List[Observation] = [("dist.batch_size_divergence", spread, "" if spread == 0 else _who(groups, "batch sizes")
                               + " (" + ", ".join(f"rank {r}: {_num(v)}" for r, v in sorted(sizes.items())) + ")")]
    pairs = [(a, b) for i, a in enumerate(seen) for b in seen[i + 1:]
             if sizes[a] == sizes[b] and table[a][2] > 0 and _samples(table, a) == _samples(table, b)]
    out.append(("dist.batch_overlap", float(len(pairs)), "" if not pairs else detail(
        [r for p in pairs for r in p], "identical batches on " + ", ".join(f"ranks {a} and {b}" for a, b in pairs))))
    owners: Dict[float, set] = {}
    for r in seen:
        for v in _samples(table, r):
            owners.setdefault(v, set()).add(r)
    shared = [rs for rs in owners.values() if len(rs) > 1]
    who = sorted({r for rs in shared for r in rs})
    out.append(("dist.shared_samples", float(len(shared)), "" if not shared else detail(
        who, f"{len(shared)} of the samples compared appear on more than one rank")))
    return out


def _compare_lr(table: List[List[float]], ok: List[int]) -> List[Observation]:
    seen = [r for r in ok if not math.isnan(table[r][5])]
    if len(seen) < 2:
        return []
    groups = _split([(r, table[r][4:7]) for r in seen])
    if len(groups) == 1:
        return [("dist.lr_divergence", 0.0, "")]
    worst = 1.0 if len({table[r][4] for r in seen}) > 1 else 0.0
    for col in (5, 6):
        vals = [table[r][col] for r in seen]
        top = max(abs(v) for v in vals)
        if top > 0:
            worst = max(worst, (max(vals) - min(vals)) / top)
    shown = ", ".join(f"rank {r}: {_num(table[r][5])}" for r in seen)
    return [("dist.lr_divergence", worst, _who(groups, "learning rates") + f" (largest per rank: {shown})")]
