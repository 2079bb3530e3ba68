"""TraceSession: global torch hooks, installed only inside a `with` block, that observe a
training run and emit named observations (see docs/observations.md).

The session observes, never changes: no RNG is consumed, no tensor is moved or modified,
no mode or `requires_grad` flag is touched, and an exception inside an observer is
recorded as a `tracer.fault` observation and silences that observer, never reaching the
user's program. Statistics are reduced on the tensor's device and gathered once per
flush (see stats.py).
"""
from __future__ import annotations

import collections
import contextlib
import resource
import statistics
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.optim.optimizer as optimizer_module
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import _BaseDataLoaderIter

from tracer import data as datamod
from tracer import stats
from tracer.blocks import ACTIVATIONS, RECTIFIERS
from tracer.graph import GraphRecord, capture, output_shapes
from tracer.loaders import LoaderTracker
from tracer.params import ParameterObserver, optimizer_stats
from tracer.pending import Pending, Row, row
from tracer.patches import (CLASSIFICATION_LOSSES, dropout_patches, jit_patches, loss_patches, patched,
                            relu_patches)

DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
MAX_FUNCTIONAL_RELUS = 32  # functional rectifier calls observed per forward
MIN_LABELS_SEEN = 256  # training labels seen before the largest one stands for the class count


class StepBudgetReached(BaseException):
    """Ends the traced script after the requested number of optimizer steps.

    A BaseException so that a script's own `except Exception` cannot swallow it."""


class StopRequested(BaseException):
    """Ends the traced script because a listener asked (e.g. `check --fail-fast`)."""


@dataclass(frozen=True)
class TraceConfig:
    """What to observe and how densely."""

    steps: int = 0            # optimizer steps before the run is ended; 0: run to the end
    dense_steps: int = 50     # every step below this is observed ...
    sample_every: int = 10    # ... then every sample_every-th step
    eval_batches: int = 4     # eval batches observed per eval pass
    block_depth: int = 1      # module levels below the root that form blocks
    activations: bool = True  # dead-unit fraction and range per activation module
    detail_every: int = 5     # activation and update-ratio statistics every N-th observed step
    lift_hooks: bool = True   # no module hooks during unobserved training steps (faster)


