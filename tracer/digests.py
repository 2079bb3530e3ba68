"""Digests that let ranks compare replicas and batches without exchanging tensors: a few
float64 numbers per tensor (tensor_digest), per block of parameters (block_digest), per
sample (sample_fingerprints), per block layout (layout_hash). No random numbers are
consumed: the weights are a fixed pattern.
"""
from __future__ import annotations

import hashlib
from typing import Dict, Sequence, Tuple

import torch

MAX_SAMPLES = 64   # sample fingerprints exchanged per rank and step
PERIOD = 4093      # length of the weight pattern for parameter digests (prime)
DIGEST_SIZE = 3    # sum, weighted sum, sum of squares

_PATTERNS: Dict[str, torch.Tensor] = {}
_WEIGHTS: Dict[Tuple[torch.dtype, str], torch.Tensor] = {}


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
        return torch.zeros(DIGEST_SIZE, dtype=torch.float64, device=t.device)
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
def block_digest(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """numel, then the digests of the parameters and of their gradients (zeros where None),
    laid out as rank_payload.BlockSlot says."""
    device = params[0].device if params else torch.device("cpu")
    p = torch.zeros(DIGEST_SIZE, dtype=torch.float64, device=device)
    g = torch.zeros(DIGEST_SIZE, dtype=torch.float64, device=device)
    n = 0
    for q in params:
        n += q.numel()
        p += tensor_digest(q).to(device)
        if q.grad is not None:
            g += tensor_digest(q.grad).to(device)
    return torch.cat([torch.tensor([float(n)], dtype=torch.float64, device=device), p, g])


@torch.no_grad()
def sample_fingerprints(x: torch.Tensor, limit: int = MAX_SAMPLES) -> torch.Tensor:
    """One float64 per sample (the first `limit` rows of the batch): a weighted sum of its
    elements; equal samples give equal fingerprints, different ones almost surely not."""
    head = x.detach()[:limit]
    cols = _fold(head.reshape(head.shape[0], -1))
    return cols @ _pattern(cols.shape[1], cols.device)


def layout_hash(names: Sequence[str], shapes: Sequence[Tuple[int, ...]]) -> float:
    """Block names and parameter shapes as one float64 (exact: 48 bits of a SHA-1)."""
    h = hashlib.sha1(repr((tuple(names), tuple(shapes))).encode()).digest()
    return float(int.from_bytes(h[:6], "big"))
