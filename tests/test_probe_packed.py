"""time_grad for recurrent modules fed a PackedSequence (variable-length sequences).

The probe reads ||dLoss/dx_t|| per time step from the packed data's gradient; every
model here is trained for real, and the numbers are checked against the unpacked
probe and against a computation made here without it.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import vgdiag

STEPS = 20  # time steps of the data
FEATURES = 4
BATCH = 8


class Classifier(nn.Module):
    """A recurrent module over a packed (or padded) batch, classified from h_n."""

    def __init__(self, rnn: nn.RNNBase, project: bool = False) -> None:
        super().__init__()
        # With a projection in front, the packed data requires grad (no leaf is made).
        self.proj = nn.Linear(FEATURES, rnn.input_size) if project else None
        self.rnn = rnn
        directions = 2 if rnn.bidirectional else 1
        self.head = nn.Linear(rnn.hidden_size * directions, 3)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if self.proj is not None:
            x = self.proj(x)
        seq = x if lengths is None else pack_padded_sequence(x, lengths, batch_first=True,
                                                             enforce_sorted=False)
        return self.classify(seq)

    def classify(self, seq: PackedSequence | torch.Tensor) -> torch.Tensor:
        h = self.rnn(seq)[1]
        h = h[0] if isinstance(h, tuple) else h  # LSTM: (h_n, c_n)
        # the last layer's final state per direction (PyTorch's unsorted order)
        return self.head(torch.cat(list(h[-2:] if self.rnn.bidirectional else h[-1:]), 1))


def make(kind: type[nn.RNNBase] = nn.GRU, *, bidirectional: bool = False,
         project: bool = False, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    return Classifier(kind(FEATURES, 8, num_layers=2, batch_first=True,
                           bidirectional=bidirectional), project)


def batch(step: int, equal: bool, steps: int = STEPS, shortest: int = 3
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(BATCH, steps, FEATURES, generator=g)
    if equal:
        lengths = torch.full((BATCH,), steps, dtype=torch.int64)
    else:  # varying, unsorted, one sequence of the full length
        lengths = torch.randint(shortest, steps + 1, (BATCH,), generator=g)
        lengths[step % BATCH] = steps
    for i, n in enumerate(lengths.tolist()):
        x[i, n:] = 0.0  # padding
    return x, lengths, torch.randint(0, 3, (BATCH,), generator=g)


def train(model: nn.Module, steps: int, *, equal: bool, packed: bool, probe: bool = True,
          sgd: float = 0.0, seq_steps: int = STEPS, shortest: int = 3
          ) -> vgdiag.Watch | None:
    torch.manual_seed(1)
    opt = (torch.optim.SGD(model.parameters(), lr=sgd) if sgd
           else torch.optim.Adam(model.parameters(), lr=1e-2))
    w = vgdiag.watch(model, opt, every=1) if probe else None
    for step in range(steps):
        x, lengths, y = batch(step, equal, seq_steps, shortest)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x, lengths if packed else None), y)
        if w is not None:
            w.observe_loss(loss)
        loss.backward()
        opt.step()
    if w is not None:
        w.close()
    return w


def independent_profile(model: Classifier, x: torch.Tensor, lengths: torch.Tensor,
                        y: torch.Tensor) -> tuple[list[float], list[float]]:
    """dLoss/dx_t per time step from the packed data's own .grad, a loop over steps;
    and the same from the padded input's .grad (its padding gets no gradient)."""
    padded = x.clone().requires_grad_(True)
    h = model.proj(padded) if model.proj is not None else padded
    seq = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
    leaf = seq.data.detach().requires_grad_(True)
    # The leaf feeds the RNN; its gradient is passed on to the padded input by hand.
    seq = PackedSequence(leaf, seq.batch_sizes, seq.sorted_indices, seq.unsorted_indices)
    nn.functional.cross_entropy(model.classify(seq), y).backward()
    assert leaf.grad is not None
    per_step, offset = [], 0
    for size in seq.batch_sizes.tolist():
        per_step.append(float(leaf.grad[offset:offset + size].double().norm()))
        offset += size
    if model.proj is None:
        packed_back = pack_padded_sequence(padded, lengths, batch_first=True,
                                           enforce_sorted=False).data
        packed_back.backward(leaf.grad)
        assert padded.grad is not None
        from_padded = padded.grad.double().norm(dim=(0, 2)).tolist()
    else:
        from_padded = per_step
    return per_step, from_padded


def profile(w: vgdiag.Watch | None, step: int = -1) -> list[float]:
    assert w is not None
    return w.history[step].time_grad["rnn"]