class TraceSession:
    """Installs the tracer's hooks for the duration of a `with` block.

    `sink(rows)` receives observations at every flush (once per observed optimizer step
    and at the end). `on_first_forward(model, args)` runs once, with the tracer quiet,
    when the root model is first called (the static phase of `check`).
    """

    def __init__(self, config: TraceConfig, sink: Callable[[List[Row]], None],
                 on_first_forward: Optional[Callable[[nn.Module, tuple], None]] = None,
                 extensions: Sequence[Any] = ()):
        self.config = config
        # Observers beyond the built-in ones (e.g. cross-rank digests): objects with a
        # `name` and `on_step(session, optimizer)`, called after every observed optimizer
        # step, before the flush, fault-guarded like the built-in observers. Optionally
        # `on_input(session, root, args)`, called at every call of the root model.
        self.extensions = list(extensions)
        self.sink = sink
        self.on_first_forward = on_first_forward
        self.step = 0
        self.faults: List[str] = []
        self.graph: Optional[GraphRecord] = None
        self.graph_error: Optional[str] = None
        self.phases: Set[str] = set()
        self.variables: Set[str] = set()
        self.stop_reason: Optional[str] = None
        self._quiet = 0
        self._disabled: Set[str] = set()
        self._stack: Optional[contextlib.ExitStack] = None
        self._pending = Pending()
        # A forward with gradients on but the model in eval mode is evaluation or a training
        # step run in the wrong mode: its observations wait here until the next optimizer
        # step (train) or the next forward (eval) decides.
        self._provisional = Pending()
        self._rec = self._pending  # where the current forward's observations go
        self._lr_peak = 0.0
        self._label_max, self._labels_counted = -1.0, 0
        self._mstack: List[nn.Module] = []       # modules executing inside the root call
        self._relu_calls: Dict[int, int] = {}    # parent module id -> functional relus seen
        self._modules_cache: Optional[Tuple[nn.Module, List[nn.Module]]] = None
        self._optimizers: "weakref.WeakSet[torch.optim.Optimizer]" = weakref.WeakSet()
        self._primary: Optional[weakref.ref] = None
        self._root: Optional[weakref.ref] = None
        self._names: Dict[int, str] = {}
        self._in_root = False
        self._dropouts_applied = 0
        self._depth = 0
        # The global module hooks are lifted for the forward and backward of a training step
        # that is not observed (every module call is slower while any global hook exists) and
        # put back at the next optimizer step, batch or loader pass (see _pause_module_hooks).
        self._module_hooks: Optional[Tuple[Any, Any]] = None
        self._recording: Optional[str] = None  # phase of the root call being recorded
        self._phase = "train"
        self._seen_this_step: Set[Tuple[str, str]] = set()
        self._eval_seen = 0
        self._module_calls: Optional[List[Tuple[str, str, List[List[int]]]]] = None
        self._first_forward_done = False
        self._data = LoaderTracker()
        self._zero_grad_calls = 0
        self._dropout_cache: Optional[Tuple[nn.Module, List[nn.Module]]] = None
        self._params = ParameterObserver(config.block_depth)
        self._step_started = time.perf_counter()
        self._step_times: collections.deque = collections.deque(maxlen=5)
        self._rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    # -- installation -----------------------------------------------------------------
    def __enter__(self) -> "TraceSession":
        s = contextlib.ExitStack()
        self._resume_module_hooks()
        s.callback(self._pause_module_hooks)
        opt = optimizer_module
        s.callback(opt.register_optimizer_step_pre_hook(self._pre_step).remove)
        s.callback(opt.register_optimizer_step_post_hook(self._post_step).remove)
        session = self

        def optimizer_init(original: Callable[..., Any]) -> Callable[..., Any]:
            def __init__(self_: Any, *args: Any, **kwargs: Any) -> None:
                original(self_, *args, **kwargs)
                session._optimizers.add(self_)
            return __init__

        def zero_grad(original: Callable[..., Any]) -> Callable[..., Any]:
            def zero_grad(self_: Any, *args: Any, **kwargs: Any) -> Any:
                session._zero_grad_calls += 1
                return original(self_, *args, **kwargs)
            return zero_grad

        def loader_init(original: Callable[..., Any]) -> Callable[..., Any]:
            def __init__(self_: Any, *args: Any, **kwargs: Any) -> None:
                original(self_, *args, **kwargs)
                session._guard("loader", session._data.register, self_)
            return __init__

        def loader_iter(original: Callable[..., Any]) -> Callable[..., Any]:
            def __iter__(self_: Any) -> Any:
                it = original(self_)
                session._guard("loader", session._loader_iterated, self_, it)
                session._resume_module_hooks()  # a new pass (often evaluation) is observed
                return it
            return __iter__

        def iter_next(original: Callable[..., Any]) -> Callable[..., Any]:
            def __next__(self_: Any) -> Any:
                session._data.current_id = getattr(self_, "_invar_loader", session._data.current_id)
                if session._module_hooks is None:
                    session._resume_module_hooks()
                return original(self_)
            return __next__

        s.enter_context(patched(torch.optim.Optimizer, "__init__", optimizer_init))
        s.enter_context(patched(torch.optim.Optimizer, "zero_grad", zero_grad))
        s.enter_context(patched(nn.Module, "zero_grad", zero_grad))
        s.enter_context(patched(DataLoader, "__init__", loader_init))
        s.enter_context(patched(DataLoader, "__iter__", loader_iter))
        s.enter_context(patched(_BaseDataLoaderIter, "__next__", iter_next))
        loss_patches(s, lambda name, pair, result: self._guard("loss", self._loss, name, pair, result))
        dropout_patches(s, self._dropout_applied)
        relu_patches(s, self._on_relu)
        jit_patches(s)  # last: it suspends every patch above while TorchScript compiles
        self._stack = s
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._stack is not None
        self._stack.close()
        self._stack = None
        self.flush()

    @contextlib.contextmanager
    def quiet(self) -> Any:
        """The tracer ignores everything inside (its own analyses run model code)."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def record(self, phase: str, variable: str, value: Any) -> None:
        """Adds one observation at the current step (for extensions)."""
        self._pending.value(self.step, phase, variable, value)

    def current_loader(self) -> Optional[DataLoader]:
        """The DataLoader whose batch is being processed, if any."""
        return self._data.current()

    def request_stop(self, reason: str) -> None:
        """Ends the run at the next optimizer step (listeners call this)."""
        self.stop_reason = reason

    # -- fault isolation --------------------------------------------------------------
    def _guard(self, observer: str, fn: Callable[..., Any], *args: Any) -> Any:
        if self._quiet or observer in self._disabled:
            return None
        self._quiet += 1
        try:
            return fn(*args)
        except Exception as e:  # an observer fault must never reach the user's program
            self._fault(observer, e)
            return None
        finally:
            self._quiet -= 1

    def _fault(self, observer: str, e: Exception) -> None:
        """Records an observer's exception and silences that observer for the run."""
        self._disabled.add(observer)
        msg = f"{observer}: {type(e).__name__}: {e}"[:500]
        self.faults.append(msg)
        self._pending.value(self.step, "train", "tracer.fault", msg)

    # -- step accounting --------------------------------------------------------------
    def observed(self, step: int) -> bool:
        c = self.config
        return step < c.dense_steps or (c.sample_every > 0 and step % c.sample_every == 0)

    def _detailed(self, step: int) -> bool:
        # The costlier statistics (a pass over every activation, a copy of the parameters).
        return self.config.detail_every <= 1 or step % self.config.detail_every == 0

    def flush(self) -> None:
        if self._pending.empty() and self._provisional.empty():
            return  # an unobserved step
        self._pending.absorb(self._provisional)
        rows = self._pending.resolve()
        if rows:
            for r in rows:
                self.variables.add(r[2])
                self.phases.add(r[1])
            self.sink(rows)

    @property
    def root(self) -> Optional[nn.Module]:
        return self._root() if self._root is not None else None

    def _optimizer_param_ids(self) -> Set[int]:
        return {id(p) for o in self._optimizers for g in o.param_groups for p in g["params"]}

    def _pick_root(self, module: nn.Module) -> bool:
        held = self._optimizer_param_ids()
        if held and any(id(p) in held for p in module.parameters()):
            self._root = weakref.ref(module)
            self._names = {id(m): n for n, m in module.named_modules()}
            return True
        return False

    # -- forward hooks ----------------------------------------------------------------
    def _resume_module_hooks(self) -> None:
        if self._module_hooks is None:
            mod = torch.nn.modules.module
            self._module_hooks = (mod.register_module_forward_pre_hook(self._pre_forward),
                                  mod.register_module_forward_hook(self._post_forward, always_call=True))

    def _pause_module_hooks(self) -> None:
        """Removes the global module hooks. Called at the root's call (and at the end of the
        session), so the root's own forward hook will not run: the state it would reset is
        reset here."""
        if self._module_hooks is not None:
            for handle in self._module_hooks:
                handle.remove()
            self._module_hooks = None
        self._depth, self._in_root, self._mstack, self._recording = 0, False, [], None

    def _pre_forward(self, module: nn.Module, args: tuple) -> None:
        if self._quiet:
            return
        self._depth += 1
        if self._in_root:
            self._mstack.append(module)
        elif self._depth == 1:
            root = self.root
            if root is None and self._optimizers:
                self._guard("root", self._pick_root, module)
                root = self.root
            if module is root:
                self._in_root = True
                self._mstack = [module]
                self._relu_calls = {}
                self._guard("input", self._root_called, module, args)
                for ext in self.extensions:  # optional: extensions that watch the model input
                    if hasattr(ext, "on_input"):
                        self._guard(ext.name, ext.on_input, self, module, args)

    def _post_forward(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self._quiet:
            return
        self._depth = max(0, self._depth - 1)
        if not self._in_root:
            return
        if self._mstack and self._mstack[-1] is module:
            self._mstack.pop()
        if self._depth == 0 and module is self.root:
            self._in_root = False
            self._mstack = []
            if self._recording is not None:
                self._guard("output", self._root_output, output)
                if self._module_calls is not None:
                    self._guard("graph", self._capture_graph, module)
            self._recording = None
            return
        if self._recording is not None:
            self._guard("module", self._module_output, module, output)

    def _phase_of(self, root: nn.Module) -> Tuple[str, bool]:
        """The phase of a root call, and whether it is provisional (gradients on, model in
        eval mode, not an evaluation loader's batch: evaluation, or training in the wrong
        mode; the next optimizer step decides)."""
        grad = torch.is_grad_enabled()
        role = self._data.current_role()
        if root.training and grad:
            if role != "train" and self._data.current_id is not None and self._data.has_train():
                return "eval", False  # batches of a loader that never drives optimizer steps
            return "train", False
        # (The current loader may be stale, so even the train loader's role does not decide.)
        return "eval", grad and role != "eval"

    def _root_called(self, root: nn.Module, args: tuple) -> None:
        self._pending.absorb(self._provisional)  # a new forward: the undecided one was evaluation
        phase, provisional = self._phase_of(root)
        self._phase = phase
        self._rec = self._provisional if provisional else self._pending
        if not self._first_forward_done:
            self._first_forward_done = True
            self._step_started = time.perf_counter()  # step 0 starts here, not at import time
            if self.on_first_forward is not None:
                try:
                    with self.quiet():
                        self.on_first_forward(root, args)
                except Exception as e:  # the static phase failing must not silence input stats
                    self._fault("static", e)
            self._module_calls = []
        if phase == "train":
            if not self.observed(self.step) or ("train", "input") in self._seen_this_step:
                # Nothing of this forward is recorded: no module hooks until the next step.
                if self.config.lift_hooks and self._module_calls is None:
                    self._pause_module_hooks()
                return
        else:
            if self._eval_seen >= self.config.eval_batches:
                return
            self._eval_seen += 1
            if not provisional:
                self._data.examine_late(self._pending, self.step)
        self._seen_this_step.add((phase, "input"))
        self._recording = phase
        self._dropouts_applied = 0
        x = next((a for a in args if isinstance(a, torch.Tensor)), None)
        p, step = self._rec, self.step
        if x is not None:
            p.value(step, phase, "input.shape", stats.shape_text(x.shape[1:]))
            p.value(step, phase, "input.batch", x.shape[0] if x.dim() else 1)
            p.value(step, phase, "input.dtype", stats.dtype_text(x.dtype))
            if x.is_floating_point() and x.dim() >= 3:
                p.value(step, phase, "input.side", x.shape[-1])
            p.stats(step, phase, "input.", stats.input_stats(x))
        p.value(step, phase, "model.training", root.training)
        modes = [m.training for m in self._modules(root)]
        p.value(step, phase, "model.train_mode_fraction", sum(modes) / len(modes))
        dropouts = [m.training for m in self._dropouts(root)]
        if dropouts:
            p.value(step, phase, "model.dropout_active", sum(dropouts) / len(dropouts))
        loader = self._data.current()
        if loader is not None and not provisional:
            role = self._data.roles.get(id(loader)) or ("eval" if phase == "eval" else None)
            if role == "eval":
                self._data.roles[id(loader)] = "eval"
                p.value(step, phase, "loader.eval.batch_size", datamod.loader_batch_size(loader))

    def _decide_provisional(self) -> None:
        """At an optimizer step: an undecided forward just before it was a training step
        taken in eval mode; its observations become train-phase ones."""
        prov = self._provisional
        if prov.empty():
            return
        self._provisional = Pending()
        if self.observed(self.step) and ("train", "input") not in self._seen_this_step:
            self._seen_this_step.add(("train", "input"))
            self._eval_seen = max(0, self._eval_seen - 1)
            self._pending.absorb(prov, phase="train")

    def _dropout_applied(self) -> None:
        if self._in_root and self._recording is not None and not self._quiet:
            self._dropouts_applied += 1

    def _root_output(self, output: Any) -> None:
        out = output
        if isinstance(out, (tuple, list)):
            out = next((o for o in out if isinstance(o, torch.Tensor)), None)
        elif isinstance(out, dict):
            out = next((o for o in out.values() if isinstance(o, torch.Tensor)), None)
        elif not isinstance(out, torch.Tensor):
            out = getattr(out, "logits", None)
        if not isinstance(out, torch.Tensor):
            return
        phase, step, p = self._recording or "train", self.step, self._rec
        # Dropout that really dropped during this forward (modules and functional calls alike).
        p.value(step, phase, "model.dropout_applied", self._dropouts_applied)
        self._dropouts_applied = 0
        p.value(step, phase, "output.shape", stats.shape_text(out.shape[1:]))
        if out.dim() >= 1:
            p.value(step, phase, "output.width", out.shape[-1])
        p.stats(step, phase, "output.", stats.output_stats(out))

    def _module_output(self, module: nn.Module, output: Any) -> None:
        name = self._names.get(id(module))
        if name is None:
            root = self.root
            if root is not None:
                self._names = {id(m): n for n, m in root.named_modules()}
                name = self._names.get(id(module), f"?{type(module).__name__}")
        if self._module_calls is not None:
            self._module_calls.append((name, type(module).__name__, output_shapes(output)))
        if (self.config.activations and self._recording == "train" and self._detailed(self.step)
                and isinstance(module, ACTIVATIONS)
                and isinstance(output, torch.Tensor) and ("act", name) not in self._seen_this_step):
            self._seen_this_step.add(("act", name))
            self._pending.stats(self.step, "train", f"act.{name}.",
                                stats.activation_stats(output, isinstance(module, RECTIFIERS)))

    def _on_relu(self, out: Any) -> None:
        if self._in_root and self._recording == "train" and not self._quiet:
            self._guard("activations", self._functional_relu, out)

    def _functional_relu(self, out: Any) -> None:
        """A rectifier called as a function (`F.relu`, `torch.relu`, `x.relu()`) inside the
        root's forward, named after the module whose forward calls it: `F.relu1` for the
        root's first, `layer1.0.F.relu2` for a submodule's second."""
        if (not self.config.activations or not self._detailed(self.step) or not isinstance(out, torch.Tensor)
                or not self._mstack):
            return
        parent = self._mstack[-1]
        if isinstance(parent, RECTIFIERS):
            return  # an nn.ReLU module: its forward hook observes it
        k = self._relu_calls.get(id(parent), 0) + 1
        self._relu_calls[id(parent)] = k
        if k > MAX_FUNCTIONAL_RELUS:
            return
        prefix = self._names.get(id(parent), "")
        name = f"{prefix}.F.relu{k}" if prefix else f"F.relu{k}"
        if ("act", name) in self._seen_this_step:
            return
        self._seen_this_step.add(("act", name))
        self._pending.stats(self.step, "train", f"act.{name}.", stats.activation_stats(out, True))

    def _capture_graph(self, root: nn.Module) -> None:
        calls, self._module_calls = self._module_calls or [], None
        with self.quiet():
            self.graph = capture(root, calls)

    # -- losses -----------------------------------------------------------------------
    def _loss(self, name: str, pair: tuple, result: Any) -> None:
        if self._in_root or self.root is None:
            return
        phase = self._phase
        if phase == "train" and not self.observed(self.step):
            return
        train = phase == "train"
        # the step's first loss, and its first classification loss (a model may have several)
        first = not train or ("train", "loss") not in self._seen_this_step
        cls = name in CLASSIFICATION_LOSSES and (not train or ("train", "cls") not in self._seen_this_step)
        if not first and not cls:
            return
        p, step = self._rec, self.step
        inp, target = pair
        if first:
            self._seen_this_step.add((phase, "loss"))
            tensors = [t for t in (inp, target) if isinstance(t, torch.Tensor)]
            p.value(step, phase, "loss.input_shapes", stats.shapes_text(tensors))
            if isinstance(inp, torch.Tensor) and isinstance(target, torch.Tensor):
                p.value(step, phase, "loss.broadcast", stats.broadcast_larger(inp.shape, target.shape))
            if isinstance(result, torch.Tensor) and result.numel() > 0:
                p.tensor(result.detach().float().mean(),
                         lambda v, step=step, phase=phase: [row(step, phase, "loss.value", v[0])])
        if cls and isinstance(inp, torch.Tensor) and isinstance(target, torch.Tensor):
            self._seen_this_step.add((phase, "cls"))
            self._classification(p, step, phase, inp, target)

    def _classification(self, p: Pending, step: int, phase: str, scores: torch.Tensor,
                        target: torch.Tensor) -> None:
        """The scores a classification loss gets (the classifier's output, whichever element
        of the model's output it is) and the labels."""
        if scores.dim() and scores.is_floating_point():
            p.value(step, phase, "loss.class_width", scores.shape[1] if scores.dim() >= 2 else scores.shape[0])
            p.stats(step, phase, "loss.", stats.class_probabilities(scores))
        st = stats.label_stats(target)
        if st is None:
            return
        p.stats(step, phase, "label.", st)
        p.value(step, phase, "label.shape", stats.shape_text(target.shape[1:]))
        if phase != "train":
            return
        n = target.numel()
        p.tensor(st[1][1:2], lambda v, step=step: self._classes_seen(step, v[0], n))
        k = self._data.train_classes
        if k is not None and k > 1:
            # distinct labels of the batch over what a shuffled batch would hold
            expected = k * (1 - (1 - 1 / k) ** n)
            p.tensor(st[1][2:3], lambda v, step=step: [row(step, "train", "label.mix", v[0] / expected)])

    def _classes_seen(self, step: int, label_max: float, n: int) -> List[Row]:
        # Built when the step's values arrive, in order: the largest label so far, once
        # enough labels were seen that the largest class has almost surely shown up.
        self._label_max = max(self._label_max, label_max)
        self._labels_counted += n
        if self._labels_counted < MIN_LABELS_SEEN:
            return []
        return [row(step, "train", "label.classes_seen", self._label_max + 1)]

    # -- data loaders -----------------------------------------------------------------
    def _loader_iterated(self, loader: DataLoader, it: Any) -> None:
        self._data.iterated(loader, it)
        self._eval_seen = 0

    # -- optimizer hooks --------------------------------------------------------------
    def _is_primary(self, optimizer: torch.optim.Optimizer) -> bool:
        if self._primary is None:
            self._primary = weakref.ref(optimizer)
        return self._primary() is optimizer

    def _pre_step(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        self._resume_module_hooks()  # whatever follows the step (evaluation) is observed
        if self._quiet or not self._is_primary(optimizer):
            return
        if not self._provisional.empty():
            self._guard("input", self._decide_provisional)
        if self.observed(self.step):
            if self.step > 0:  # zero_grad() may come before or after the forward, not at step 0
                self._pending.value(self.step, "train", "optim.zero_grad_calls", self._zero_grad_calls)
            root = self.root
            if root is not None:
                self._guard("blocks", self._params.before_step, self._pending, self.step, root,
                            self._optimizer_param_ids(), self._detailed(self.step))
            lr = self._guard("optimizer", optimizer_stats, self._pending, self.step, optimizer)
            if lr is not None and lr > 0:
                # Decay from the peak so far: a warm-up never lowers it, a collapse does.
                self._lr_peak = max(self._lr_peak, lr)
                self._pending.value(self.step, "train", "optim.lr_fraction_of_peak", lr / self._lr_peak)
            loader = self._data.current()
            if loader is not None:
                self._data.roles[id(loader)] = "train"
                self._pending.value(self.step, "train", "loader.train.batch_size",
                                    datamod.loader_batch_size(loader))
                self._guard("data", self._data.examine, self._pending, self.step, loader)

    def _post_step(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self._quiet or not self._is_primary(optimizer):
            return
        if self._params.has_snapshot():
            self._guard("update", self._params.after_step, self._pending, self.step)
        now = time.perf_counter()
        self._step_times.append(now - self._step_started)
        if self.observed(self.step):
            for ext in self.extensions:
                self._guard(ext.name, ext.on_step, self, optimizer)
            p = self._pending
            # A median over recent steps: one step slowed by another process is not a cost change.
            p.value(self.step, "train", "step.time", statistics.median(self._step_times))
            p.value(self.step, "train", "step.peak_mem", self._peak_memory())
        self._step_started = now
        self.flush()
        self.step += 1
        self._seen_this_step.clear()
        self._zero_grad_calls = 0
        self._eval_seen = 0
        if self.stop_reason is not None:
            raise StopRequested(self.stop_reason)
        if self.config.steps and self.step >= self.config.steps:
            raise StepBudgetReached(self.step)

    def _peak_memory(self) -> float:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return float(torch.cuda.max_memory_allocated())
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return float(max(0, rss - self._rss0) * 1024)

    def _modules(self, root: nn.Module) -> List[nn.Module]:
        if self._modules_cache is None or self._modules_cache[0] is not root:
            self._modules_cache = (root, list(root.modules()))
        return self._modules_cache[1]

    def _dropouts(self, root: nn.Module) -> List[nn.Module]:
        if self._dropout_cache is None or self._dropout_cache[0] is not root:
            self._dropout_cache = (root, [m for m in root.modules() if isinstance(m, DROPOUTS)])
        return self._dropout_cache[1]
