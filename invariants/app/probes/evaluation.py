"""`invar probe robustness`: after the script trained, its final model is evaluated again on
the inputs and labels of the script's own last evaluation pass, as they are and under each
input shift (shifts.py), and examined for health: dead units per rectifier layer, accuracy
per class, and whether evaluation inputs are normalised like training inputs.

`RobustnessProbe` is an Extension. While the script runs it keeps the inputs of every root
call made in evaluation (eval mode, no gradients) since the last optimizer step, with the
class scores and labels of the loss computed on them (a pass after more training replaces
the one before), and per-channel statistics of the training inputs. At the session's end
it runs the model itself, quietly, in eval mode (its mode restored after).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from invariants.app.probes import shifts as shiftmod
from tracer import data as datamod
from tracer.blocks import RECTIFIERS
from tracer.extension import Extension, SessionView
from tracer.patches import CLASSIFICATION_LOSSES

MAX_EVAL_SAMPLES = 4096        # evaluation samples kept (the first ones of the last pass)
MAX_TRAIN_CALLS = 50           # training calls whose inputs' statistics are accumulated
NORMALISED_MEAN_SHIFT = 0.5    # eval vs train channel means, in training standard deviations
NORMALISED_SE = 4.0            # ... or this many standard errors of that difference, if larger
NORMALISED_STD_RATIO = 3.0     # eval vs train channel spread, either way (augmentation widens it)
REGRESSION_LOSSES = {"mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss"}


@dataclass
class EvalBatch:
    """One evaluation call: where its input sits, the call's arguments, and what its loss got."""

    args: tuple
    kwargs: Dict[str, Any]
    where: Optional[Tuple[str, Any]]  # ("arg", i) or ("kw", name) of the first float input
    scores: Optional[torch.Tensor] = None
    labels: Optional[torch.Tensor] = None
    loss_name: Optional[str] = None

    def input(self) -> Optional[torch.Tensor]:
        if self.where is None:
            return None
        kind, key = self.where
        return self.args[key] if kind == "arg" else self.kwargs[key]

    def with_input(self, x: torch.Tensor) -> Tuple[tuple, Dict[str, Any]]:
        kind, key = self.where  # type: ignore[misc]
        if kind == "arg":
            return self.args[:key] + (x,) + self.args[key + 1:], self.kwargs
        return self.args, {**self.kwargs, key: x}


