"""Data-side observations: dataset fingerprints, train/eval overlap, dataset peeks.

Overlap is decided at the dataset level, before augmentation can hide it: Subsets over a
shared base compare indices; datasets holding raw tensors or arrays compare row hashes;
anything else compares hashes of a few samples. Peeking a sample calls the user's
`__getitem__`, so every global RNG is saved and restored around it.
"""
from __future__ import annotations

import contextlib
import hashlib
import random
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Set, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

MAX_HASHED_ROWS = 50_000
PEEK_SAMPLES = 32
SAMPLE_HASHES = 256


@dataclass(frozen=True)
class Overlap:
    """How many eval samples also appear in the training data, and how that was decided."""

    count: int
    eval_size: int
    method: str  # indices | rows | samples | identical


def resolve(ds: Any) -> Tuple[Any, Optional[np.ndarray]]:
    """The base dataset under (nested) Subsets and the indices into it (None: all)."""
    idx: Optional[np.ndarray] = None
    while isinstance(ds, Subset):
        sub = np.asarray(list(ds.indices) if not torch.is_tensor(ds.indices)
                         else ds.indices.cpu().numpy(), dtype=np.int64)
        idx = sub if idx is None else sub[idx]
        ds = ds.dataset
    return ds, idx


def _raw_rows(base: Any) -> Optional[np.ndarray]:
    """The raw sample array of a dataset that holds one (TensorDataset, `.data`), 2-d."""
    arr: Any = None
    if isinstance(base, TensorDataset):
        arr = base.tensors[0]
    elif hasattr(base, "data") and isinstance(getattr(base, "data"), (torch.Tensor, np.ndarray)):
        arr = base.data
    if arr is None:
        return None
    if torch.is_tensor(arr):
        arr = arr.detach().cpu().numpy()
    arr = np.ascontiguousarray(arr)
    return arr.reshape(arr.shape[0], -1) if arr.ndim else None


def _row_hashes(rows: np.ndarray, idx: Optional[np.ndarray]) -> Set[bytes]:
    if idx is not None:
        rows = rows[idx[:MAX_HASHED_ROWS]]
    else:
        rows = rows[:MAX_HASHED_ROWS]
    rows = np.ascontiguousarray(rows)
    return {hashlib.blake2b(r.tobytes(), digest_size=12).digest() for r in rows}


def overlap(train_ds: Any, eval_ds: Any) -> Overlap:
    """Counts eval samples that are also training samples."""
    tb, ti = resolve(train_ds)
    eb, ei = resolve(eval_ds)
    eval_size = len(eval_ds)
    if tb is eb:
        if ti is None and ei is None:
            return Overlap(eval_size, eval_size, "identical")
        t = set(range(len(tb))) if ti is None else set(ti.tolist())
        e = range(len(eb)) if ei is None else ei.tolist()
        return Overlap(sum(1 for i in e if i in t), eval_size, "indices")
    trows, erows = _raw_rows(tb), _raw_rows(eb)
    if trows is not None and erows is not None and trows.shape[1:] == erows.shape[1:] \
            and trows.dtype == erows.dtype:
        th = _row_hashes(trows, ti)
        eh = erows if ei is None else erows[ei[:MAX_HASHED_ROWS]]
        count = sum(1 for r in np.ascontiguousarray(eh[:MAX_HASHED_ROWS])
                    if hashlib.blake2b(r.tobytes(), digest_size=12).digest() in th)
        return Overlap(count, eval_size, "rows")
    th = _sample_hashes(train_ds)
    eh = _sample_hashes(eval_ds)
    return Overlap(len(th & eh), min(eval_size, SAMPLE_HASHES), "samples")


@contextlib.contextmanager
def rng_preserved() -> Iterator[None]:
    """Saves and restores every global RNG around user code the tracer calls."""
    torch_state = torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        yield
    finally:
        torch.random.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        np.random.set_state(np_state)
        random.setstate(py_state)


def _split_sample(sample: Any) -> Tuple[Optional[torch.Tensor], Any]:
    if isinstance(sample, dict):
        tensors = [v for v in sample.values() if torch.is_tensor(v)]
        return (tensors[0] if tensors else None), None
    if isinstance(sample, (tuple, list)) and sample:
        x = sample[0]
        y = sample[1] if len(sample) > 1 else None
        return (torch.as_tensor(x) if isinstance(x, (np.ndarray, torch.Tensor)) else None), y
    if torch.is_tensor(sample):
        return sample, None
    return None, None


def _spaced(n: int, k: int) -> List[int]:
    if n <= k:
        return list(range(n))
    return [int(i * n / k) for i in range(k)]


def _sample_hashes(ds: Any) -> Set[bytes]:
    hashes: Set[bytes] = set()
    with rng_preserved(), torch.no_grad():
        for i in _spaced(len(ds), SAMPLE_HASHES):
            x, _ = _split_sample(ds[i])
            if x is not None:
                a = np.ascontiguousarray(x.detach().cpu().numpy())
                hashes.add(hashlib.blake2b(a.tobytes(), digest_size=12).digest())
    return hashes


@dataclass
class Peek:
    """Inputs and labels of a few samples, and all labels when they are cheap to read."""

    inputs: Optional[torch.Tensor]
    labels: Optional[torch.Tensor]
    labels_exact: bool = False  # all of the dataset's labels, not those of the samples read


def peek(ds: Dataset, k: int = PEEK_SAMPLES) -> Peek:
    """Reads k evenly spaced samples (tensors directly where the dataset holds them)."""
    base, idx = resolve(ds)
    if isinstance(base, TensorDataset):
        all_idx = torch.as_tensor(idx) if idx is not None else None
        tensors = [t if all_idx is None else t[all_idx] for t in base.tensors]
        pick = torch.as_tensor(_spaced(len(tensors[0]), k))
        labels = tensors[1] if len(tensors) > 1 else None
        return Peek(tensors[0][pick], labels, labels is not None)
    xs: List[torch.Tensor] = []
    ys: List[Any] = []
    with rng_preserved(), torch.no_grad():
        for i in _spaced(len(ds), k):
            x, y = _split_sample(ds[i])
            if x is not None:
                xs.append(x)
            if y is not None:
                ys.append(y)
    inputs = torch.stack(xs) if xs and all(x.shape == xs[0].shape for x in xs) else None
    labels, exact = None, False
    targets = _label_attribute(base)
    if targets is not None:
        labels = targets if idx is None else targets[torch.as_tensor(idx)]
        exact = True
    elif ys and all(isinstance(y, (int, np.integer)) or (torch.is_tensor(y) and y.dim() == 0)
                    for y in ys):
        labels = torch.as_tensor([int(y) for y in ys])
    return Peek(inputs, labels, exact)


LABEL_ATTRIBUTES = ("targets", "labels", "target", "label", "y")


def _label_attribute(base: Any) -> Optional[torch.Tensor]:
    """All labels of a dataset that keeps them in a conventional attribute (`targets` as
    torchvision does, `labels`, `y`, ...): one integer per sample, else None."""
    try:
        n = len(base)
    except TypeError:
        return None
    for name in LABEL_ATTRIBUTES:
        value = getattr(base, name, None)
        if value is None or callable(value) or isinstance(value, (str, bytes)):
            continue
        try:
            t = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            continue
        if t.dim() == 1 and len(t) == n and not t.is_floating_point() and t.dtype != torch.bool:
            return t
    return None


def loader_batch_size(loader: Any) -> Optional[int]:
    """The DataLoader's batch size, also when it was given a batch_sampler."""
    bs = getattr(loader, "batch_size", None)
    if bs is None:
        bs = getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    return bs
