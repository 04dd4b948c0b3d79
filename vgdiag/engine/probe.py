"""Probe: per-layer gradient, weight and activation statistics, without disturbing.

How it stays cheap: forward hooks exist only while a sampled step is in flight (they
are added after the previous optimizer step and removed at the next one, and kept
when the next step is sampled too), so an unsampled step costs one counter check in
the optimizer's step hook and never waits for the device. On a sampled step every
number is computed on the device with batched reductions and copied to the host
once. Nothing here changes an output or a gradient: hooks only read.

Under torch.distributed the probe records on every rank. With DDP the gradients are
already averaged when optimizer.step() runs, so nothing is exchanged. With sharded
parameters (FSDP, DTensor) each rank holds a slice of every parameter: the per-parameter
sums of squares are added across ranks with one all_reduce per sampled step.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from vgdiag.engine.experiment import DEFAULT_EVERY, DEFAULT_HIST_EVERY
from vgdiag.engine.history import History
from vgdiag.engine.records import Histogram, LayerInfo, LayerStats, StepRecord

# Outputs within this distance of a bound count as saturated: sigmoid < 0.01 means a
# pre-activation below -4.6, where the derivative is under 0.01 (a 25x loss vs. 0).
SATURATION_EPS = 1e-2
HIST_BINS = 40
# log10|grad| histograms use fixed edges so histograms of different steps compare;
# values outside are clamped into the end bins.
GRAD_LOG_RANGE = (-16.0, 4.0)
DISTRIBUTED_MODES = ("auto", "sharded", "none")
# A power of two (exact in every float format) far below any margin between two
# float32 numbers near a saturation bound, and far above the smallest normal number.
_TINY = 2.0**-100

_SATURATING_01 = (nn.Sigmoid, nn.Hardsigmoid)
_SATURATING_11 = (nn.Tanh, nn.Hardtanh, nn.Softsign)
_RELU_FAMILY = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.GELU, nn.SiLU)
ACTIVATION_TYPES = _SATURATING_01 + _SATURATING_11 + _RELU_FAMILY
_LOW_PRECISION = (torch.float16, torch.bfloat16)
# Name parts that wrappers insert between the user's modules (torch.compile, FSDP,
# activation checkpointing); dropped so layers keep the names the user gave them.
_WRAPPER_PARTS = ("_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module")


def _foreach_norm(tensors: list[torch.Tensor], ord: float = 2.0) -> list[torch.Tensor]:
    # One fused kernel launch per dtype/device group where available; the fallback
    # gives the same numbers one tensor at a time. 16-bit tensors are summed in float32.
    if not tensors:
        return []
    dtype = torch.float32 if all(t.dtype in _LOW_PRECISION for t in tensors) else None
    try:
        return list(torch._foreach_norm(tensors, ord, dtype=dtype))
    except (AttributeError, RuntimeError, TypeError):
        return [torch.linalg.vector_norm(t, ord, dtype=dtype) for t in tensors]


def _l1_norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    # On the CPU abs().sum() is vectorised and about twice as fast as an ord=1 norm;
    # on accelerators the fused foreach kernel is one launch for all tensors.
    if tensors and tensors[0].device.type != "cpu":
        return _foreach_norm(tensors, 1.0)
    return [t.abs().sum(dtype=torch.float32 if t.dtype in _LOW_PRECISION else None)
            for t in tensors]


def _unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP/DataParallel and torch.compile wrappers."""
    for _ in range(8):  # wrappers nest (compile(DDP(model))); a bound, not a loop forever
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if inner is None and type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner
    return model


def _compiled_fullgraph(model: nn.Module) -> bool:
    """True for torch.compile(model, fullgraph=True) (at any depth of wrapping)."""
    for _ in range(8):
        ctx = getattr(model, "dynamo_ctx", None)
        if ctx is not None and getattr(ctx, "fullgraph", False):
            return True
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return False
        model = inner
    return False


def _clean_name(name: str) -> str:
    parts = [p for p in name.split(".") if p not in _WRAPPER_PARTS]
    return ".".join(parts) or "<root>"