def test_packed_input_gets_one_value_per_time_step():
    w = train(make(), 6, equal=False, packed=True)
    assert w is not None and len(w.history) == 6
    for record in w.history:
        values = record.time_grad["rnn"]
        assert len(values) == STEPS
        assert all(math.isfinite(v) and v > 0 for v in values)


def test_equal_lengths_packed_matches_unpacked():
    packed_model = make()
    plain_model = copy.deepcopy(packed_model)
    wp = train(packed_model, 5, equal=True, packed=True)
    wu = train(plain_model, 5, equal=True, packed=False)
    assert wp is not None and wu is not None
    for rp, ru in zip(wp.history, wu.history, strict=True):
        assert len(rp.time_grad["rnn"]) == STEPS
        assert rp.time_grad["rnn"] == pytest.approx(ru.time_grad["rnn"], rel=1e-5)


@pytest.mark.parametrize(("kind", "bidirectional", "project"), [
    (nn.RNN, False, False),
    (nn.GRU, False, False),
    (nn.LSTM, True, False),
    (nn.GRU, False, True),  # the packed data requires grad: its own gradient is read
], ids=["rnn", "gru", "bilstm", "projected-gru"])
def test_unequal_lengths_match_an_independent_computation(kind, bidirectional, project):
    model = make(kind, bidirectional=bidirectional, project=project)
    reference = copy.deepcopy(model)
    steps = 4
    w = train(model, steps, equal=False, packed=True)
    # The same training without the probe, up to the weights of the last sampled step.
    torch.manual_seed(1)
    opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
    for step in range(steps - 1):
        x, lengths, y = batch(step, equal=False)
        opt.zero_grad()
        nn.functional.cross_entropy(reference(x, lengths), y).backward()
        opt.step()
    x, lengths, y = batch(steps - 1, equal=False)
    opt.zero_grad()
    per_step, from_padded = independent_profile(reference, x, lengths, y)
    assert len(per_step) == STEPS
    assert per_step == pytest.approx(from_padded, rel=1e-6)
    assert profile(w) == pytest.approx(per_step, rel=1e-5)
    # The lengths vary, so the later steps are over fewer sequences: not all the same.
    assert len(set(lengths.tolist())) > 1


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
def test_probe_leaves_training_bit_identical(packed):
    model = make(nn.LSTM, bidirectional=True)
    reference = copy.deepcopy(model)
    train(model, 5, equal=False, packed=packed)
    train(reference, 5, equal=False, packed=packed, probe=False)
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(a, b), name


def test_deep_packed_rnn_vanishes_through_time():
    torch.manual_seed(0)
    rnn = nn.RNN(FEATURES, 16, batch_first=True)
    with torch.no_grad():
        rnn.weight_hh_l0.mul_(0.3)
    model = Classifier(rnn)
    unpacked = copy.deepcopy(model)
    # Lengths 56 to 64: the earliest steps are far from every sequence's end.
    w = train(model, 8, equal=False, packed=True, sgd=0.01, seq_steps=64, shortest=56)
    assert w is not None
    found = {f.id: f for f in w.findings()}
    through = found["vanishing_through_time"]
    assert through.layers == ["rnn"] and through.severity == "error"
    assert through.evidence["time_steps"]["rnn"] == 64
    assert through.evidence["decay_per_step"]["rnn"] < 0.9
    values = profile(w)
    assert len(values) == 64 and values[-1] > 1e3 * max(values[0], 1e-300)
    # The same finding as the same model gets on padded, unpacked data.
    wu = train(unpacked, 8, equal=False, packed=False, sgd=0.01, seq_steps=64, shortest=56)
    assert wu is not None
    assert "vanishing_through_time" in {f.id for f in wu.findings()}


def test_the_norms_through_time_do_not_underflow_where_the_gradient_is_tiny():
    # 1e-25 per element squares to below float32's range: summed in float64, the
    # early steps of a vanished gradient read their value, not exactly 0.
    from vgdiag.engine.probe_kernels import packed_time_index, packed_time_norms, time_norms

    g = torch.full((4, 6, 8), 1e-25)
    g[:, -1] = 1.0
    norms = time_norms(g, time_dim=1)
    assert norms.dtype == torch.float32
    assert norms[0].item() == pytest.approx(math.sqrt(32) * 1e-25, rel=1e-5)
    assert norms[-1].item() == pytest.approx(math.sqrt(32))
    batch_sizes = torch.tensor([4, 4, 3, 2])
    data = torch.full((int(batch_sizes.sum()), 8), 1e-25)
    packed = packed_time_norms(data, packed_time_index(batch_sizes, data.device), 4)
    assert packed.tolist() == pytest.approx([math.sqrt(n * 8) * 1e-25
                                             for n in (4, 4, 3, 2)], rel=1e-5)
