"""Probe: per-layer gradient, weight and activation statistics, without disturbing.

How it stays cheap: hooks exist only while a sampled step is in flight (they are
added after the previous optimizer step and removed at the next one, and kept when
the next step is sampled too), so an unsampled step costs one counter check in the
optimizer's step hook and never waits for the device. On a sampled step every
number is computed on the device with batched reductions and copied to the host
once. Nothing here changes an output or a gradient: hooks only read, and a failure
inside the probe is reported as a warning and never reaches the user's training.

optimizer.step(closure) (LBFGS) is measured at the closure's first evaluation in the
step (probe_closure).

Where things live: probe_layers (what a layer is, depth from the backward graph),
probe_layout (the hooks of a sampled step), probe_activations (activation statistics),
probe_kernels (norms, histograms), probe_closure (optimizer.step(closure)), probe_flat
(every parameter statistic from flat buffers) or snapshots (W0 and pre-update copies,
sampled for large parameters),
probe_distributed (sharded parameters across ranks), probe_pack (the one host copy),
probe_record (the host-side StepRecord).
"""

from __future__ import annotations

import contextlib
import math
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from vgdiag.engine.defaults import DEFAULT_EVERY, DEFAULT_HIST_EVERY
from vgdiag.engine.history import History
from vgdiag.engine.probe_activations import SATURATION_EPS  # re-exported
from vgdiag.engine.probe_amp import calling_scaler, loss_scale
from vgdiag.engine.probe_closure import ClosureStep
from vgdiag.engine.probe_compile import EagerWhileSampled, can_run_eager
from vgdiag.engine.probe_distributed import (
    DISTRIBUTED_MODES,
    is_dtensor,
    local,
    original_shapes,
    rank_and_world,
    sharding,
    split_reduced,
)
from vgdiag.engine.probe_flat import FlatStats, fits
from vgdiag.engine.probe_kernels import (  # re-exported
    GRAD_LOG_RANGE,
    HIST_BINS,
    dense_grad,
)
from vgdiag.engine.probe_layers import (
    compiled_anywhere,
    compiled_fullgraph,
    find_layers,
    has_lazy_parameters,
    unwrap,
)
from vgdiag.engine.probe_layout import LayerLayout
from vgdiag.engine.probe_pack import (
    gradient_pieces,
    host_copy,
    layer_histograms,
    parameter_groups,
    read_back,
    scaled_grad_histograms,
)
from vgdiag.engine.probe_record import assemble
from vgdiag.engine.records import LayerInfo, StepRecord
from vgdiag.engine.snapshots import SAMPLE_THRESHOLD, Snapshots
from vgdiag.engine.warn import tell
from vgdiag.textfmt import plural

__all__ = ["DISTRIBUTED_MODES", "GRAD_LOG_RANGE", "HIST_BINS", "SATURATION_EPS", "Probe"]


