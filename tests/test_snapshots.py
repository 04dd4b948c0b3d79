"""Snapshots: exact below the size threshold, a seeded sample above it.

The sampled estimates of ||W - W0|| and ||dW|| are checked against the exact values
computed here from full copies, on layers of 10^7 elements whose changes have the
shapes training gives them: a real SGD step on a Linear layer, Gaussian drift, rows
that move at very different rates.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vgdiag.engine.snapshots import (
    MAX_SAMPLE,
    SAMPLE_THRESHOLD,
    Snapshots,
    sample_size,
)

BIG = 10_000_000  # elements of a "large layer" (3200 x 3125)


def exact_norm(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).norm())


def test_small_parameters_are_exact_and_the_buffers_are_reused():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.Tanh(), nn.Linear(30, 4))
    params = list(model.parameters())
    w0 = [p.detach().clone() for p in params]
    snaps = Snapshots(params)
    assert snaps.sampled == [False] * 4
    opt = torch.optim.SGD(params, lr=0.3)
    pointers = None
    for _ in range(3):
        before = [p.detach().clone() for p in params]
        snaps.keep_before(params)
        opt.zero_grad()
        model(torch.randn(8, 20)).square().mean().backward()
        opt.step()
        update = snaps.update_norms(params)
        change = snaps.change_norms(params)
        for k, p in enumerate(params):
            assert float(update[k]) == pytest.approx(exact_norm(p, before[k]), rel=1e-5)
            assert float(change[k]) == pytest.approx(exact_norm(p, w0[k]), rel=1e-5)
        now = [b.data_ptr() for b in snaps._before]
        assert pointers in (None, now)  # the same buffers every step, no fresh copies
        pointers = now
    assert snaps.update_norms(params) == []  # no copy kept for this step
    for k, p in enumerate(w0):
        assert float(snaps.w0_norms()[k]) == pytest.approx(float(p.norm()), rel=1e-6)
    assert snaps.extra_bytes() == 2 * sum(p.numel() * 4 for p in params)


def test_sample_size_stays_within_the_budget():
    assert sample_size(SAMPLE_THRESHOLD, 4) == 0  # at the threshold: exact
    for numel in (SAMPLE_THRESHOLD + 1, 3 * SAMPLE_THRESHOLD, BIG, 10**9):
        for element_size in (2, 4):
            k = sample_size(numel, element_size)
            assert 0 < k <= MAX_SAMPLE
            held = k * (4 + 2 * max(element_size, 4))  # indices + two float32 samples
            assert held <= 0.10 * numel * element_size or element_size == 2 and \
                held <= 0.20 * numel * element_size


def _changes(kind: str, w: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if kind == "gaussian":
        return 1e-3 * torch.randn(w.shape, generator=gen)
    if kind == "rows":  # rows move at rates spread over two orders of magnitude
        rates = torch.logspace(-4, -2, w.shape[0]).unsqueeze(1)
        return rates * torch.randn(w.shape, generator=gen)
    raise AssertionError(kind)


@pytest.fixture(scope="module")
def big_layer() -> nn.Linear:
    torch.manual_seed(1)
    layer = nn.Linear(3125, 3200)
    assert layer.weight.numel() == BIG
    return layer


@pytest.mark.parametrize("kind", ["sgd", "gaussian", "rows"])
def test_sampled_estimates_are_within_one_percent_on_a_layer_of_ten_million(big_layer, kind):
    weight = nn.Parameter(big_layer.weight.detach().clone())
    w0 = weight.detach().clone()
    snaps = Snapshots([weight])
    assert snaps.sampled == [True]
    assert snaps.extra_bytes() <= 0.10 * BIG * 4
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():  # some training already happened: W is not W0
        weight.add_(_changes("gaussian", weight, gen))
    before = weight.detach().clone()
    snaps.keep_before([weight])
    if kind == "sgd":
        x = torch.randn(16, 3125, generator=gen)
        target = torch.randn(16, 3200, generator=gen)
        loss = (nn.functional.linear(x, weight) - target).square().mean()
        loss.backward()
        torch.optim.SGD([weight], lr=0.5).step()
    else:
        with torch.no_grad():
            weight.add_(_changes(kind, weight, gen))
    update = float(snaps.update_norms([weight])[0])
    change = float(snaps.change_norms([weight])[0])
    w_norm, w0_norm = float(weight.detach().double().norm()), float(snaps.w0_norms()[0])
    assert w0_norm == pytest.approx(float(w0.double().norm()), rel=1e-6)  # exact, always
    true_ratio = exact_norm(weight, before) / w_norm
    true_change = exact_norm(weight, w0) / float(w0.double().norm())
    assert update / w_norm == pytest.approx(true_ratio, rel=0.01), "update_ratio"
    assert change / w0_norm == pytest.approx(true_change, rel=0.01), "weight_change"


def test_the_sample_is_the_same_on_every_rank_and_run(big_layer):
    # Two probes on equal weights (two DDP ranks, or a rerun) estimate the same numbers.
    a = nn.Parameter(big_layer.weight.detach()[:400].clone())  # 1.25M: just above
    b = nn.Parameter(a.detach().clone())
    sa, sb = Snapshots([a]), Snapshots([b])
    assert sa.sampled == sb.sampled == [True]
    assert torch.equal(sa._index[0], sb._index[0])  # type: ignore[arg-type]
    with torch.no_grad():
        for p in (a, b):
            p.mul_(1.01)
    assert torch.equal(sa.change_norms([a])[0], sb.change_norms([b])[0])


def test_bfloat16_weights_are_sampled_in_float32():
    torch.manual_seed(2)
    weight = torch.randn(1100, 1000).to(torch.bfloat16)
    w0 = weight.clone()
    snaps = Snapshots([weight])
    assert snaps.sampled == [True]
    weight += (1e-2 * torch.randn(1100, 1000)).to(torch.bfloat16)
    change = float(snaps.change_norms([weight])[0])
    assert change == pytest.approx(exact_norm(weight, w0), rel=0.02)


def test_the_probe_estimates_a_large_layer_and_measures_a_small_one_exactly():
    import vgdiag

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(1100, 1000), nn.Tanh(), nn.Linear(1000, 10))
    assert model[0].weight.numel() > SAMPLE_THRESHOLD >= model[2].weight.numel()
    params = list(model.parameters())
    w0 = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.5)
    w = vgdiag.watch(model, opt, every=1, hist_every=0)
    assert w.probe._copies.sampled == [True, False, False, False]
    x, y = torch.randn(32, 1100), torch.randint(0, 10, (32,))
    for _ in range(3):
        before = [p.detach().clone() for p in params]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    w.close()
    last = w.history.last
    assert last is not None

    def joint(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        return float(torch.cat([(u.double() - v.double()).reshape(-1)
                                for u, v in zip(a, b)]).norm())

    for name, ks in (("0", [0, 1]), ("2", [2, 3])):
        now = [params[k].detach() for k in ks]
        w_norm = float(torch.cat([t.double().reshape(-1) for t in now]).norm())
        w0_norm = float(torch.cat([w0[k].double().reshape(-1) for k in ks]).norm())
        change = joint(now, [w0[k] for k in ks]) / w0_norm
        ratio = joint(now, [before[k] for k in ks]) / w_norm
        stats = last.layers[name]
        rel = 2e-2 if name == "0" else 1e-5  # sampled (a 1.1M weight) or exact
        assert stats.weight_change == pytest.approx(change, rel=rel), name
        assert stats.update_ratio == pytest.approx(ratio, rel=rel), name


def test_temporaries_of_large_gradients_are_made_in_pieces_with_the_same_numbers():
    from vgdiag.engine.probe_kernels import (
        GRAD_LOG_RANGE,
        HIST_BINS,
        TEMPORARY,
        histograms,
        l1_norms,
    )

    torch.manual_seed(4)
    g = torch.randn(3 * TEMPORARY + 5) * 1e-3
    small = torch.randn(100)
    lo, hi = GRAD_LOG_RANGE
    parts, _ = histograms([], {0: [g, small]}, [0], False, g.device)
    whole = torch.cat([g, small]).abs().clamp_min(1e-30).log10().clamp(lo, hi)
    assert torch.equal(parts[0], torch.histc(whole, HIST_BINS, lo, hi))
    assert float(l1_norms([g])[0]) == pytest.approx(float(g.double().abs().sum()), rel=1e-6)


def test_a_higher_threshold_makes_the_large_layer_exact():
    import vgdiag

    model = nn.Sequential(nn.Linear(1100, 1000), nn.Tanh(), nn.Linear(1000, 10))
    w = vgdiag.watch(model, torch.optim.SGD(model.parameters(), lr=0.1),
                     snapshot_threshold=2 * SAMPLE_THRESHOLD)
    assert w.probe._flat is not None and not any(w.probe._copies.sampled)  # all held whole
    w.close()
