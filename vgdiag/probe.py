"""Probe: per-layer gradient, weight and activation statistics, without disturbing.

How it stays cheap: forward hooks exist only while a sampled step is in flight (they
are added after the previous optimizer step and removed at the next one), so an
unsampled step costs one counter check in the optimizer's step hook. On a sampled
step every number is computed on the device with batched reductions and copied to
the host once. Nothing here changes an output or a gradient: hooks only read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from vgdiag.history import History
from vgdiag.records import Histogram, LayerInfo, LayerStats, StepRecord

# Outputs within this distance of a bound count as saturated: sigmoid < 0.01 means a
# pre-activation below -4.6, where the derivative is under 0.01 (a 25x loss vs. 0).
SATURATION_EPS = 1e-2
HIST_BINS = 40
# log10|grad| histograms use fixed edges so histograms of different steps compare;
# values outside are clamped into the end bins.
GRAD_LOG_RANGE = (-16.0, 4.0)

_SATURATING_01 = (nn.Sigmoid, nn.Hardsigmoid)
_SATURATING_11 = (nn.Tanh, nn.Hardtanh, nn.Softsign)
_RELU_FAMILY = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.GELU, nn.SiLU)
ACTIVATION_TYPES = _SATURATING_01 + _SATURATING_11 + _RELU_FAMILY

_ACT_NAN = torch.tensor(math.nan)


def _foreach_norm(tensors: list[torch.Tensor], ord: float = 2.0) -> list[torch.Tensor]:
    # One fused kernel launch per dtype/device group where available; the fallback
    # gives the same numbers one tensor at a time.
    if not tensors:
        return []
    try:
        return list(torch._foreach_norm(tensors, ord))
    except (AttributeError, RuntimeError, TypeError):
        return [torch.linalg.vector_norm(t, ord) for t in tensors]


class Probe:
    """Hooks on any nn.Module that record per-layer statistics on sampled steps.

    Args:
        model: the module to watch. A layer is a submodule that owns parameters
            directly; its depth is the order of its first execution in forward.
        optimizer: its step() marks step boundaries; without one, call `end_step()`
            yourself after each backward (update ratios are then not measured).
        every: sample every N-th optimizer step; step 0 is always sampled.
        hist_every: histograms on every N-th sampled step (0 disables them).
        max_records: bound of the in-memory history (older records are decimated).
        on_record: called with each StepRecord as soon as it is measured.
        history: where records go (a staged run shares one across its stages).
        start_step: global step of the first step (stages continue the count); the
            first step is always sampled.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        every: int = 10,
        hist_every: int = 10,
        max_records: int = 4096,
        on_record: Callable[[StepRecord], None] | None = None,
        history: History | None = None,
        start_step: int = 0,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be a positive integer, got {every}")
        if hist_every < 0:
            raise ValueError(f"hist_every must be >= 0, got {hist_every}")
        self.model = model
        self.optimizer = optimizer
        self.every = every
        self.hist_every = hist_every
        self.history = history if history is not None else History(max_records)
        self.on_record = on_record
        self.step = start_step  # global optimizer steps completed
        self.epoch = 0  # set by the trainer; recorded with each step
        self._samples = 0  # sampled steps completed
        self._pending: list[StepRecord] = []

        self._owners, self._params = self._find_layers(model)
        self._layer_of_param = np.array([i for i, _, _ in self._params], dtype=np.int64)
        self._order: list[int] = []  # layer indices in order of first execution
        self._activation_of: dict[int, str] = {}
        self._w0 = [p.detach().clone() for _, _, p in self._params]

        self._handles: list[RemovableHandle] = []
        self._fwd_handles: list[RemovableHandle] = []
        self._in_flight = False
        self._grad_out_sq: dict[int, list[torch.Tensor]] = {}
        self._act: dict[int, torch.Tensor] = {}  # layer index -> [mean, std, sat, dead]
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
        return owners, params

    @property
    def layers(self) -> list[LayerInfo]:
        """Layers in depth order (executed ones first, in order of first execution)."""
        order = self._order + [i for i in range(len(self._owners)) if i not in self._order]
        infos = []
        for depth, i in enumerate(order):
            name, module = self._owners[i]
            own = [(pn, p) for j, pn, p in self._params if j == i]
            infos.append(
                LayerInfo(
                    name=name or "<root>",
                    kind=type(module).__name__,
                    depth=depth,
                    num_params=sum(p.numel() for _, p in own),
                    param_names=tuple(pn for pn, _ in own),
                    activation=self._activation_of.get(i),
                    fan_in=_fan_in(dict(own)),
                    trainable=any(p.requires_grad for _, p in own),
                )
            )
        return infos

    # ----- hook management ----------------------------------------------------
    def _attach(self) -> None:
        if self.optimizer is not None:
            self._handles.append(self.optimizer.register_step_pre_hook(self._pre_step))
            self._handles.append(self.optimizer.register_step_post_hook(self._post_step))
        self._arm()  # step 0 is always sampled

    def _is_sampled(self, step: int) -> bool:
        return step % self.every == 0

    def _arm(self) -> None:
        """Add the forward hooks for the coming sampled step."""
        self._in_flight = True
        self._grad_out_sq = {}
        self._act = {}
        self._last_layer = None
        self._loss = None
        for i, (_, module) in enumerate(self._owners):
            self._fwd_handles.append(module.register_forward_hook(self._layer_hook(i)))
        for name, module in self.model.named_modules():
            if isinstance(module, ACTIVATION_TYPES):
                self._fwd_handles.append(module.register_forward_hook(self._act_hook(name)))

    def _disarm(self) -> None:
        for h in self._fwd_handles:
            h.remove()
        self._fwd_handles = []

    def close(self) -> None:
        """Remove every hook; the model is left exactly as it was."""
        self._disarm()
        for h in self._handles:
            h.remove()
        self._handles = []
        self._in_flight = False
        self._closed = True

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- forward side (sampled steps only) ---------------------------------
    def _layer_hook(self, index: int) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not torch.is_grad_enabled():
                return  # evaluation passes are not training steps
            if index not in self._order:
                self._order.append(index)
            self._last_layer = index
            out = _first_tensor(output)
            if out is not None and out.requires_grad:
                store = self._grad_out_sq.setdefault(index, [])

                def grad_hook(grad: torch.Tensor) -> None:
                    # A module used twice sends two gradients: their squares add up.
                    store.append(torch.linalg.vector_norm(grad.detach().float()).square())

                out.register_hook(grad_hook)

        return hook

    def _act_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not torch.is_grad_enabled() or self._last_layer is None:
                return
            out = _first_tensor(output)
            if out is None or out.numel() == 0:
                return
            self._activation_of.setdefault(self._last_layer, name)
            self._act[self._last_layer] = _activation_stats(module, out.detach())

        return hook

    def observe_loss(self, loss: torch.Tensor) -> None:
        """Give the probe the step's loss, recorded with the step if it is sampled."""
        if self._in_flight:
            self._loss = loss.detach()

    # ----- optimizer side ------------------------------------------------------
    def _pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self._in_flight:
            return
        self._disarm()
        self._grad_pieces = self._measure_grads()
        self._before = [p.detach().clone() for _, _, p in self._params]

    def _post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._in_flight:
            self._finish_sample(self._before)
        self._advance()

    def end_step(self) -> None:
        """Mark the end of a step when no optimizer was given (after backward)."""
        if self.optimizer is not None:
            raise RuntimeError("the probe follows optimizer.step(); do not call end_step()")
        if self._in_flight:
            self._disarm()
            self._grad_pieces = self._measure_grads()
            self._finish_sample(None)
        self._advance()

    def _advance(self) -> None:
        self.step += 1
        self._in_flight = False
        if not self._closed and self._is_sampled(self.step):
            self._arm()

    # ----- measurement ---------------------------------------------------------
    def _measure_grads(self) -> dict[str, Any]:
        present = [k for k, (_, _, p) in enumerate(self._params) if p.grad is not None]
        grads = [self._params[k][2].grad.detach() for k in present]  # type: ignore[union-attr]
        return {
            "present": present,
            "l2": _foreach_norm(grads, 2.0),
            "l1": _foreach_norm(grads, 1.0),
            "grads": grads if self._hist_due() else None,
        }

    def _hist_due(self) -> bool:
        return self.hist_every > 0 and self._samples % self.hist_every == 0

    def _finish_sample(self, before: list[torch.Tensor] | None) -> None:
        assert self._grad_pieces is not None
        pieces = self._grad_pieces
        params = [p.detach() for _, _, p in self._params]
        w_norm = _foreach_norm(params)
        change = _foreach_norm(list(torch._foreach_sub(params, self._w0)))
        w0_norm = self._w0_norm()
        update = _foreach_norm(list(torch._foreach_sub(params, before))) if before else []
        gout_idx = sorted(self._grad_out_sq)
        gout = [torch.stack(self._grad_out_sq[i]).sum() for i in gout_idx]
        act_idx = sorted(self._act)
        hist_parts, hist_meta = self._histograms(pieces["grads"]) if pieces["grads"] else ([], [])

        flat: list[torch.Tensor] = []
        sizes: list[int] = []
        device = params[0].device
        for group in (pieces["l2"], pieces["l1"], w_norm, change, w0_norm, update, gout):
            flat.append(torch.stack(group).double() if group else torch.zeros(0, device=device))
            sizes.append(len(group))
        flat.append(
            torch.stack([self._act[i] for i in act_idx]).double().reshape(-1)
            if act_idx
            else torch.zeros(0, device=device)
        )
        sizes.append(4 * len(act_idx))
        loss = self._loss if self._loss is not None else _ACT_NAN.to(device)
        flat.append(loss.double().reshape(1))
        sizes.append(1)
        for part in hist_parts:
            flat.append(part.double())
            sizes.append(part.numel())
        host = torch.cat([f.to(device, torch.float64) for f in flat]).cpu().numpy()  # one copy
        chunks = np.split(host, np.cumsum(sizes)[:-1])
        l2, l1, wn, ch, w0n, up, go, act, loss_arr = chunks[:9]
        record = self._assemble(pieces["present"], l2, l1, wn, ch, w0n, up, gout_idx, go,
                                act_idx, act, float(loss_arr[0]), hist_meta, chunks[9:])
        self._samples += 1
        self._in_flight = False
        self._before = None
        self._grad_pieces = None
        self.history.append(record)
        self._pending.append(record)
        if self.on_record is not None:
            self.on_record(record)

    def _w0_norm(self) -> list[torch.Tensor]:
        if not hasattr(self, "_w0_norm_cache"):
            self._w0_norm_cache = _foreach_norm(self._w0)
        return self._w0_norm_cache

    def _histograms(
        self, grads: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[tuple[str, int, float, float]]]:
        """Weight and log10|grad| histograms per layer, computed on the device."""
        parts: list[torch.Tensor] = []
        meta: list[tuple[str, int, float, float]] = []
        weights = self._hist_weights()
        # The weight range needs the current max |w|: one extra, small host copy on
        # histogram steps only (they are a fraction of the sampled steps).
        if weights:
            amax = torch.stack([w.abs().max() for _, w in weights]).float().cpu().tolist()
            for (li, w), m in zip(weights, amax):
                m = m if m > 0 and math.isfinite(m) else 1.0
                parts.append(torch.histc(w.float().clamp(-m, m), HIST_BINS, -m, m))
                meta.append(("weight", li, -m, m))
        per_layer: dict[int, list[torch.Tensor]] = {}
        for k, g in zip(self._grad_pieces["present"] if self._grad_pieces else [], grads):
            per_layer.setdefault(self._params[k][0], []).append(g.reshape(-1))
        lo, hi = GRAD_LOG_RANGE
        for li, gs in sorted(per_layer.items()):
            g = torch.cat(gs).float().abs().clamp_min(1e-30).log10().clamp(lo, hi)
            parts.append(torch.histc(g, HIST_BINS, lo, hi))
            meta.append(("grad", li, lo, hi))
        return parts, meta

    def _hist_weights(self) -> list[tuple[int, torch.Tensor]]:
        out = []
        for i in range(len(self._owners)):
            own = {pn: p for j, pn, p in self._params if j == i}
            w = own.get("weight", next(iter(own.values())))
            out.append((i, w.detach().reshape(-1)))
        return out

    def _assemble(
        self,
        present: list[int],
        l2: np.ndarray,
        l1: np.ndarray,
        wn: np.ndarray,
        ch: np.ndarray,
        w0n: np.ndarray,
        up: np.ndarray,
        gout_idx: list[int],
        go: np.ndarray,
        act_idx: list[int],
        act: np.ndarray,
        loss: float,
        hist_meta: list[tuple[str, int, float, float]],
        hist_counts: list[np.ndarray],
    ) -> StepRecord:
        n_params = len(self._params)
        owner = self._layer_of_param
        # Gradient norms per parameter: absent grads count as 0 for trainable
        # parameters (unused this step) and as unmeasured for frozen ones.
        g2 = np.array([0.0 if p.requires_grad else math.nan for _, _, p in self._params])
        g1 = g2.copy()
        g2[present] = l2
        g1[present] = l1
        numel = np.array([p.numel() for _, _, p in self._params], dtype=np.float64)
        upd = up if len(up) == n_params else np.full(n_params, math.nan)
        n_layers = len(self._owners)

        def per_layer_norm(v: np.ndarray) -> np.ndarray:
            return np.sqrt(np.bincount(owner, weights=np.square(v), minlength=n_layers))

        grad_norm = per_layer_norm(g2)
        grad_l1 = np.bincount(owner, weights=g1, minlength=n_layers)
        layer_numel = np.bincount(owner, weights=numel, minlength=n_layers)
        weight_norm = per_layer_norm(wn)
        with np.errstate(divide="ignore", invalid="ignore"):
            weight_change = per_layer_norm(ch) / per_layer_norm(w0n)
            update_ratio = per_layer_norm(upd) / weight_norm
            grad_mean_abs = grad_l1 / layer_numel
        go_by_layer = dict(zip(gout_idx, np.sqrt(go)))
        act_by_layer = dict(zip(act_idx, act.reshape(-1, 4)))

        layers: dict[str, LayerStats] = {}
        by_index = {info.name: i for i, info in zip(self._layer_indices(), self.layers)}
        for name, i in by_index.items():
            a = act_by_layer.get(i)
            layers[name] = LayerStats(
                grad_norm=float(grad_norm[i]),
                grad_mean_abs=float(grad_mean_abs[i]),
                weight_norm=float(weight_norm[i]),
                weight_change=float(weight_change[i]),
                update_ratio=float(update_ratio[i]),
                grad_output_norm=float(go_by_layer.get(i, math.nan)),
                act_mean=float(a[0]) if a is not None else math.nan,
                act_std=float(a[1]) if a is not None else math.nan,
                act_saturated=float(a[2]) if a is not None else math.nan,
                act_dead=float(a[3]) if a is not None else math.nan,
                param_grad_norms={
                    pn: float(g2[k]) for k, (j, pn, _) in enumerate(self._params) if j == i
                },
            )
        record = StepRecord(step=self.step, epoch=self.epoch, loss=loss, layers=layers)
        for (kind, li, lo, hi), counts in zip(hist_meta, hist_counts):
            hist = Histogram(lo, hi, np.rint(counts).astype(np.int64))
            name = self._owners[li][0] or "<root>"
            (record.weight_hist if kind == "weight" else record.grad_hist)[name] = hist
        return record

    def _layer_indices(self) -> list[int]:
        return self._order + [i for i in range(len(self._owners)) if i not in self._order]

    # ----- results -------------------------------------------------------------
    def drain(self) -> list[StepRecord]:
        """Records measured since the last drain (for the trainer's event stream)."""
        out, self._pending = self._pending, []
        return out


