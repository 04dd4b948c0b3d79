"""vgdiag.watch(out=DIR) under torch.distributed: two CPU processes over gloo, DDP.

Both ranks pass the same `out`, as a torchrun script does. Rank 0 writes the folder;
rank 1 measures (its gradient statistics must equal rank 0's: DDP has averaged the
gradients) and takes part in the reduction of the epoch numbers, which the folder
holds averaged over both ranks. The ranks run this file as a script, as in
test_distributed.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

EPOCHS = 2
STEPS = 4


def batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * rank + step)
    return torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)


def worker(rank: int, world: int, init_file: str, tmp: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import vgdiag

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    torch.manual_seed(0)
    model = DistributedDataParallel(nn.Sequential(nn.Linear(6, 5), nn.Sigmoid(),
                                                  nn.Linear(5, 3)))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses: list[list[float]] = []
    with vgdiag.watch(model, opt, out=Path(tmp, "run"), every=1, num_classes=3) as w:
        for epoch in range(EPOCHS):
            losses.append([])
            for step in range(STEPS):
                x, y = batch(rank, epoch * STEPS + step)
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                w.observe_loss(loss)
                loss.backward()
                opt.step()
                losses[-1].append(loss.item())
            # Only rank 1 knows a validation accuracy: the folder gets rank 1's value.
            w.observe_epoch(train_acc=float(rank), val_acc=0.75 if rank == 1 else None)
    Path(tmp, f"rank{rank}.json").write_text(json.dumps({
        "out": str(w.out) if w.out else None,
        "is_main": w.is_main,
        "status": w.status,
        "losses": losses,
        "records": [r.to_json() for r in w.history],
    }))
    dist.barrier()
    sys.stdout.flush()
    os._exit(0)  # see test_distributed.py: gloo's threads can abort the teardown


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available in this build")
    tmp = tmp_path_factory.mktemp("watchdist")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, str(r), "2", str(tmp / "init"),
                               str(tmp)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
    for r, p in enumerate(procs):
        try:
            output = p.communicate(timeout=120)[0]
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("the two ranks did not finish within 120 s")
        assert p.returncode == 0, f"rank {r} failed:\n{output}"
    return tmp, [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(2)]


def test_rank_0_writes_the_folder_and_rank_1_only_measures(ranks) -> None:
    from vgdiag.runs.reader import read_run

    tmp, (r0, r1) = ranks
    assert r0["out"] == str(tmp / "run") and r0["is_main"]
    assert r1["out"] is None and not r1["is_main"]
    assert r0["status"] == r1["status"] == "completed"
    assert sorted(p.name for p in (tmp / "run").iterdir()) == [
        "config.json", "metrics.jsonl", "summary.json"]
    run = read_run(tmp / "run")
    assert run.status == "completed" and run.config["world_size"] == 2
    assert [r.to_json() for r in run.records] == r0["records"]
    # Every rank measured the same gradients (DDP averaged them before the step).
    for a, b in zip(r0["records"], r1["records"]):
        for layer in ("0", "2"):
            assert a["layers"][layer]["grad_norm"] == pytest.approx(
                b["layers"][layer]["grad_norm"], rel=1e-6)
        # The loss is each rank's own batch.
        assert a["loss"] != pytest.approx(b["loss"])


def test_the_epoch_numbers_are_averaged_over_the_ranks(ranks) -> None:
    from vgdiag.runs.reader import read_run

    tmp, (r0, r1) = ranks
    run = read_run(tmp / "run")
    assert len(run.epochs) == EPOCHS
    for e, l0, l1 in zip(run.epochs, r0["losses"], r1["losses"]):
        assert e.train_loss == pytest.approx((sum(l0) / STEPS + sum(l1) / STEPS) / 2, rel=1e-9)
        assert e.train_acc == pytest.approx(0.5)
        assert e.val_acc == pytest.approx(0.75)


def test_report_reads_the_folder(ranks) -> None:
    tmp, _ = ranks
    done = subprocess.run([sys.executable, "-m", "vgdiag", "report", str(tmp / "run")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "**Status: completed**" in done.stdout


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
