"""vgdiag.watch under torch.distributed: two CPU processes over gloo.

Each rank trains the same tiny model on its own batch. Under DDP and FSDP the
optimizer sees the gradient averaged over both batches, so rank 0's recorded
gradient norms must equal the norms of that average, computed here in one process
without any distribution. Under FSDP each rank holds only a slice of every
parameter: the per-layer numbers only come out right if the probe adds the
slices' squared norms across ranks.

The two ranks run this file as a script (so nothing depends on how pytest imports
it) and write what they recorded to JSON files the tests read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

STEPS = 3
LR = 0.5


def make_model() -> nn.Sequential:
    # Output sizes 5 and 3 do not split evenly over two ranks: uneven shards.
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 3))


def batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(4, 6, generator=g), torch.randint(0, 3, (4,), generator=g)


# ----- the worker (one per rank) ---------------------------------------------------


def _train(wrapped: nn.Module, rank: int) -> dict[str, Any]:
    import vgdiag

    opt = torch.optim.SGD(wrapped.parameters(), lr=LR)
    w = vgdiag.watch(wrapped, opt, every=1, hist_every=1)
    for step in range(STEPS):
        x, y = batch(rank, step)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(wrapped(x), y)
        w.observe_loss(loss)
        loss.backward()
        opt.step()
    w.close()
    return {
        "is_main": w.is_main,
        "rank": w.rank,
        "world_size": w.world_size,
        "sharded": w.probe._sharded,
        "layers": [info.to_json() for info in w.layers],
        "records": [r.to_json() for r in w.history],
    }


def _ddp(rank: int) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel

    return _train(DistributedDataParallel(make_model()), rank)


def _fsdp2(rank: int) -> dict[str, Any]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = make_model()
    mesh = init_device_mesh("cpu", (2,))
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return _train(model, rank)


def _fsdp1(rank: int) -> dict[str, Any]:
    from torch.distributed.fsdp import FullyShardedDataParallel

    wrapped = FullyShardedDataParallel(make_model(), use_orig_params=True,
                                       device_id=torch.device("cpu"))
    return _train(wrapped, rank)


SCENARIOS = {"ddp": _ddp, "fsdp2": _fsdp2, "fsdp1": _fsdp1}


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    results: dict[str, Any] = {}
    for name, run in SCENARIOS.items():
        try:
            results[name] = run(rank)
        except Exception:  # reported to the test, which names the scenario
            results[name] = {"error": traceback.format_exc()}
        dist.barrier()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.barrier()
    # Skip the interpreter's teardown: gloo's background threads can abort it
    # ("terminate called without an active exception") after the work is done and
    # written, which would fail the test for a reason that is not the probe's.
    sys.stdout.flush()
    os._exit(0)


# ----- the tests ---------------------------------------------------------------------


def _gloo_available() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_gloo_available()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    if not _gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available in this build")
    tmp = tmp_path_factory.mktemp("dist")
    init_file = tmp / "init"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, __file__, str(r), "2", str(init_file), str(tmp)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in range(2)
    ]
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("the two ranks did not finish within 120 s")
    for r, (p, output) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {r} failed:\n{output}"
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(2)]


def reference() -> list[dict[str, dict[str, float]]]:
    """Per step, per layer: norms of the gradient averaged over both ranks' batches."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    out = []
    for step in range(STEPS):
        grads = []
        acts = []
        for rank in range(2):
            x, y = batch(rank, step)
            model.zero_grad()
            hidden = torch.sigmoid(model[0](x))
            nn.functional.cross_entropy(model[2](hidden), y).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
            acts.append(hidden.detach())
        mean = [(a + b) / 2 for a, b in zip(*grads)]
        before = [p.detach().clone() for p in model.parameters()]
        for p, g in zip(model.parameters(), mean):
            p.grad = g
        opt.step()
        after = [p.detach() for p in model.parameters()]
        stats = {}
        for name, k in (("0", 0), ("2", 2)):
            g = torch.cat([mean[k].flatten(), mean[k + 1].flatten()])
            w = torch.cat([after[k].flatten(), after[k + 1].flatten()])
            dw = w - torch.cat([before[k].flatten(), before[k + 1].flatten()])
            stats[name] = {
                "grad_norm": g.norm().item(),
                "grad_mean_abs": g.abs().mean().item(),
                "weight_norm": w.norm().item(),
                "update_ratio": (dw.norm() / w.norm()).item(),
                "weight_max": after[k].abs().max().item(),
            }
        stats["0"]["act_mean_rank0"] = acts[0].mean().item()
        out.append(stats)
    return out


