"""Mixed precision's loss scaler: the probe records the numbers of the unscaled loss.

Under a GradScaler backward runs on the loss times the scale (2^16 by default), so the
output gradients read in backward, and `.grad` until the scaler unscales it, are that
much too large. Each test trains the same model twice, with a scaler and without one
(a power-of-two scale is exact in float32), and the records must agree.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import vgdiag

SCALE = 2.0**16


def model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                         nn.Linear(16, 3))


def batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g))
            for _ in range(n)]


def train(mode: str, steps: int = 4) -> vgdiag.Watch:
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE, growth_interval=10_000)
    by_hand = mode == "by hand"
    w = vgdiag.watch(m, opt, every=1, hist_every=1, num_classes=3,
                     hook_optimizer=not by_hand, **({"scaler": scaler} if by_hand else {}))
    for x, y in batches(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m(x), y)
        w.observe_loss(loss)
        if mode == "plain":
            loss.backward()
            opt.step()
            continue
        scaler.scale(loss).backward()
        if by_hand:  # measured before the scaler unscales: .grad still holds the scale
            w.before_update()
            scaler.step(opt)  # unscales .grad in place before the histogram is taken
            scaler.update()  # and forgets it did (as accelerate's step does)
            w.after_update()
        else:
            scaler.step(opt)  # the probe finds the scaler calling optimizer.step()
            scaler.update()
        assert scaler.get_scale() == SCALE  # no step was skipped
    w.close()
    return w


def numbers(w: vgdiag.Watch) -> list[tuple[float, ...]]:
    return [(s.grad_norm, s.grad_mean_abs, s.grad_output_norm, s.update_ratio)
            for r in w.history for s in r.layers.values()]


def test_scaler_step_records_the_numbers_of_the_unscaled_loss() -> None:
    plain, scaled = numbers(train("plain")), numbers(train("scaler.step"))
    assert len(plain) == len(scaled) == 4 * 3
    for a, b in zip(plain, scaled):
        assert b == pytest.approx(a, rel=1e-5)
    assert all(math.isfinite(v) and v > 0 for row in plain for v in row)


def test_an_update_marked_by_hand_before_unscaling_is_divided_too() -> None:
    plain, by_hand = train("plain"), train("by hand")
    for a, b in zip(numbers(plain), numbers(by_hand)):
        assert b == pytest.approx(a, rel=1e-5)
    # The gradient histograms are those of the unscaled gradients.
    for ra, rb in zip(plain.history, by_hand.history):
        for name, ha in ra.grad_hist.items():
            hb = rb.grad_hist[name]
            assert (hb.lo, hb.hi) == (ha.lo, ha.hi)
            assert hb.counts.tolist() == ha.counts.tolist()  # g * 2^16 / 2^16 is exact
        assert ra.grad_hist


class GRUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.gru = nn.GRU(4, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gru(x)[0][:, -1])


@pytest.mark.parametrize("scaled", [False, True])
def test_the_gradient_through_time_is_unscaled_too(scaled: bool) -> None:
    m = GRUNet()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE, enabled=scaled)
    w = vgdiag.watch(m, opt, every=1)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(16, 6, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
    x.requires_grad_(True)
    opt.zero_grad()
    loss = nn.functional.cross_entropy(m(x), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    w.close()
    # Independent: ||dLoss/dx_t|| per time step, from the input's own gradient.
    expected = (x.grad / (SCALE if scaled else 1.0)).norm(dim=(0, 2)).tolist()
    assert w.history[0].time_grad["gru"] == pytest.approx(expected, rel=1e-5)


def test_one_scaler_two_optimizers_marked_by_hand() -> None:
    # A GAN-like loop: one scaler, the other optimizer unscaled and stepped first. The
    # watched one's .grad is still scaled when it is measured.
    plain = numbers(train("plain"))
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    other = nn.Linear(8, 3)
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE, growth_interval=10_000)
    w = vgdiag.watch(m, opt, every=1, hist_every=1, num_classes=3, hook_optimizer=False,
                     scaler=scaler)
    for x, y in batches(4):
        opt.zero_grad()
        other_opt.zero_grad()
        scaler.scale(other(x).pow(2).mean()).backward()
        scaler.step(other_opt)  # this optimizer's stage: unscaled, then stepped
        loss = nn.functional.cross_entropy(m(x), y)
        w.observe_loss(loss)
        scaler.scale(loss).backward()
        w.before_update()
        scaler.step(opt)
        w.after_update()
        scaler.update()
    w.close()
    for a, b in zip(plain, numbers(w)):
        assert b == pytest.approx(a, rel=1e-5)