class Probe:
    """Hooks on any nn.Module that record per-layer statistics on sampled steps.

    Args:
        model: the module to watch. A layer is a submodule that owns parameters
            directly (a recurrent module: one per stacked layer and direction); its
            depth is read from the backward graph (see probe_layers). DDP and
            torch.compile wrappers are looked through; lazy modules are measured
            from their first forward pass on.
        optimizer: its step() marks step boundaries; without one, call `end_step()`
            yourself after each backward (update ratios are then not measured).
        every: sample every N-th optimizer step; step 0 is always sampled.
        sample_first: every step numbered below N is sampled too (a loop of unknown
            length still gets enough samples to be diagnosed if it is short).
        hist_every: histograms on every N-th sampled step (0 disables them).
        max_records: bound of the in-memory history (older records are decimated).
        on_record: called with each StepRecord as soon as it is measured.
        history: where records go (a staged run shares one across its stages).
        start_step: global step of the first step (stages continue the count); the
            first step is always sampled.
        distributed: "auto" adds parameter statistics across ranks when parameters
            are sharded (FSDP, DTensor) and exchanges nothing otherwise (DDP, one
            process); "sharded" forces the exchange, "none" turns it off.
        snapshot_threshold: parameters with more elements keep a seeded sample of
            their coordinates for W0 and the pre-update copy, and their weight_change
            and update_ratio are estimated from it (vgdiag.engine.snapshots).
        scaler: the loop's torch.amp.GradScaler, for updates marked by hand
            (before_update); under scaler.step(optimizer) it is found by itself.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        every: int = DEFAULT_EVERY,
        hist_every: int = DEFAULT_HIST_EVERY,
        max_records: int = 4096,
        on_record: Callable[[StepRecord], None] | None = None,
        history: History | None = None,
        start_step: int = 0,
        distributed: str = "auto",
        snapshot_threshold: int = SAMPLE_THRESHOLD,
        scaler: Any = None,
        sample_first: int = 0,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be a positive integer, got {every}")
        if hist_every < 0:
            raise ValueError(f"hist_every must be >= 0, got {hist_every}")
        if distributed not in DISTRIBUTED_MODES:
            modes = ", ".join(DISTRIBUTED_MODES)
            raise ValueError(f"distributed must be one of {modes}, got {distributed!r}")
        self.model = model
        self.optimizer = optimizer
        self.every = every
        self.sample_first = sample_first
        self.hist_every = hist_every
        self.history = history if history is not None else History(max_records)
        self.on_record = on_record
        self.step = start_step  # global optimizer steps completed
        self.epoch = 0  # set by the trainer; recorded with each step
        self._samples = 0  # sampled steps completed
        # Records not yet drained. The trainer drains after every step; a user's own
        # loop never does, so the queue is bounded like the history (oldest dropped).
        self._pending: deque[StepRecord] = deque(maxlen=self.history.max_records)
        self._distributed = distributed
        self._snapshot_threshold = snapshot_threshold
        self._root = unwrap(model)
        # A compiled model's sampled steps run eager where this PyTorch can say so
        # (probe_compile); otherwise the hooks run inside the compiled graph, where a
        # backward hook cannot hand a value back to Python under fullgraph=True
        # (torch.compile refuses it), so that one statistic goes.
        self._eager = (EagerWhileSampled() if compiled_anywhere(model) and can_run_eager()
                       else None)
        if self._eager is not None:  # a probe dropped unclosed leaves no stance behind
            weakref.finalize(self, self._eager.leave)
        # Under fullgraph=True the output-gradient hook steps aside wherever it is
        # traced after all (a stance the loop set itself): see LayerLayout.
        self._fullgraph = compiled_fullgraph(model)
        self._grad_hooks = self._eager is not None or not self._fullgraph
        if not self._grad_hooks:
            warnings.warn(
                "vgdiag: the model was compiled with fullgraph=True, where a hook on the "
                "backward pass cannot report values: grad_output_norm is not recorded (every "
                "other statistic is); compile without fullgraph=True to record it too",
                stacklevel=2,
            )
        self._handles: list[RemovableHandle] = []
        self._fwd_handles: list[RemovableHandle] = []
        self._in_flight = False
        self._closed = False
        self._failed = False
        self._loss: torch.Tensor | None = None  # the sum of the step's losses so far
        self._losses = 0  # how many
        self._grad_pieces: dict[str, Any] | None = None
        # Mixed precision's loss scaler, where the loop has one (torch.amp.GradScaler);
        # found by itself when scaler.step() calls the optimizer, else set by the
        # front end (vgdiag.watch(scaler=), the integrations).
        self.scaler: Any = scaler
        # The optimizer whose updates are marked by hand (not hooked): the scaler's
        # state for it says whether .grad is still scaled.
        self.scaled_optimizer: Any = None
        self._scale: torch.Tensor | None = None  # the sampled step's, on the device
        self._grads_scaled = False  # its parameters' .grad still carry the scale
        self._ready = False
        # The optimizer.step(closure) in progress (None outside one, and for plain steps).
        self._closure_step: ClosureStep | None = None
        self._reevaluating = False  # a step's closure is being evaluated again
        self._warned_closure = False
        self._coverage_checked = False  # whether the optimizer holds every layer: once
        if self.optimizer is not None:
            self._handles.append(self.optimizer.register_step_pre_hook(self._pre_step))
            self._handles.append(self.optimizer.register_step_post_hook(self._post_step))
        if has_lazy_parameters(self._root):
            # Lazy modules get their shapes in their first forward pass: look then.
            find_layers(self._root)  # still refuse a model without parameters now
            self._lazy_handle: RemovableHandle | None = self._root.register_forward_hook(
                self._materialised)
        else:
            self._lazy_handle = None
            self._setup()
            self._arm()  # step 0 is always sampled

    def _setup(self) -> None:
        owners, params = find_layers(self._root)
        self._tensors: list[torch.Tensor] = [p for _, _, p in params]
        # Under torch.compile (of the model or of any part of it) a TorchFunctionMode
        # would change what is traced: there, unless sampled steps run eager,
        # activations come from modules only.
        functional = self._eager is not None or not compiled_anywhere(self.model)
        self._layout = LayerLayout(self._root, owners, params,
                                   original_shapes(self._root, self._tensors), self._guard,
                                   functional=functional, fullgraph=self._fullgraph)
        if not functional and not self._layout.has_activation_modules and len(owners) > 1:
            warnings.warn(
                "vgdiag: the model is compiled and has no activation modules: activations "
                "called as functions in forward (F.relu, torch.tanh) are not measured under "
                "torch.compile, so act_mean, act_std, act_saturated and act_dead stay empty "
                "and dead_units/saturated_activations cannot fire; use activation modules "
                "(nn.ReLU) or watch the model uncompiled to measure them", stacklevel=3)
        self._sharded, self._replicas = sharding(self._root, self._tensors, self._distributed)
        self.rank, self.world_size = rank_and_world()
        self._dtensor = any(is_dtensor(p) for p in self._tensors)
        values = self._values()
        # Parameters held whole in one dtype: every statistic from flat buffers in a
        # few kernels (probe_flat); otherwise per tensor, large ones sampled (snapshots).
        self._flat = (FlatStats(values) if not self._sharded and not self._dtensor
                      and fits(values, self._snapshot_threshold) else None)
        self._copies = Snapshots(values if self._flat is None else [], self._snapshot_threshold)
        self._device = values[0].device
        self._w0_norm: list[float] | None = None  # per parameter, on the host, read once
        self._ready = True

    def _materialised(self, module: nn.Module, inputs: Any, output: Any) -> None:
        assert self._lazy_handle is not None
        self._lazy_handle.remove()
        self._lazy_handle = None
        if self._closed:
            return
        with torch.no_grad():
            self._setup()
        if self._is_sampled(self.step):
            self._arm()

    def _split_reduced(self, vector: np.ndarray, n_update: int,
                       hist_meta: list[tuple[str, int, float, float]]) -> dict[str, np.ndarray]:
        return split_reduced(vector, len(self._tensors), self._replicas,
                             self._layout.weight_param, n_update, hist_meta)

    def snapshot_bytes(self) -> int:
        """Bytes the probe holds in weight copies (W0, pre-update, scratch; samples)."""
        flat = self._flat.extra_bytes() if self._ready and self._flat is not None else 0
        return (self._copies.extra_bytes() if self._ready else 0) + flat

    @property
    def layers(self) -> list[LayerInfo]:
        """Layers from input to loss (see probe_layers for how depth is read)."""
        return self._layout.infos() if self._ready else []

    # ----- hook management ----------------------------------------------------
    def _is_sampled(self, step: int) -> bool:
        return step % self.every == 0 or step < self.sample_first

    def _arm(self) -> None:
        """Get ready for a sampled step: fresh buffers, hooks in place."""
        self._in_flight = True
        self._loss, self._losses = None, 0
        self._layout.new_step()
        if not self._fwd_handles:  # still attached from the previous (sampled) step
            if self._eager is not None:  # before the hooks: see probe_compile
                self._eager.enter()
            self._fwd_handles = self._layout.attach(self._grad_hooks)

    def _disarm(self) -> None:
        for h in self._fwd_handles:
            h.remove()
        self._fwd_handles = []
        if self._eager is not None:
            self._eager.leave()
        if self._ready:
            self._layout.unwatch_backward()

    def _stop_forward_side(self) -> None:
        # Sampled steps in a row (every=1) keep their hooks: re-adding a dozen hooks
        # per step costs more than the check each one makes.
        if self._closed or not self._is_sampled(self.step + 1):
            self._disarm()

    def close(self) -> None:
        """Remove every hook; the model is left exactly as it was."""
        self._closed = True
        self._disarm()
        if self._ready:
            self._layout.close_functional()
        for h in self._handles:
            h.remove()
        self._handles = []
        self._closure_step = None  # a closure the optimizer still holds passes straight through
        if self._lazy_handle is not None:
            self._lazy_handle.remove()
            self._lazy_handle = None
        self._in_flight = False

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn`, but a failure drops this sample with a warning instead of raising."""
        def guarded(*args: Any) -> Any:
            if not self._in_flight:
                return None
            try:
                return fn(*args)
            except Exception as exc:  # the user's training must go on
                self._drop_sample(exc)
                return None
        return guarded

    def _drop_sample(self, exc: BaseException) -> None:
        if not self._failed:
            tell(f"vgdiag: the probe could not measure step {self.step} "
                 f"({type(exc).__name__}: {exc}); training goes on, this step is not "
                 "recorded", stacklevel=3)
        self._failed = True
        self._in_flight = False
        self._grad_pieces = None
        if self._ready:
            self._copies.drop_before()
            if self._flat is not None:
                self._flat.drop_before()

    def observe_loss(self, loss: torch.Tensor) -> None:
        """Give the probe the step's loss, recorded with the step if it is sampled.

        Several losses in one step (gradient accumulation: one per micro-batch) are
        recorded as their mean, the mean over the step's batch. Inside
        optimizer.step(closure) the loss of the closure's first evaluation is the
        step's (later evaluations are ignored); without one given there, the record
        takes the loss that evaluation returned.
        """
        if not self._in_flight:
            return
        value = loss.detach()
        if value.dtype != torch.float64:
            value = value.float()  # a 16-bit loss averaged in float32
        if value.dim():
            value = value.mean()
        # A sum kept on the device (no sync per micro-batch), divided when recorded: an
        # inf loss stays inf (a running mean would turn inf - inf into NaN).
        self._loss = value if self._loss is None else self._loss + value
        self._losses += 1

    @property
    def reevaluating(self) -> bool:
        """True while the optimizer evaluates a step's closure again (LBFGS's line
        search): the probe is muted, and the losses seen are not the step's."""
        return self._reevaluating

    # ----- optimizer side ------------------------------------------------------
    def _pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> tuple[Any, Any] | None:
        # args holds the optimizer itself first: more than that, or kwargs, may be a closure
        if len(args) > 1 or kwargs:
            wrapped = self._closure_pre_step(args, kwargs)
            if wrapped is not None:
                return wrapped
        if not self._in_flight:
            return None
        self._read_grads(self._keep_before)
        return None

    def _read_grads(self, then: Callable[[], None] | None = None) -> None:
        """Stop the forward side and measure the step's gradients (then `then`, without
        autograd); a failure drops the sample, never the user's step."""
        try:
            self._stop_forward_side()
            self._scale, self._grads_scaled = loss_scale(
                self.scaler or calling_scaler(), self.optimizer or self.scaled_optimizer)
            with torch.no_grad():
                self._grad_pieces = self._measure_grads()
                kept = self._grad_pieces["grads"]
                if kept is not None and self._scale is not None and self._grads_scaled:
                    self._grad_pieces["grad_hists"] = scaled_grad_histograms(
                        self, self._grad_pieces["present"], kept, self._scale)
                if then is not None:
                    then()
        except Exception as exc:
            self._drop_sample(exc)

    def _keep_before(self) -> None:
        # The weights before the update; the post-step hook subtracts in place.
        if self._flat is not None:
            self._flat.keep_before(self._values())
        else:
            self._copies.keep_before(self._values())

    def _closure_pre_step(self, args: Any, kwargs: Any) -> tuple[Any, Any] | None:
        """optimizer.step(closure): hand the optimizer a ClosureStep in its place.

        Every closure step gets one, sampled or not, so that the Watch can tell the
        closure's later evaluations apart (their losses are not the step's). On a
        sampled step the weights are kept here, before anything runs; the gradients
        and the forward pass are measured in the closure's first evaluation.
        """
        positional = len(args) > 1 and callable(args[1])
        closure = args[1] if positional else kwargs.get("closure")
        if closure is None or not callable(closure):
            return None
        state = ClosureStep(self, closure)
        self._closure_step = state
        if self._in_flight:
            self._grad_pieces = None  # the first evaluation sets it
            try:
                with torch.no_grad():
                    self._keep_before()
                state.kept_before = True
            except Exception as exc:
                self._drop_sample(exc)
        if positional:
            return (args[0], state, *args[2:]), kwargs
        return args, {**kwargs, "closure": state}

    def _end_closure_step(self) -> None:
        self._closure_step = None
        if not (self._in_flight and self._grad_pieces is None):
            return
        # The optimizer never called the closure: the gradients are read now, after
        # the update (the same unless the optimizer changed them in place).
        self._read_grads()
        if not self._warned_closure:
            self._warned_closure = True
            tell(
                f"vgdiag: optimizer.step(closure) did not call the closure at step "
                f"{self.step}: its gradients are read after the update, which is exact "
                "only if the optimizer leaves .grad as it was; for exact numbers watch "
                "with vgdiag.watch(model, optimizer, hook_optimizer=False) and mark the "
                "update with w.before_update() / w.after_update()", stacklevel=4)

    def _post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._closure_step is not None:
            self._end_closure_step()
        if not self._coverage_checked:
            self._coverage_checked = True
            with contextlib.suppress(Exception):  # a check, never a reason to break training
                self._check_coverage(optimizer)
        if self._in_flight:
            try:
                with torch.no_grad():
                    self._finish_sample(with_update=True)
            except Exception as exc:
                self._drop_sample(exc)
        self._advance()

    def _check_coverage(self, optimizer: Any) -> None:
        """Warn once where layers that got a gradient are not in the hooked optimizer
        (a second optimizer updates them): their update reads 0 at every step."""
        if not self._ready:
            return
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = list(dict.fromkeys(
            self._layout.owners[i][0] or "<root>" for i, _, p in self._layout.params
            if p.requires_grad and p.grad is not None and id(p) not in held))
        if not missing:
            return
        from vgdiag.engine.watch import user_stacklevel  # watch imports this module

        named = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3
                                          else "")
        tell(
            f"vgdiag: {plural(len(missing), 'layer')} with a gradient ({named}) "
            f"{'is' if len(missing) == 1 else 'are'} not in the optimizer vgdiag follows, "
            "so an update another optimizer makes reads 0 in update_ratio: with several "
            "optimizers, watch with hook_optimizer=False and mark the update yourself "
            "(w.before_update(); opt_a.step(); opt_b.step(); w.after_update())",
            stacklevel=user_stacklevel())

    def end_step(self) -> None:
        """Mark the end of a step when no optimizer was given (after backward)."""
        if self.optimizer is not None:
            raise RuntimeError("the probe follows optimizer.step(); do not call end_step()")
        if self._in_flight:
            self._read_grads(lambda: self._finish_sample(with_update=False))
        self._advance()

    def before_update(self) -> None:
        """Without an optimizer: call after backward, before the parameters change.

        For updates the probe cannot hook as optimizer.step(): a framework that calls
        step on a wrapper, or runs its own closure around it (Lightning's automatic
        optimization), where its callbacks mark the update. (An optimizer given to
        the probe is followed through optimizer.step(closure) by itself.)
        `after_update()` then ends the step, with its update ratios.
        """
        if self.optimizer is not None:
            raise RuntimeError("the probe follows optimizer.step(); do not call before_update()")
        self._pre_step(None, (), {})

    def after_update(self) -> None:
        """Without an optimizer: call once the parameters have been updated."""
        if self.optimizer is not None:
            raise RuntimeError("the probe follows optimizer.step(); do not call after_update()")
        if self._in_flight and self._grad_pieces is None:  # before_update() was skipped
            self.end_step()  # the step still counts, without its update ratios
            return
        self._post_step(None, (), {})

    def _advance(self) -> None:
        self.step += 1
        self._in_flight = False
        if self._fwd_handles and not self._is_sampled(self.step):
            self._disarm()  # a sample dropped before its gradients were read kept them on
        if not self._closed and self._ready and self._is_sampled(self.step):
            self._arm()

    # ----- measurement ---------------------------------------------------------
    def _measure_grads(self) -> dict[str, Any]:
        # Called under no_grad: the tensors are read as they are, without detach().
        present = [k for k, p in enumerate(self._tensors) if p.grad is not None]
        grads: list[torch.Tensor] = [self._tensors[k].grad for k in present]  # type: ignore[misc]
        if self._dtensor:
            grads = [local(g) for g in grads]
        grads = [dense_grad(g) for g in grads]
        self._layout.gradients_seen(present)
        return gradient_pieces(self._flat, present, grads, self._hist_due())

    def _values(self) -> list[torch.Tensor]:
        """The parameters as plain tensors (this rank's slice of a DTensor)."""
        if self._dtensor:
            return [local(p).detach() for p in self._tensors]
        return self._tensors  # read under no_grad

    def _hist_due(self) -> bool:
        return self.hist_every > 0 and self._samples % self.hist_every == 0

    def _finish_sample(self, with_update: bool) -> None:
        assert self._grad_pieces is not None
        pieces = self._grad_pieces
        layout = self._layout
        hist_parts, hist_meta = (layer_histograms(self, pieces["present"], pieces["grads"],
                                                  pieces.get("grad_hists"))
                                 if pieces["grads"] is not None else ([], []))
        step = layout.step_tensors()
        device = self._device
        loss = self._loss
        if loss is None:
            loss = torch.full((), math.nan, device=device)
        elif loss.dim():  # the closure's own return value (probe_closure)
            loss = loss.float().mean()
        elif self._losses > 1:
            loss = loss / self._losses

        # Everything goes into one vector that is copied to the host once.
        scalars: dict[str, list[torch.Tensor]] = {
            "gout": step["gout"], "act": step["act"], "loss": [loss],
            "scale": [] if self._scale is None else [self._scale.to(device)]}
        vectors: dict[str, list[torch.Tensor]] = {"time": step["time"], "hist": hist_parts}
        n_update = parameter_groups(self, pieces, with_update, scalars, vectors)
        chunks = host_copy(scalars, vectors, device)
        read_back(self, chunks, pieces, n_update, hist_meta)
        layout.backward_done()
        record = assemble(self, pieces["present"], chunks, step, hist_meta)
        self._samples += 1
        self._in_flight = False
        self._grad_pieces = None
        self.history.append(record)
        self._pending.append(record)
        if self.on_record is not None:
            self.on_record(record)

    # ----- results -------------------------------------------------------------
    def drain(self) -> list[StepRecord]:
        """Records measured since the last drain (for the trainer's event stream)."""
        out = list(self._pending)
        self._pending.clear()
        return out