def _scenario(ranks: list[dict[str, Any]], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    r0, r1 = ranks[0][name], ranks[1][name]
    for r in (r0, r1):
        assert "error" not in r, f"{name} failed on a rank:\n{r['error']}"
    return r0, r1


@pytest.mark.parametrize("name", ["ddp", "fsdp2", "fsdp1"])
def test_rank0_records_the_norms_of_the_averaged_gradient(ranks, name):
    r0, r1 = _scenario(ranks, name)
    assert r0["is_main"] and not r1["is_main"]
    assert (r0["rank"], r1["rank"], r0["world_size"]) == (0, 1, 2)
    assert r0["sharded"] == (name != "ddp")  # DDP exchanges nothing: no all_reduce
    expected = reference()
    assert [rec["step"] for rec in r0["records"]] == list(range(STEPS))
    for rec, exp in zip(r0["records"], expected):
        assert list(rec["layers"]) == ["0", "2"]  # wrapper names are looked through
        for layer in ("0", "2"):
            got, want = rec["layers"][layer], exp[layer]
            for key in ("grad_norm", "grad_mean_abs", "weight_norm", "update_ratio"):
                assert got[key] == pytest.approx(want[key], rel=1e-5), (name, layer, key)
        # Activations are this rank's own batch (the forward pass is not averaged).
        assert rec["layers"]["0"]["act_mean"] == pytest.approx(exp["0"]["act_mean_rank0"],
                                                               rel=1e-5)


@pytest.mark.parametrize("name", ["ddp", "fsdp2", "fsdp1"])
def test_every_rank_agrees_on_the_parameter_statistics(ranks, name):
    r0, r1 = _scenario(ranks, name)
    for a, b in zip(r0["records"], r1["records"]):
        for layer in ("0", "2"):
            for key in ("grad_norm", "weight_norm", "weight_change", "update_ratio"):
                assert a["layers"][layer][key] == pytest.approx(b["layers"][layer][key],
                                                                rel=1e-6)


@pytest.mark.parametrize("name", ["ddp", "fsdp2", "fsdp1"])
def test_layer_shapes_and_histograms_are_of_the_whole_parameter(ranks, name):
    r0, _ = _scenario(ranks, name)
    layers = {info["name"]: info for info in r0["layers"]}
    assert layers["0"]["num_params"] == 6 * 5 + 5 and layers["0"]["fan_in"] == 6
    assert layers["2"]["num_params"] == 5 * 3 + 3 and layers["2"]["fan_in"] == 5
    last = r0["records"][-1]
    # Slices' counts add up to the whole weight; the range is the global max |w|.
    assert sum(last["weight_hist"]["0"]["counts"]) == 6 * 5
    assert sum(last["grad_hist"]["2"]["counts"]) == 5 * 3 + 3
    want = reference()[-1]["0"]["weight_max"]
    assert last["weight_hist"]["0"]["hi"] == pytest.approx(want, rel=1e-6)


def test_a_replicated_parameter_is_not_counted_twice():
    """Hybrid sharding: a parameter held whole by R ranks arrives R times in the sum."""
    import numpy as np

    from vgdiag.engine.probe import Probe

    probe = Probe(make_model(), None, every=1, hist_every=0, distributed="none")
    probe._replicas = np.array([2.0, 2.0, 1.0, 1.0])  # layer "0" whole on both ranks
    norms = np.array([3.0, 4.0, 5.0, 12.0])
    share = np.array([1.0, 1.0, 0.5, 0.5])  # layer "2" split in two halves
    # What one rank sends: squared norms, L1 sums and element counts of its part.
    sent = np.concatenate([norms**2 * share, 10 * share, norms**2 * share,
                           np.zeros(4), norms**2 * share, [30, 5, 7.5, 1.5]])
    split = probe._split_reduced(2 * sent, 0, [])  # the all_reduce of two equal ranks
    probe.close()
    assert split["l2"] == pytest.approx(norms)
    assert split["wn"] == pytest.approx(norms)
    assert split["l1"] == pytest.approx([10, 10, 10, 10])
    assert split["numel"] == pytest.approx([30, 5, 15, 3])


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