def _fan_in(params: dict[str, nn.Parameter]) -> int:
    weight = params.get("weight")
    if weight is None or weight.dim() < 2:
        return 0
    return int(weight[0].numel())  # (out, in, *kernel) -> in * kernel


def _first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor to watch in a module's output (RNNs return (output, hidden))."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor) and item.is_floating_point():
                return item
    return None


def _activation_stats(module: nn.Module, out: torch.Tensor) -> torch.Tensor:
    """[mean, std, fraction saturated, fraction dead] of an activation's output."""
    x = out.float()
    nan = torch.full((), math.nan, device=x.device)
    if isinstance(module, _SATURATING_01):
        saturated = ((x < SATURATION_EPS) | (x > 1 - SATURATION_EPS)).float().mean()
    elif isinstance(module, _SATURATING_11):
        saturated = (x.abs() > 1 - SATURATION_EPS).float().mean()
    else:
        saturated = nan
    if isinstance(module, _RELU_FAMILY) and x.dim() >= 2 and x.shape[0] > 0:
        # A unit is dead for this batch when it is <= 0 for every sample.
        dead = (x.flatten(1) <= 0).all(dim=0).float().mean()
    else:
        dead = nan
    std = x.std() if x.numel() > 1 else nan
    return torch.stack([x.mean(), std, saturated, dead])