def _detached(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().clone()
    if isinstance(v, (tuple, list)):
        return type(v)(_detached(x) for x in v)
    if isinstance(v, dict):
        return {k: _detached(x) for k, x in v.items()}
    return v


def _first_float(args: tuple, kwargs: Dict[str, Any]) -> Optional[Tuple[str, Any]]:
    """Where the model's input is: its first float tensor with a batch dimension (None: the
    model gets no such tensor, e.g. token ids)."""
    def batched(v: Any) -> bool:
        return isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() >= 1
    for i, a in enumerate(args):
        if batched(a):
            return ("arg", i)
    return next((("kw", k) for k, v in kwargs.items() if batched(v)), None)


class ChannelMoments:
    """Per-channel count, sum and sum of squares (float64, on the CPU)."""

    def __init__(self) -> None:
        self.n = 0
        self.s: Optional[torch.Tensor] = None
        self.ss: Optional[torch.Tensor] = None

    def add(self, x: torch.Tensor) -> None:
        v = shiftmod.channel_view(x.detach().double()).cpu()
        if self.s is not None and len(v) != len(self.s):
            return
        s, ss = v.sum(1), (v * v).sum(1)
        self.s = s if self.s is None else self.s + s
        self.ss = ss if self.ss is None else self.ss + ss
        self.n += v.shape[1]

    def mean_std(self) -> Tuple[torch.Tensor, torch.Tensor]:
        assert self.s is not None and self.ss is not None
        mean = self.s / self.n
        return mean, (self.ss / self.n - mean * mean).clamp_min(0).sqrt()


class RobustnessProbe(Extension):
    """Captures the last evaluation pass, evaluates the final model under `shifts` at the end."""

    name = "probe_robustness"

    def __init__(self, shifts: List[Tuple[str, float]], seed: int = 0):
        self.shifts = shifts
        self.seed = seed
        self.batches: List[EvalBatch] = []
        self.samples = 0
        self.skipped = 0  # evaluation calls of the pass beyond MAX_EVAL_SAMPLES
        self._pass_step: Optional[int] = None
        self._loader: Any = None
        self._train = ChannelMoments()
        self._train_calls = 0
        self._train_samples = 0
        self.result: Dict[str, Any] = {}

    def on_input(self, session: SessionView, root: nn.Module, args: tuple, kwargs: Any) -> None:
        grad = torch.is_grad_enabled()
        where = _first_float(args, dict(kwargs))
        if root.training and grad:
            if where is not None and self._train_calls < MAX_TRAIN_CALLS:
                x = EvalBatch(args, dict(kwargs), where).input()
                self._train.add(x)
                self._train_calls += 1
                self._train_samples += len(x) if x.dim() else 1
            return
        if root.training or grad:
            return  # a train-mode forward without gradients, or the reverse: not an evaluation
        if self._pass_step != session.step:  # the first evaluation call after more training
            self._pass_step, self.batches, self.samples, self.skipped = session.step, [], 0, 0
        if self.samples >= MAX_EVAL_SAMPLES:
            self.skipped += 1
            return
        batch = EvalBatch(_detached(tuple(args)), _detached(dict(kwargs)), where)
        x = batch.input()
        self.samples += len(x) if x is not None and x.dim() else 1
        self.batches.append(batch)
        self._loader = session.current_loader() or self._loader

    def on_loss(self, session: SessionView, name: str, pair: tuple, result: Any) -> None:
        root = session.root
        if root is None or root.training or torch.is_grad_enabled() or not self.batches:
            return
        last = self.batches[-1]
        inp, target = pair
        if last.labels is None and isinstance(inp, torch.Tensor) and isinstance(target, torch.Tensor):
            last.scores, last.labels, last.loss_name = inp.detach().clone(), target.detach().clone(), name

    def on_end(self, session: SessionView) -> None:
        root = session.root
        labelled = [b for b in self.batches if b.labels is not None] or _labels_from_loader(self.batches, self._loader)
        if root is None:
            self.result = {"error": "the script never called a model the tracer could take for the trained one "
                                    "(a training in processes the script spawns is not seen)"}
            return
        if not labelled:
            self.result = {"error": "no evaluation pass was seen after training: the script must evaluate its model "
                                    "(model.eval(), torch.no_grad(), and a loss on the scores and labels or a loader in a "
                                    "fixed order) before it ends or before --steps stops it; give --steps 0 to run "
                                    "it to its end"}
            return
        was_training = root.training
        root.eval()
        try:
            with torch.no_grad():
                self.result = Evaluation(root, labelled, self._loader, self.seed).run(
                    self.shifts, self._train if self._train_calls else None, self._train_samples, self._pass_step)
            if self.skipped:
                self.result["notes"].append(f"the pass's first {self.samples} samples were evaluated; its "
                                            f"{self.skipped} later call(s) were not kept (at most "
                                            f"{MAX_EVAL_SAMPLES} samples)")
        except ValueError as e:  # what the probe cannot do with this script, said in its words
            self.result = {"error": str(e)}
        finally:
            root.train(was_training)

    def facts(self) -> Dict[str, Any]:
        return {"probe_result": {"probe": "robustness", **self.result}}


class Evaluation:
    """The final model run over the captured evaluation batches."""

    def __init__(self, root: nn.Module, batches: List[EvalBatch], loader: Any, seed: int):
        self.root, self.batches, self.loader = root, batches, loader
        self.seed = seed
        self.kind = _kind(batches[0].loss_name or "")
        self.notes: List[str] = []
        self._path: Optional[Tuple[Any, ...]] = None

    def run(self, shifts: List[Tuple[str, float]], train: Optional[ChannelMoments], train_samples: int,
            step: Optional[int]) -> Dict[str, Any]:
        dead: Dict[str, List[torch.Tensor]] = {}
        base = self._evaluate(None, dead)
        out: Dict[str, Any] = {"metric": "accuracy" if self.kind != "regression" else "loss",
                               "evaluated_after_step": step, "eval_samples": base["n"],
                               "baseline": {k: v for k, v in base.items() if k != "n"}}
        out["dead_units"] = {name: {"dead_fraction": float((m[0] <= 0).float().mean()), "units": int(m[0].numel())}
                             for name, m in dead.items()}
        if not dead:
            self.notes.append("no nn.ReLU/ReLU6 module in the model: dead units are not measured "
                              "(rectifiers called as functions are not hooked here)")
        xs = [b.input() for b in self.batches]
        if any(x is None for x in xs):
            self.notes.append("the model's input is not a float tensor (token ids?): input shifts do not apply")
            out["shifts"], out["normalisation"] = [], None
        else:
            model_in = torch.cat([x.detach() for x in xs])  # type: ignore[union-attr]
            out["normalisation"] = _normalisation(train, train_samples, model_in)
            out["shifts"] = self._shifted(shifts, model_in, base)
        out["notes"] = self.notes
        return out

    def _shifted(self, shifts: List[Tuple[str, float]], model_in: torch.Tensor, base: Dict[str, Any]) -> List[Dict[str, Any]]:
        original = self._original(len(model_in))
        amap = shiftmod.measure_map(original, model_in)
        self.notes.append(amap.note)
        orig = amap.to_original(model_in)
        lo, hi = float(orig.min()), float(orig.max())
        rows = []
        key = "accuracy" if self.kind != "regression" else "loss"
        for name, value in shifts:
            g = torch.Generator().manual_seed(self.seed)
            res = self._evaluate(lambda x: amap.to_model(shiftmod.apply(name, value, amap.to_original(x), lo, hi, g)),
                                 None)
            drop = base[key] - res[key] if key == "accuracy" else (res[key] - base[key]) / max(abs(base[key]), 1e-12)
            rows.append({"name": name, "value": value, key: res[key], "drop": drop})
        return rows

    def _original(self, n: int) -> Optional[torch.Tensor]:
        """The evaluation loader's samples as it yields them (at most n)."""
        ds = getattr(self.loader, "dataset", None)
        if ds is None:
            return None
        try:
            peek = datamod.peek(ds, min(len(ds), n))
        except Exception as e:  # a dataset that cannot be read out of order
            self.notes.append(f"the evaluation dataset could not be read ({type(e).__name__})")
            return None
        return peek.inputs.float() if peek.inputs is not None else None

    def _evaluate(self, transform: Any, dead: Optional[Dict[str, List[torch.Tensor]]]) -> Dict[str, Any]:
        hooks = _dead_unit_hooks(self.root, dead) if dead is not None else []
        try:
            scores, labels = [], []
            for b in self.batches:
                args, kwargs = (b.args, b.kwargs) if transform is None else b.with_input(transform(b.input()))
                out = self.root(*args, **kwargs)
                scores.append(self._scores(out, b))
                labels.append(b.labels)
        finally:
            for h in hooks:
                h.remove()
        return _metrics(self.kind, self.batches[0].loss_name or "", scores, labels)

    def _scores(self, out: Any, b: EvalBatch) -> torch.Tensor:
        if self._path is None:
            self._path = _find_scores(out, b, self.notes)
        t = _at(out, self._path)
        return t.reshape(b.scores.shape) if b.scores is not None and t.numel() == b.scores.numel() else t


LABEL_KEYS = ("labels", "label", "targets", "target", "y")


def _labels_from_loader(batches: List[EvalBatch], loader: Any) -> List[EvalBatch]:
    """An evaluation without a loss (accuracy from `argmax` alone): the labels of the same
    batches read again from its loader, which must yield them in a fixed order (a sequential
    sampler), each beside an input of the model's batch size; else none."""
    from torch.utils.data import SequentialSampler
    if not batches or loader is None or not isinstance(getattr(loader, "sampler", None), SequentialSampler):
        return []
    out: List[EvalBatch] = []
    with datamod.rng_preserved():
        for b, lb in zip(batches, loader):
            y = lb[1] if isinstance(lb, (tuple, list)) and len(lb) > 1 else (
                next((lb[k] for k in LABEL_KEYS if k in lb), None) if isinstance(lb, dict) else None)
            x = next((t for _, t in _tensors((b.args, b.kwargs)) if t.dim() >= 1), None)
            if not isinstance(y, torch.Tensor) or x is None or len(y) != len(x):
                return []
            b.labels, b.loss_name = y, ("mse_loss" if y.is_floating_point() else "cross_entropy")
            out.append(b)
    return out


def _kind(loss_name: str) -> str:
    if loss_name in CLASSIFICATION_LOSSES:
        return "multiclass"
    if loss_name.startswith("binary_cross_entropy"):
        return "binary"
    return "regression"


def _tensors(out: Any, path: Tuple[Any, ...] = ()) -> List[Tuple[Tuple[Any, ...], torch.Tensor]]:
    if isinstance(out, torch.Tensor):
        return [(path, out)]
    if isinstance(out, (tuple, list)):
        return [t for i, v in enumerate(out) for t in _tensors(v, path + (i,))]
    if isinstance(out, dict):
        return [t for k, v in out.items() for t in _tensors(v, path + (k,))]
    return []


def _at(out: Any, path: Tuple[Any, ...]) -> torch.Tensor:
    for key in path:
        out = out[key]
    return out


def _find_scores(out: Any, b: EvalBatch, notes: List[str]) -> Tuple[Any, ...]:
    """Which element of the model's output the loss got its scores from: the one equal to
    them, else the closest one with as many values (the script transformed them); without a
    loss, the first float element with one row per label."""
    scores = b.scores
    if scores is None:
        assert b.labels is not None
        rows = [p for p, t in _tensors(out) if t.is_floating_point() and t.dim() >= 1 and len(t) == len(b.labels)]
        if not rows:
            raise ValueError("no element of the model's output has one row per label: the probe cannot score it")
        notes.append("the script's evaluation computes no loss: labels were read again from its loader")
        return rows[0]
    cands = [(p, t) for p, t in _tensors(out) if t.numel() == scores.numel() and t.is_floating_point()]
    if not cands:
        raise ValueError("the class scores the loss got are no element of the model's output (the script computes "
                         "them from it): the probe cannot score the model itself")
    s = scores.float()
    best = min(cands, key=lambda c: float((c[1].reshape(s.shape).float() - s).abs().max()))
    if not torch.allclose(best[1].reshape(s.shape).float(), s, rtol=1e-3, atol=1e-4):
        notes.append("the final model's scores differ from those the script's last evaluation loss got (it "
                     "trained on after that pass, or the script transforms its output): the output element of "
                     "the same size is scored")
    return best[0]


def _metrics(kind: str, loss_name: str, scores: List[torch.Tensor], labels: List[torch.Tensor]) -> Dict[str, Any]:
    if kind == "regression":
        fn = getattr(torch.nn.functional, loss_name, torch.nn.functional.mse_loss)
        total = sum(float(fn(s.float(), y.float(), reduction="sum")) for s, y in zip(scores, labels))
        n = sum(y.numel() for y in labels)
        return {"loss": total / max(1, n), "n": n}
    preds, ys = [], []
    for s, y in zip(scores, labels):
        if kind == "binary":
            preds.append((s > (0.0 if loss_name.endswith("logits") else 0.5)).reshape(-1).long())
            ys.append((y > 0.5).reshape(-1).long())
            continue
        if y.is_floating_point() and y.shape == s.shape:  # probabilities as targets
            y = y.argmax(1)
        p = s.argmax(1) if s.dim() >= 2 else s.argmax().reshape(1)
        preds.append(p.reshape(-1))
        ys.append(y.reshape(-1).long())
    pred, y = torch.cat(preds), torch.cat(ys)
    keep = y >= 0  # ignore_index (-100)
    pred, y = pred[keep], y[keep]
    correct = (pred == y)
    per_class = {int(c): float(correct[y == c].float().mean()) for c in torch.unique(y).tolist()}
    return {"accuracy": float(correct.float().mean()) if len(y) else math.nan, "per_class": per_class,
            "n": int(len(y))}


def _dead_unit_hooks(root: nn.Module, dead: Dict[str, List[torch.Tensor]]) -> List[Any]:
    """Forward hooks on the rectifier modules: each unit's (dim 1) largest output, per module
    and per call of it within a forward (`layer1.0.relu#2` for the second)."""
    calls: Dict[str, int] = {}
    hooks = [root.register_forward_pre_hook(lambda m, a: calls.clear())]
    for name, module in root.named_modules():
        if not isinstance(module, RECTIFIERS):
            continue

        def hook(m: nn.Module, a: Any, out: Any, name: str = name) -> None:
            if not isinstance(out, torch.Tensor) or out.dim() < 2:
                return
            calls[name] = calls.get(name, 0) + 1
            key = name if calls[name] == 1 else f"{name}#{calls[name]}"
            unit_max = out.detach().amax(dim=[d for d in range(out.dim()) if d != 1]).float().cpu()
            if key in dead and dead[key][0].shape == unit_max.shape:
                dead[key][0] = torch.maximum(dead[key][0], unit_max)
            elif key not in dead:
                dead[key] = [unit_max]
        hooks.append(module.register_forward_hook(hook))
    return hooks


def _normalisation(train: Optional[ChannelMoments], train_samples: int, model_in: torch.Tensor) -> Optional[Dict[str, Any]]:
    """Evaluation inputs against training inputs, per channel: the mean's shift in training
    standard deviations and the ratio of spreads; `normalised_alike` by the thresholds above."""
    if train is None or train.s is None:
        return None
    ev = ChannelMoments()
    ev.add(model_in)
    if ev.s is None or len(ev.s) != len(train.s):
        return None
    tm, ts = train.mean_std()
    em, es = ev.mean_std()
    ts = ts.clamp_min(1e-12)
    shift = float(((em - tm).abs() / ts).max())
    ratio = es / ts
    worst_ratio = float(torch.where(ratio >= 1, ratio, 1 / ratio.clamp_min(1e-12)).max())
    n_eval = len(model_in)
    limit = max(NORMALISED_MEAN_SHIFT, NORMALISED_SE * math.sqrt(1 / max(1, n_eval) + 1 / max(1, train_samples)))
    return {"mean_shift": shift, "std_ratio": worst_ratio, "mean_shift_limit": limit,
            "normalised_alike": shift <= limit and worst_ratio <= NORMALISED_STD_RATIO,
            "train_mean": [round(float(v), 4) for v in tm[:8]], "eval_mean": [round(float(v), 4) for v in em[:8]]}