class Probe:
    """Hooks on any nn.Module that record per-layer statistics on sampled steps.

    Args:
        model: the module to watch. A layer is a submodule that owns parameters
            directly; its depth is the order of its first execution in forward.
            DDP and torch.compile wrappers are looked through.
        optimizer: its step() marks step boundaries; without one, call `end_step()`
            yourself after each backward (update ratios are then not measured).
        every: sample every N-th optimizer step; step 0 is always sampled.
        hist_every: histograms on every N-th sampled step (0 disables them).
        max_records: bound of the in-memory history (older records are decimated).
        on_record: called with each StepRecord as soon as it is measured.
        history: where records go (a staged run shares one across its stages).
        start_step: global step of the first step (stages continue the count); the
            first step is always sampled.
        distributed: "auto" adds parameter statistics across ranks when parameters
            are sharded (FSDP, DTensor) and exchanges nothing otherwise (DDP, one
            process); "sharded" forces the exchange, "none" turns it off.
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
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be a positive integer, got {every}")
        if hist_every < 0:
            raise ValueError(f"hist_every must be >= 0, got {hist_every}")
        if distributed not in DISTRIBUTED_MODES:
            raise ValueError(
                f"distributed must be one of {', '.join(DISTRIBUTED_MODES)}, got {distributed!r}"
            )
        self.model = model
        self.optimizer = optimizer
        self.every = every
        self.hist_every = hist_every
        self.history = history if history is not None else History(max_records)
        self.on_record = on_record
        self.step = start_step  # global optimizer steps completed
        self.epoch = 0  # set by the trainer; recorded with each step
        self._samples = 0  # sampled steps completed
        # Records not yet drained. The trainer drains after every step; a user's own
        # loop never does, so the queue is bounded like the history (oldest dropped).
        self._pending: deque[StepRecord] = deque(maxlen=self.history.max_records)

        root = _unwrap(model)
        # A backward hook inside a graph compiled with fullgraph=True cannot hand a
        # value back to Python (torch.compile refuses it), so that one statistic goes.
        self._grad_hooks = not _compiled_fullgraph(model)
        if not self._grad_hooks:
            warnings.warn(
                "vgdiag: the model was compiled with fullgraph=True, where a hook on the "
                "backward pass cannot report values: grad_output_norm is not recorded (every "
                "other statistic is); compile without fullgraph=True to record it too",
                stacklevel=2,
            )
        self._owners, self._params = self._find_layers(root)
        self._tensors: list[torch.Tensor] = [p for _, _, p in self._params]
        # _find_layers lists a layer's parameters together: layer i owns _slices[i].
        owner = [i for i, _, _ in self._params]
        self._slices = [range(owner.index(i), len(owner) - owner[::-1].index(i))
                        for i in range(len(self._owners))]
        self._own = [[(k, pn) for k, (j, pn, _) in enumerate(self._params) if j == i]
                     for i in range(len(self._owners))]
        self._index_order: list[int] = []
        self._shapes = _original_shapes(root, self._tensors)
        self._numel = np.array([math.prod(s) for s in self._shapes], dtype=np.float64)
        self._numel_list = self._numel.tolist()
        # The parameter a layer's weight histogram shows: "weight", else its first one.
        self._weight_param = [
            next((k for k, (j, pn, _) in enumerate(self._params) if j == i and pn == "weight"),
                 next(k for k, (j, _, _) in enumerate(self._params) if j == i))
            for i in range(len(self._owners))
        ]
        self._activations = [(n, m) for n, m in root.named_modules()
                             if isinstance(m, ACTIVATION_TYPES)]
        self._order: list[int] = []  # layer indices in order of first execution
        self._activation_of: dict[int, str] = {}
        self._infos: list[LayerInfo] | None = None  # cache of `layers`
        self._sharded, self._replicas = _sharding(root, self._tensors, distributed)
        self.rank, self.world_size = _rank_and_world()
        self._dtensor = any(_is_dtensor(p) for p in self._tensors)
        with torch.no_grad():
            self._w0 = [p.clone() for p in self._values()]
        self._w0_norm: list[float] | None = None  # per parameter, on the host

        self._handles: list[RemovableHandle] = []
        self._fwd_handles: list[RemovableHandle] = []
        self._hook_fns: list[tuple[nn.Module, Callable[..., None]]] = []
        self._in_flight = False
        self._grad_out: dict[int, list[torch.Tensor]] = {}
        self._act: dict[int, tuple[int, int, float, list[torch.Tensor]]] = {}
        self._last_layer: int | None = None
        self._loss: torch.Tensor | None = None
        self._before: list[torch.Tensor] | None = None
        self._grad_pieces: dict[str, Any] | None = None
        self._closed = False
        self._attach()

    # ----- layers -------------------------------------------------------------
    @staticmethod
    def _find_layers(
        model: nn.Module,
    ) -> tuple[list[tuple[str, nn.Module]], list[tuple[int, str, nn.Parameter]]]:
        owners: list[tuple[str, nn.Module]] = []
        params: list[tuple[int, str, nn.Parameter]] = []
        seen: set[int] = set()  # a tied parameter belongs to the first module that owns it
        for name, module in model.named_modules():  # shared modules are listed once
            own = [
                (pname, p)
                for pname, p in module.named_parameters(recurse=False)
                if id(p) not in seen
            ]
            if not own:
                continue
            index = len(owners)
            owners.append((name, module))
            for pname, p in own:
                seen.add(id(p))
                params.append((index, pname, p))
        if not owners:
            raise ValueError("the model has no parameters: there is nothing to diagnose")
        if any(type(p).__name__ == "FlatParameter" for _, _, p in params):
            warnings.warn(
                "vgdiag: FSDP with use_orig_params=False flattens each FSDP unit into one "
                "parameter, so statistics are per unit, not per layer: wrap with "
                "use_orig_params=True or use FSDP2 (fully_shard) to see every layer",
                stacklevel=3,
            )
        return owners, params

    @property
    def layers(self) -> list[LayerInfo]:
        """Layers in depth order (executed ones first, in order of first execution)."""
        if self._infos is None:
            self._index_order = self._layer_indices()
            self._infos = [self._info(depth, i) for depth, i in enumerate(self._index_order)]
        return list(self._infos)

    def _info(self, depth: int, i: int) -> LayerInfo:
        name, module = self._owners[i]
        own = [k for k, (j, _, _) in enumerate(self._params) if j == i]
        weight = self._params[self._weight_param[i]]
        shape = self._shapes[self._weight_param[i]]
        return LayerInfo(
            name=_clean_name(name),
            kind=type(module).__name__,
            depth=depth,
            num_params=int(sum(self._numel[k] for k in own)),
            param_names=tuple(self._params[k][1] for k in own),
            activation=(_clean_name(self._activation_of[i]) if i in self._activation_of
                        else None),
            # (out, in, *kernel) -> in * kernel
            fan_in=math.prod(shape[1:]) if weight[1] == "weight" and len(shape) >= 2 else 0,
            trainable=any(self._params[k][2].requires_grad for k in own),
        )

    def _layer_indices(self) -> list[int]:
        seen = set(self._order)
        return self._order + [i for i in range(len(self._owners)) if i not in seen]

    # ----- hook management ----------------------------------------------------
    def _attach(self) -> None:
        if self.optimizer is not None:
            self._handles.append(self.optimizer.register_step_pre_hook(self._pre_step))
            self._handles.append(self.optimizer.register_step_post_hook(self._post_step))
        self._arm()  # step 0 is always sampled

    def _is_sampled(self, step: int) -> bool:
        return step % self.every == 0

    def _arm(self) -> None:
        """Get ready for a sampled step: fresh buffers, forward hooks in place."""
        self._in_flight = True
        self._grad_out = {}
        self._act = {}
        self._last_layer = None
        self._loss = None
        if self._fwd_handles:
            return  # still attached from the previous (sampled) step
        if not self._hook_fns:  # made once, attached on every sampled step
            self._hook_fns = [(m, self._layer_hook(i)) for i, (_, m) in enumerate(self._owners)]
            self._hook_fns += [(m, self._act_hook(n, m)) for n, m in self._activations]
        self._fwd_handles = [m.register_forward_hook(fn) for m, fn in self._hook_fns]

    def _disarm(self) -> None:
        for h in self._fwd_handles:
            h.remove()
        self._fwd_handles = []

    def _stop_forward_side(self) -> None:
        # Sampled steps in a row (every=1) keep their hooks: re-adding a dozen hooks
        # per step costs more than the check each one makes.
        if self._closed or not self._is_sampled(self.step + 1):
            self._disarm()

    def close(self) -> None:
        """Remove every hook; the model is left exactly as it was."""
        self._closed = True
        self._disarm()
        for h in self._handles:
            h.remove()
        self._handles = []
        self._in_flight = False

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- forward side (sampled steps only) ---------------------------------
    def _layer_hook(self, index: int) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not self._in_flight or not torch.is_grad_enabled():
                return  # evaluation passes are not training steps
            if index not in self._order:
                self._order.append(index)
                self._infos = None
            self._last_layer = index
            out = _first_tensor(output)
            if out is not None and out.requires_grad and self._grad_hooks:
                store = self._grad_out.setdefault(index, [])
                dtype = torch.float32 if out.dtype in _LOW_PRECISION else None

                def grad_hook(grad: torch.Tensor) -> None:
                    # A module used twice sends two gradients: their squares add up
                    # (on the host, from the norms).
                    store.append(torch.linalg.vector_norm(grad.detach(), dtype=dtype))

                out.register_hook(grad_hook)

        return hook

    def _act_hook(self, name: str, module: nn.Module) -> Callable[..., None]:
        kind = (1 if isinstance(module, _SATURATING_01) else
                2 if isinstance(module, _SATURATING_11) else 0)
        relu = isinstance(module, _RELU_FAMILY)

        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not self._in_flight or not torch.is_grad_enabled() or self._last_layer is None:
                return
            out = _first_tensor(output)
            if out is None or out.numel() == 0:
                return
            if self._last_layer not in self._activation_of:
                self._activation_of[self._last_layer] = name
                self._infos = None
            self._act[self._last_layer] = _activation_stats(out.detach(), kind, relu)

        return hook

    def observe_loss(self, loss: torch.Tensor) -> None:
        """Give the probe the step's loss, recorded with the step if it is sampled."""
        if self._in_flight:
            self._loss = loss.detach()

    # ----- optimizer side ------------------------------------------------------
    def _pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self._in_flight:
            return
        self._stop_forward_side()
        with torch.no_grad():
            self._grad_pieces = self._measure_grads()
            # The weights before the update; the post-step hook subtracts in place.
            self._before = [p.clone() for p in self._values()]

    def _post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._in_flight:
            with torch.no_grad():
                self._finish_sample(self._before)
        self._advance()

    def end_step(self) -> None:
        """Mark the end of a step when no optimizer was given (after backward)."""
        if self.optimizer is not None:
            raise RuntimeError("the probe follows optimizer.step(); do not call end_step()")
        if self._in_flight:
            self._stop_forward_side()
            with torch.no_grad():
                self._grad_pieces = self._measure_grads()
                self._finish_sample(None)
        self._advance()

    def before_update(self) -> None:
        """Without an optimizer: call after backward, before the parameters change.

        For steps whose update is not a plain optimizer.step() call the probe can
        hook: a closure that runs forward and backward inside step() (LBFGS,
        Lightning's automatic optimization) or a framework's own callbacks.
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
            self._stop_forward_side()
            with torch.no_grad():
                self._grad_pieces = self._measure_grads()
        self._post_step(None, (), {})

    def _advance(self) -> None:
        self.step += 1
        self._in_flight = False
        if not self._closed and self._is_sampled(self.step):
            self._arm()

    # ----- measurement ---------------------------------------------------------
    def _measure_grads(self) -> dict[str, Any]:
        # Called under no_grad: the tensors are read as they are, without detach().
        present = [k for k, p in enumerate(self._tensors) if p.grad is not None]
        grads: list[torch.Tensor] = [self._tensors[k].grad for k in present]  # type: ignore[misc]
        if self._dtensor:
            grads = [_local(g) for g in grads]
        return {
            "present": present,
            "l2": _foreach_norm(grads, 2.0),
            "l1": _l1_norms(grads),
            "grads": grads if self._hist_due() else None,
        }

    def _values(self) -> list[torch.Tensor]:
        """The parameters as plain tensors (this rank's slice of a DTensor)."""
        if self._dtensor:
            return [_local(p).detach() for p in self._tensors]
        return self._tensors  # read under no_grad

    def _hist_due(self) -> bool:
        return self.hist_every > 0 and self._samples % self.hist_every == 0

    def _finish_sample(self, before: list[torch.Tensor] | None) -> None:
        assert self._grad_pieces is not None
        pieces = self._grad_pieces
        params = self._values()
        w_norm = _foreach_norm(params)
        change = _foreach_norm(list(torch._foreach_sub(params, self._w0)))
        update: list[torch.Tensor] = []
        if before is not None:
            torch._foreach_sub_(before, params)  # our own copy: reuse it for the difference
            update = _foreach_norm(before)
        hist_parts, hist_meta = (self._histograms(pieces["present"], pieces["grads"])
                                 if pieces["grads"] is not None else ([], []))
        gout_idx = sorted(self._grad_out)
        act_idx = sorted(self._act)
        loss = self._loss
        if loss is None:
            loss = torch.full((), math.nan, device=self._w0[0].device)
        elif loss.dim():
            loss = loss.float().mean()

        # Everything goes into one vector that is copied to the host once: the
        # device scalars stacked in one kernel, then the 1-D pieces.
        scalars: dict[str, list[torch.Tensor]] = {
            "gout": [g for i in gout_idx for g in self._grad_out[i]],
            "act": [t for i in act_idx for t in self._act[i][3]],
            "loss": [loss],
        }
        vectors: dict[str, list[torch.Tensor]] = {}
        if self._sharded:
            vectors["reduced"] = [self._reduce_across_ranks(pieces, w_norm, change, update,
                                                            hist_parts)]
        else:
            scalars.update(l2=pieces["l2"], l1=pieces["l1"], wn=w_norm, ch=change, up=update)
            if self._w0_norm is None:  # constant: read once
                scalars["w0n"] = _foreach_norm(self._w0)
            vectors["hist"] = hist_parts
        device = self._w0[0].device
        flat = [_stack(sum(scalars.values(), []), device)]
        flat += [v.reshape(-1).to(device, torch.float64) for vs in vectors.values() for v in vs]
        host = torch.cat(flat).cpu().numpy()  # the one host copy of a sampled step
        chunks: dict[str, np.ndarray] = {}
        offset = 0
        for key, group in [*scalars.items(), *vectors.items()]:
            n = len(group) if key in scalars else sum(v.numel() for v in group)
            chunks[key] = host[offset : offset + n]
            offset += n
        if self._sharded:
            chunks.update(self._split_reduced(chunks.pop("reduced"), len(update), hist_meta))
        elif self._w0_norm is None:
            self._w0_norm = chunks["w0n"].tolist()
        record = self._assemble(pieces["present"], chunks, gout_idx, act_idx, hist_meta)
        self._samples += 1
        self._in_flight = False
        self._before = None
        self._grad_pieces = None
        self.history.append(record)
        self._pending.append(record)
        if self.on_record is not None:
            self.on_record(record)

    def _histograms(
        self, present: list[int], grads: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[tuple[str, int, float, float]]]:
        """Weight and log10|grad| histograms per layer, computed on the device."""
        parts: list[torch.Tensor] = []
        meta: list[tuple[str, int, float, float]] = []
        weights = self._hist_weights()
        # The weight range needs the current max |w|: one extra, small host copy on
        # histogram steps only (they are a fraction of the sampled steps).
        if weights:
            ext = torch.stack([torch.stack(torch.aminmax(w)).float().abs().max()
                               if w.numel() else torch.zeros((), device=w.device)
                               for _, w in weights])
            if self._sharded:
                torch.distributed.all_reduce(ext, op=torch.distributed.ReduceOp.MAX)
            for (li, w), m in zip(weights, ext.cpu().tolist()):
                m = m if m > 0 and math.isfinite(m) else 1.0
                # max |w| is in the data, so [-m, m] holds every weight: no clamp needed.
                parts.append(torch.histc(w.float(), HIST_BINS, -m, m))
                meta.append(("weight", li, -m, m))
        per_layer: dict[int, list[torch.Tensor]] = {}
        for k, g in zip(present, grads):
            per_layer.setdefault(self._params[k][0], []).append(g.reshape(-1))
        lo, hi = GRAD_LOG_RANGE
        for li in range(len(self._owners)) if self._sharded else sorted(per_layer):
            gs = per_layer.get(li)
            if not gs:  # a rank may hold no slice of a layer: it still adds zeros
                parts.append(torch.zeros(HIST_BINS, device=self._w0[0].device))
            else:
                g = torch.cat(gs).float().abs_().clamp_min_(1e-30).log10_().clamp_(lo, hi)
                parts.append(torch.histc(g, HIST_BINS, lo, hi))
            meta.append(("grad", li, lo, hi))
        return parts, meta

    def _hist_weights(self) -> list[tuple[int, torch.Tensor]]:
        return [(i, _local(self._tensors[k]).detach().reshape(-1))
                for i, k in enumerate(self._weight_param)]

    # ----- sharded parameters ----------------------------------------------------
    def _reduce_across_ranks(
        self,
        pieces: dict[str, Any],
        w_norm: list[torch.Tensor],
        change: list[torch.Tensor],
        update: list[torch.Tensor],
        hist_parts: list[torch.Tensor],
    ) -> torch.Tensor:
        """Sum per-parameter squares (and L1 sums, sizes, histogram counts) over ranks."""
        device = w_norm[0].device
        n = len(self._tensors)
        # Every rank sends the same layout: a parameter without a local gradient adds 0.
        l2 = torch.zeros(n, device=device, dtype=torch.float64)
        l1 = torch.zeros(n, device=device, dtype=torch.float64)
        if pieces["present"]:
            idx = torch.tensor(pieces["present"], device=device)
            l2[idx] = torch.stack(pieces["l2"]).double().square()
            l1[idx] = torch.stack(pieces["l1"]).double()
        rows = [l2, l1]
        for group in (w_norm, change, _foreach_norm(self._w0), update):
            if group:
                rows.append(torch.stack(group).double().square())
        rows.append(torch.tensor([_local(p).numel() for p in self._tensors], device=device,
                                 dtype=torch.float64))
        rows += [h.double().reshape(-1) for h in hist_parts]
        vector = torch.cat(rows)
        torch.distributed.all_reduce(vector)
        return vector

    def _split_reduced(
        self, vector: np.ndarray, n_update: int, hist_meta: list[tuple[str, int, float, float]]
    ) -> dict[str, np.ndarray]:
        n = len(self._tensors)
        replicas = self._replicas
        out: dict[str, np.ndarray] = {}
        offset = 0
        for key, length, squared in (("l2", n, True), ("l1", n, False), ("wn", n, True),
                                     ("ch", n, True), ("w0n", n, True),
                                     ("up", n_update, True), ("numel", n, False)):
            v = vector[offset : offset + length] / replicas[:length]
            out[key] = np.sqrt(np.maximum(v, 0.0)) if squared else v
            offset += length
        # Histogram counts of a replicated weight were added once per replica.
        counts = vector[offset:].reshape(-1, HIST_BINS) if hist_meta else np.zeros((0, HIST_BINS))
        weight_of = self._weight_param
        div = np.array([replicas[weight_of[li]] for _, li, _, _ in hist_meta])
        out["hist"] = (counts / div[:, None]).reshape(-1) if hist_meta else counts.reshape(-1)
        return out

    # ----- host side ---------------------------------------------------------------
    def _assemble(
        self,
        present: list[int],
        chunks: dict[str, np.ndarray],
        gout_idx: list[int],
        act_idx: list[int],
        hist_meta: list[tuple[str, int, float, float]],
    ) -> StepRecord:
        # Plain Python on lists: for a few dozen numbers per layer it is several times
        # faster than numpy calls, whose fixed cost dominates at these sizes.
        nan = math.nan
        n_params = len(self._tensors)
        requires = [p.requires_grad for p in self._tensors]
        # Gradient norms per parameter: absent grads count as 0 for trainable
        # parameters (unused this step) and as unmeasured for frozen ones.
        g2 = [0.0 if r else nan for r in requires]
        g1 = list(g2)
        if self._sharded:
            for k, (l2, l1) in enumerate(zip(chunks["l2"].tolist(), chunks["l1"].tolist())):
                if requires[k]:
                    g2[k], g1[k] = l2, l1
            numel = chunks["numel"].tolist()
            w0n = chunks["w0n"].tolist()
        else:
            for k, l2, l1 in zip(present, chunks["l2"].tolist(), chunks["l1"].tolist()):
                g2[k], g1[k] = l2, l1
            numel = self._numel_list
            assert self._w0_norm is not None
            w0n = self._w0_norm
        wn, ch = chunks["wn"].tolist(), chunks["ch"].tolist()
        up = chunks["up"].tolist() if len(chunks["up"]) == n_params else [nan] * n_params
        gout = chunks["gout"].tolist()
        act = chunks["act"].tolist()

        grad_out: dict[int, float] = {}
        offset = 0
        for i in gout_idx:
            count = len(self._grad_out[i])
            grad_out[i] = math.sqrt(sum(v * v for v in gout[offset : offset + count]))
            offset += count
        act_of: dict[int, tuple[float, float, float, float]] = {}
        offset = 0
        for i in act_idx:
            n, units, shift, tensors = self._act[i]
            v = act[offset : offset + len(tensors)]
            offset += len(tensors)
            act_of[i] = (
                v[0] + shift,
                v[1] / math.sqrt(n - 1) if n > 1 else nan,
                round(v[2] / _TINY) / n if units < 0 else nan,  # saturated count * _TINY
                v[2] / units if units > 0 else nan,
            )

        def norm(values: list[float], ks: range) -> float:
            return math.sqrt(sum(values[k] * values[k] for k in ks))

        layers: dict[str, LayerStats] = {}
        no_act = (nan, nan, nan, nan)
        for info, i in zip(self.layers, self._index_order):
            ks = self._slices[i]
            g, w, w0 = norm(g2, ks), norm(wn, ks), norm(w0n, ks)
            size = sum(numel[k] for k in ks)
            a = act_of.get(i, no_act)
            layers[info.name] = LayerStats(
                grad_norm=g,
                grad_mean_abs=sum(g1[k] for k in ks) / size if size else nan,
                weight_norm=w,
                weight_change=norm(ch, ks) / w0 if w0 else nan,
                update_ratio=norm(up, ks) / w if w else nan,
                grad_output_norm=grad_out.get(i, nan),
                act_mean=a[0],
                act_std=a[1],
                act_saturated=a[2],
                act_dead=a[3],
                param_grad_norms={pn: g2[k] for k, pn in self._own[i]},
            )
        loss = float(chunks["loss"][0])
        record = StepRecord(step=self.step, epoch=self.epoch, loss=loss, layers=layers)
        counts_all = chunks.get("hist", np.zeros(0)).reshape(-1, HIST_BINS)
        for (kind, li, lo, hi), counts in zip(hist_meta, counts_all):
            if kind == "grad" and not counts.any():
                continue  # no rank had a gradient for this layer (sharded, frozen)
            hist = Histogram(lo, hi, np.rint(counts).astype(np.int64))
            name = _clean_name(self._owners[li][0])
            (record.weight_hist if kind == "weight" else record.grad_hist)[name] = hist
        return record

    # ----- results -------------------------------------------------------------
    def drain(self) -> list[StepRecord]:
        """Records measured since the last drain (for the trainer's event stream)."""
        out = list(self._pending)
        self._pending.clear()
        return out


def _first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor to watch in a module's output (RNNs return (output, hidden))."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor) and item.is_floating_point():
                return item
    return None


def _activation_stats(
    out: torch.Tensor, kind: int, relu: bool
) -> tuple[int, int, float, list[torch.Tensor]]:
    """Device scalars of an activation's output: (numel, units, shift, [mean, dist, ...]).

    The mean is of x - shift and dist is ||x - mean||. `units` is -1 when a saturated
    count follows (sigmoid/tanh family), the number of units when a dead-unit count
    follows (ReLU family), 0 when neither does. Only vectorised float kernels are used
    (boolean tensors cost several times more on the CPU), and as few passes over the
    output as the numbers allow.
    """
    x = out.float() if out.dtype in _LOW_PRECISION or not out.is_floating_point() else out
    shift = 0.5 if kind == 1 else 0.0
    if shift:
        # Centred on the middle of (0, 1): the std is shift-invariant, and the
        # centred copy serves the saturation count too.
        x = x - shift
    mean = x.mean()
    # Two passes (mean, then the distance to it) keep the std exact for saturated
    # layers, where it is tiny next to the mean.
    tensors = [mean, torch.dist(x, mean)]
    units = 0
    if kind:
        # Saturated: |x - centre| > half-width - eps. Clamping that margin to
        # [0, _TINY] maps saturated outputs to exactly _TINY and the rest to 0, so the
        # sum is the count times _TINY (comparisons, which make boolean tensors, and
        # heaviside are several times slower on the CPU).
        beyond = x.abs_() if kind == 1 else x.abs()
        beyond.sub_((0.5 if kind == 1 else 1.0) - SATURATION_EPS).clamp_(0.0, _TINY)
        tensors.append(beyond.sum())
        units = -1
    elif relu and x.dim() >= 2 and x.shape[0] > 0:
        # A unit is dead for this batch when it is <= 0 for every sample.
        per_unit = x.flatten(1).amax(dim=0)
        tensors.append(per_unit.le(0).sum())
        units = int(per_unit.numel())
    return int(x.numel()), units, shift, tensors


def _is_dtensor(t: torch.Tensor) -> bool:
    return callable(getattr(t, "to_local", None)) and hasattr(t, "placements")


def _local(t: torch.Tensor) -> torch.Tensor:
    """The rank's own slice of a DTensor; any other tensor as is."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def _stack(scalars: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """0-d tensors -> one float64 vector on `device` (one kernel when they share it)."""
    if not scalars:
        return torch.zeros(0, device=device, dtype=torch.float64)
    try:
        return torch.stack(scalars).to(torch.float64)
    except RuntimeError:  # a model split across devices
        return torch.stack([t.to(device) for t in scalars]).to(torch.float64)


def _original_shapes(model: nn.Module, params: Sequence[torch.Tensor]) -> list[tuple[int, ...]]:
    """Each parameter's full shape (FSDP1 shows flat slices; DTensors their full shape)."""
    shapes = {id(p): tuple(p.shape) for p in params}
    for module in model.modules():
        flat = getattr(getattr(module, "_handle", None), "flat_param", None)
        originals = getattr(flat, "_params", None)
        full = getattr(flat, "_shapes", None)
        if originals is not None and full is not None:
            for p, shape in zip(originals, full):
                shapes[id(p)] = tuple(shape)
    return [shapes[id(p)] for p in params]


def _rank_and_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sharding(
    model: nn.Module, params: Sequence[torch.Tensor], mode: str
) -> tuple[bool, np.ndarray]:
    """Whether parameters are sharded across ranks, and each one's replica count.

    After the all_reduce a parameter held whole by R ranks (or sharded within groups
    that repeat R times, as in hybrid sharding) has been counted R times.
    """
    n = len(params)
    ones = np.ones(n)
    if mode == "none":
        return False, ones
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        if mode == "sharded":
            raise ValueError("distributed='sharded' needs torch.distributed to be initialised")
        return False, ones
    world = dist.get_world_size()
    fsdp_group = _fsdp1_group_size(model)
    is_dtensor = [_is_dtensor(p) for p in params]
    sharded = mode == "sharded" or fsdp_group is not None or any(is_dtensor)
    if not sharded:
        return False, ones
    replicas = np.empty(n)
    for k, p in enumerate(params):
        if is_dtensor[k]:
            mesh = p.device_mesh  # type: ignore[attr-defined]
            shards = math.prod(
                mesh.size(d) for d, pl in enumerate(p.placements)  # type: ignore[attr-defined]
                if pl.is_shard()
            )
            replicas[k] = world / max(shards, 1)
        elif fsdp_group is not None:
            replicas[k] = world / fsdp_group
        else:
            replicas[k] = world  # a plain tensor: every rank holds all of it
    return True, replicas


def _fsdp1_group_size(model: nn.Module) -> int | None:
    for module in model.modules():
        if type(module).__name__ == "FullyShardedDataParallel":
            group = getattr(module, "process_group", None)
            size = group.size() if group is not None and hasattr(group, "size") else None
            return int(size) if size else torch.distributed.get_world_size()
    return None
