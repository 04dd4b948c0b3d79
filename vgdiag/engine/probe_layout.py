"""The probe's map of a model: its layers, their order, and the hooks of a sampled step.

LayerLayout owns every hook the probe puts on modules and tensors: forward hooks
that see which layer ran and which activation follows it, gradient hooks on layer
outputs and on recurrent inputs (the gradient through time), and, until the depth
order is known, post-accumulate-grad hooks on parameters that give it (see
probe_layers). All of them only read; the one thing a hook hands back is a recurrent
module's data input, re-made as a leaf that requires grad on sampled steps so its
gradient per time step can be read: parameters' gradients are the same.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.hooks import RemovableHandle

from vgdiag.engine.probe_activations import Scratch, activation_kind, activation_stats
from vgdiag.engine.probe_functional import FunctionalActivations
from vgdiag.engine.probe_kernels import (
    LOW_PRECISION,
    first_tensor,
    packed_time_index,
    packed_time_norms,
    time_norms,
)
from vgdiag.engine.probe_layers import (
    ACTIVATION_TYPES,
    Owners,
    Params,
    channel_first,
    clean_name,
    depth_order,
    layer_info,
    normalized_after,
    role_of,
    tied_modules,
)
from vgdiag.engine.records import LayerInfo

Guard = Callable[[Callable[..., Any]], Callable[..., Any]]
FUNCTIONAL_TRIAL = 2  # sampled forward passes that look for activation functions


class LayerLayout:
    """Layers, their parameters and depth order, and the per-step hook buffers."""

    def __init__(self, root: nn.Module, owners: Owners, params: Params,
                 shapes: list[tuple[int, ...]], guard: Guard, functional: bool,
                 fullgraph: bool = False) -> None:
        self._root = root
        # torch.compile(fullgraph=True): a tensor hook traced into the graph is an
        # error, so where the forward is traced after all (the probe's eager stance
        # overridden by the loop's own) the output-gradient hooks step aside.
        self.fullgraph = fullgraph
        self.owners = owners
        self.params = params
        self.shapes = shapes
        self._guard = guard
        self.owner_of = [i for i, _, _ in params]
        n = len(owners)
        # find_layers lists a layer's parameters together: layer i owns slices[i].
        self.slices = [range(self.owner_of.index(i), len(params) - self.owner_of[::-1].index(i))
                       for i in range(n)]
        self.own = [[(k, params[k][1]) for k in self.slices[i]] for i in range(n)]
        # The parameter a layer's weight histogram shows: its weight, else its first one.
        self.weight_param = [
            next((k for k in self.slices[i] if params[k][1] in ("weight", f"weight_ih_{s}")),
                 self.slices[i][0])
            for i, s in ((i, owners[i][0].rsplit(".", 1)[-1]) for i in range(n))
        ]
        self.roles = [role_of(m) for _, m in owners]
        self._modules: dict[int, tuple[nn.Module, list[int]]] = {}
        for i, (_, m) in enumerate(owners):
            self._modules.setdefault(id(m), (m, []))[1].append(i)
        self._activations = [(name, m) for name, m in root.named_modules()
                             if isinstance(m, ACTIVATION_TYPES)]
        self._recurrent = [(clean_name(name), m) for name, m in root.named_modules()
                           if isinstance(m, nn.RNNBase)]
        self._tied = tied_modules(root, owners, params)
        # The layer a tied module applies after every layer ran (a language model's
        # head tied to its embedding): the output layer, whatever its own depth.
        self.tied_head: int | None = None
        self.forward: list[int] = []  # layers in order of first forward execution
        self._forward_seen: set[int] = set()
        self.backward: list[int] = []  # layers that got a gradient, input side first
        self.used: set[int] = set()
        self.activation_of: dict[int, str] = {}
        self.in_features: dict[int, int] = {}
        self._infos: list[LayerInfo] | None = None
        self.order: list[int] = list(range(n))  # layer indices in depth order
        self._need_order = True
        self._bwd_handles: list[RemovableHandle] = []
        # The activation statistics' temporaries, kept across steps: a fresh buffer
        # each sampled step is fresh memory from the kernel, page-faulted in again.
        self.scratch = Scratch()
        # Activations called as functions (probe_functional): looked for on the first
        # FUNCTIONAL_TRIAL sampled forward passes, kept on where one was found.
        self._functional = functional
        self._functional_trial = FUNCTIONAL_TRIAL
        self._functional_kept = False
        self._mode: FunctionalActivations | None = None
        self._root_depth = 0  # root forward calls in progress (a forward may call itself)
        self._by_function: set[int] = set()  # layers whose activation is a function
        self._found_by_function = guard(self._functional_act)  # wrapped once
        self.new_step()

    # ----- per step ------------------------------------------------------------
    def new_step(self) -> None:
        self.grad_out: dict[int, list[torch.Tensor]] = {}
        self.act: dict[int, tuple[int, int, list[torch.Tensor]]] = {}
        self.time: dict[str, list[torch.Tensor]] = {}
        self.last_layer: int | None = None
        self._tied_last: int | None = None  # set by a tied module, cleared by a layer
        # _tied_last when the model's forward returned: a forward recomputed in backward
        # (reentrant activation checkpointing) runs layers again, after the head.
        self._tied_end: int | None = None
        self._root_returned = False
        # That layer's output, held weakly: it is only compared with an activation's
        # input, and must not keep a model's logits alive between steps.
        self._last_out: weakref.ref[torch.Tensor] | None = None
        self.close_functional()  # a mode a forward left behind (KeyboardInterrupt)
        self.ran: set[int] = set()  # layers whose forward ran in this step's training pass
        self._fired: list[int] = []
        self._fired_set: set[int] = set()
        if self._need_order and not self._bwd_handles:
            self.watch_backward()

    def attach(self, grad_hooks: bool) -> list[RemovableHandle]:
        # TorchScript modules take no forward hooks: on them the probe measures the
        # parameters only (no activation statistics, no output gradients).
        def hookable(m: nn.Module) -> bool:
            return not isinstance(m, torch.jit.ScriptModule)

        handles = [m.register_forward_hook(self._guard(self._layer_hook(idx, grad_hooks)))
                   for m, idx in self._modules.values() if hookable(m)]
        handles += [m.register_forward_hook(self._guard(self._act_hook(name, m)))
                    for name, m in self._activations if hookable(m)]
        if self._tied and hookable(self._root):
            handles += [m.register_forward_hook(self._guard(self._tied_hook(i)))
                        for _, m, i in self._tied if hookable(m)]
            handles.append(self._root.register_forward_hook(self._guard(self._root_done)))
        if grad_hooks:
            handles += [m.register_forward_pre_hook(self._guard(self._time_hook(name, m)))
                        for name, m in self._recurrent if hookable(m)]
        if self._functional and hookable(self._root):
            handles += [
                self._root.register_forward_pre_hook(self._guard(self._enter_functional)),
                # always_call: a forward pass that raises must not leave the mode on
                self._root.register_forward_hook(self._exit_functional, always_call=True),
            ]
        return handles

    def watch_backward(self) -> None:
        """Hooks that see the order in which parameter gradients become ready."""
        for k, (_, _, p) in enumerate(self.params):
            if not (p.requires_grad and p.is_leaf):
                continue
            try:
                self._bwd_handles.append(
                    p.register_post_accumulate_grad_hook(self._guard(self._ready_hook(k))))
            except (RuntimeError, AttributeError):  # a parameter type without the hook
                continue

    def unwatch_backward(self) -> None:
        for h in self._bwd_handles:
            h.remove()
        self._bwd_handles = []

    def gradients_seen(self, present: list[int]) -> None:
        """A layer with a gradient that the depth order does not hold yet: look again."""
        if self.backward and any(self.owner_of[k] not in self.used for k in present
                                 if self.params[k][2].requires_grad):
            self._need_order = True

    def backward_done(self) -> None:
        tied = self._tied_end if self._root_returned else self._tied_last
        if tied is not None and tied != self.tied_head:
            self.tied_head = tied
            self._infos = None
        if self._fired:
            last: dict[int, int] = {}
            for pos, k in enumerate(self._fired):
                last[self.owner_of[k]] = pos
            # Fired last = nearest the input; a layer sits at its parameter nearest it.
            order = sorted(last, key=lambda i: -last[i])
            if set(order) | self.used != self.used or not self.backward:
                self.backward = order
                self.used |= set(order)
                self._infos = None
            self._need_order = False
            self.unwatch_backward()
        self._fired = []

    def step_tensors(self) -> dict[str, Any]:
        """The step's device numbers from the hooks, with the layout to read them back."""
        gout_idx = sorted(self.grad_out)
        act_idx = sorted(self.act)
        time_names = [n for n in self.time if self.time[n]]
        times = [torch.cat(self.time[n]) for n in time_names]
        return {
            "gout": [g for i in gout_idx for g in self.grad_out[i]],
            "gout_idx": [(i, len(self.grad_out[i])) for i in gout_idx],
            "act": [t for i in act_idx for t in self.act[i][2]],
            "act_idx": [(i, self.act[i]) for i in act_idx],
            "time": times,
            "time_idx": [(n, int(t.numel())) for n, t in zip(time_names, times)],
        }

    # ----- hooks -----------------------------------------------------------------
    def _ready_hook(self, k: int) -> Callable[[torch.Tensor], None]:
        def hook(p: torch.Tensor) -> None:
            if k not in self._fired_set:  # micro-batches: the first backward decides
                self._fired_set.add(k)
                self._fired.append(k)
        return hook

    def _layer_hook(self, indices: list[int], grad_hooks: bool) -> Callable[..., None]:
        top = indices[-1]  # a recurrent module's output is its last layer's

        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not torch.is_grad_enabled():
                return  # evaluation passes are not training steps
            self.ran.update(indices)
            self._tied_last = None
            for i in indices:
                if i not in self._forward_seen:
                    self._forward_seen.add(i)
                    self.forward.append(i)
                    self._infos = None
            self.last_layer = top
            out = first_tensor(output)
            if self._mode is not None:  # only an active mode compares with it
                self._last_out = weakref.ref(out) if out is not None else None
            if top not in self.in_features:
                x = first_tensor(inputs)
                if x is not None and x.dim() >= 1:
                    self.in_features[top] = int(x.shape[-1])
            if (out is not None and out.requires_grad and grad_hooks
                    and not (self.fullgraph and torch.compiler.is_compiling())):
                store = self.grad_out.setdefault(top, [])
                dtype = torch.float32 if out.dtype in LOW_PRECISION else None

                def grad_hook(grad: torch.Tensor) -> None:
                    # A module used twice sends two gradients: their squares add up
                    # (on the host, from the norms).
                    store.append(torch.linalg.vector_norm(grad.detach(), dtype=dtype))

                out.register_hook(self._guard(grad_hook))

        return hook

    def _root_done(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if torch.is_grad_enabled() and not self._root_returned:
            self._root_returned = True
            self._tied_end = self._tied_last

    def _tied_hook(self, layer: int) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if torch.is_grad_enabled():
                self._tied_last = layer
        return hook

    def _act_hook(self, name: str, module: nn.Module) -> Callable[..., None]:
        kind, dead = activation_kind(module)

        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not torch.is_grad_enabled() or self.last_layer is None:
                return
            out = first_tensor(output)
            if out is None or out.numel() == 0:
                return
            li = self.last_layer
            if li not in self.activation_of or li in self._by_function:
                # a module's hook fires after the function it calls: the module names it
                self._by_function.discard(li)
                self.activation_of[li] = name
                self._infos = None
            self._record_act(li, out, kind, dead)

        return hook

    def _record_act(self, li: int, out: torch.Tensor, kind: int, dead: bool) -> None:
        cdim = 1 if channel_first(self.owners[li][1]) else -1
        self.act[li] = activation_stats(out.detach(), kind, dead, cdim, self.scratch)

    def _functional_act(self, x: torch.Tensor, out: torch.Tensor, kind: int, dead: bool,
                        name: str) -> None:
        li = self.last_layer
        last = self._last_out() if self._last_out is not None else None
        if (li is None or x is not last or li in self.act
                or (li in self.activation_of and li not in self._by_function)
                or not torch.is_grad_enabled() or out.numel() == 0):
            # not a layer's own output, already measured, or a module's (its hook
            # measures it after the function it calls)
            return
        if li not in self.activation_of:
            self.activation_of[li] = name
            self._by_function.add(li)
            self._infos = None
        self._record_act(li, out, kind, dead)

    @property
    def has_activation_modules(self) -> bool:
        return bool(self._activations)

    def close_functional(self) -> None:
        """Take the mode off the stack, if one is on (the probe closes, or a forward
        that raised a BaseException never ran its exit hook)."""
        mode, self._mode = self._mode, None
        self._root_depth = 0
        if mode is not None:
            mode.close()

    def _enter_functional(self, module: nn.Module, args: Any) -> None:
        self._root_depth += 1
        if self._root_depth > 1:
            return  # the root called again inside its forward: the outer call owns it
        if (not torch.is_grad_enabled()
                or not (self._functional_kept or self._functional_trial)):
            return  # evaluation passes are not training steps
        self._mode = FunctionalActivations(self._found_by_function)
        self._mode.__enter__()

    def _exit_functional(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._root_depth > 1:
            self._root_depth -= 1
            return
        self._last_out = None
        was_on = self._mode is not None
        self.close_functional()
        if was_on and self._functional_trial:
            self._functional_trial -= 1
            # Kept where a layer's activation is measured from a function call alone.
            self._functional_kept = bool(self._by_function)

    def _time_hook(self, name: str, module: nn.Module) -> Callable[..., Any]:
        batch_first = bool(getattr(module, "batch_first", False))

        def hook(module: nn.Module, args: Any) -> Any:
            if not torch.is_grad_enabled() or not args:
                return None
            x = args[0]
            if isinstance(x, PackedSequence):
                return packed(x, args)
            if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
                return None  # no sequence to read
            time_dim = 1 if batch_first and x.dim() == 3 else 0
            replaced = None
            if not x.requires_grad:  # data: a leaf view of it carries the gradient
                x = x.detach().requires_grad_(True)
                replaced = (x, *args[1:])
            store = self.time.setdefault(name, [])
            x.register_hook(self._guard(lambda g: store.append(time_norms(g, time_dim))))
            return replaced

        def packed(x: PackedSequence, args: Any) -> Any:
            # Variable-length sequences: the data is (sum of lengths, features), time
            # step by time step, so the norm at step t is over the sequences still
            # running at t. (A padded, unpacked batch counts every sequence at every
            # step, its padding's gradient included.) One value per time step, earliest
            # first, as for an unpacked input.
            data = x.data
            if not isinstance(data, torch.Tensor) or not data.is_floating_point() \
                    or data.dim() < 1 or x.batch_sizes is None:
                return None
            replaced = None
            if not data.requires_grad:  # data: a leaf view of it carries the gradient
                data = data.detach().requires_grad_(True)
                replaced = (PackedSequence(data, x.batch_sizes, x.sorted_indices,
                                           x.unsorted_indices), *args[1:])
            steps = int(x.batch_sizes.numel())
            index = packed_time_index(x.batch_sizes, data.device)
            store = self.time.setdefault(name, [])
            data.register_hook(self._guard(
                lambda g: store.append(packed_time_norms(g, index, steps))))
            return replaced

        return hook

    # ----- what the front ends see ---------------------------------------------------
    def infos(self) -> list[LayerInfo]:
        if self._infos is None:
            order = depth_order(self.forward, self.backward, len(self.owners))
            if self.tied_head is not None:  # it acts last: the output layer
                order = [i for i in order if i != self.tied_head] + [self.tied_head]
            self.order = order
            tied: dict[int, list[str]] = {}
            for name, _, i in self._tied:
                tied.setdefault(i, []).append(clean_name(name))
            rescaled = normalized_after(order, self.roles)
            known = bool(self.backward)
            self._infos = [
                layer_info(
                    self.owners[i][0], self.owners[i][1], depth,
                    [(self.params[k][1], self.params[k][2], self.shapes[k])
                     for k in self.slices[i]],
                    activation=self.activation_of.get(i),
                    in_features=self.in_features.get(i),
                    used=(not known or i in self.used
                          or not any(self.params[k][2].requires_grad for k in self.slices[i])),
                    normalized=i in rescaled,
                    tied=tuple(tied.get(i, ())),
                )
                for depth, i in enumerate(order)
            ]
        return list(self._infos)
