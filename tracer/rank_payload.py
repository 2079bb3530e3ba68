"""The payload each rank contributes to the cross-rank all_gather: one float64 tensor of a
fixed size (whatever the model or batch, so that every rank's collective matches), laid
out as a header, the sample fingerprints, then one slot per block.

    [ Header (10) | fingerprints (max_samples) | block 0 (7) | block 1 (7) | ... ]

Unused places are NaN. A rank whose digests failed sends NaNs with only its step filled in
(`Header.OK` is then not 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from tracer.digests import DIGEST_SIZE, MAX_SAMPLES

MAX_BLOCKS = 64  # blocks compared one by one; the rest are folded into the last slot


class Header(IntEnum):
    """The header's places."""

    STEP = 0      # optimizer steps taken
    BATCH = 1     # size of the step's first training batch (NaN: none seen at this step)
    SAMPLES = 2   # how many sample fingerprints follow
    RESERVED = 3
    GROUPS = 4    # parameter groups of the optimizer
    LR_MAX = 5    # largest learning rate over the groups
    LR_HASH = 6   # sum of lr * (group index + 1): differs when any group's rate does
    LAYOUT = 7    # digests.layout_hash of the block names and parameter shapes
    BLOCKS = 8    # blocks sent
    OK = 9        # 1 when the rank computed its payload


class BlockSlot(IntEnum):
    """Offsets inside one block's slot (block_digest's layout)."""

    NUMEL = 0
    PARAM = 1                # DIGEST_SIZE values: the parameters' digest
    GRAD = 1 + DIGEST_SIZE   # DIGEST_SIZE values: the gradients' digest


BLOCK_SIZE = 1 + 2 * DIGEST_SIZE
BlockValues = Tuple[float, Sequence[float], Sequence[float]]  # numel, parameter digest, gradient digest


@dataclass(frozen=True)
class PayloadLayout:
    """Where everything is in a payload of `max_samples` fingerprints and `max_blocks` blocks."""

    max_samples: int = MAX_SAMPLES
    max_blocks: int = MAX_BLOCKS

    @property
    def size(self) -> int:
        return len(Header) + self.max_samples + self.max_blocks * BLOCK_SIZE

    def block_start(self, b: int) -> int:
        return len(Header) + self.max_samples + b * BLOCK_SIZE

    def encode(self, head: Dict[Header, float], fingerprints: Optional[torch.Tensor],
               blocks: Optional[torch.Tensor]) -> torch.Tensor:
        """The payload (CPU float64): `head` (missing places NaN), the fingerprints and the
        stacked block digests ([blocks, BLOCK_SIZE])."""
        out = torch.full((self.size,), float("nan"), dtype=torch.float64)
        out[: len(Header)] = torch.tensor([head.get(h, float("nan")) for h in Header], dtype=torch.float64)
        if fingerprints is not None:
            out[len(Header): len(Header) + fingerprints.numel()] = fingerprints.cpu()
        if blocks is not None:
            start = self.block_start(0)
            out[start: start + blocks.numel()] = blocks.reshape(-1).cpu()
        return out

    def failed(self, step: int) -> torch.Tensor:
        """The payload of a rank whose digests failed: NaNs and its step."""
        out = torch.full((self.size,), float("nan"), dtype=torch.float64)
        out[Header.STEP] = step
        return out

    def read(self, values: Sequence[float]) -> "RankRow":
        return RankRow(values, self)


class RankRow:
    """One rank's gathered payload, read by field."""

    def __init__(self, values: Sequence[float], layout: PayloadLayout):
        self.values, self.layout = values, layout

    def __getitem__(self, field: Header) -> float:
        return self.values[field]

    @property
    def ok(self) -> bool:
        return self.values[Header.OK] == 1.0

    def samples(self) -> List[float]:
        """The sample fingerprints sent (only where `Header.SAMPLES` is a number)."""
        start = len(Header)
        return list(self.values[start: start + int(self.values[Header.SAMPLES])])

    def block(self, b: int) -> BlockValues:
        base = self.layout.block_start(b)
        param, grad = base + BlockSlot.PARAM, base + BlockSlot.GRAD
        return (self.values[base + BlockSlot.NUMEL], self.values[param: param + DIGEST_SIZE],
                self.values[grad: grad + DIGEST_SIZE])
