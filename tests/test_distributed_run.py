"""`torchrun -m vgdiag run`: two CPU processes over gloo, through the real torchrun.

Each rank trains on its slice of every batch; DDP (or FSDP2) averages the slices'
gradients, weighted by their share of the batch, so rank 0's run folder must hold the
numbers of one process training on the whole batches: the same per-layer gradient
and weight norms, the same losses and accuracies. A rank that raises must fail the
run on every rank, promptly, with rank 0's folder marked failed.
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

from vgdiag.cli.app import main
from vgdiag.engine.distributed import DataParallel, fsdp2_available, fsdp_units
from vgdiag.errors import ExitCode

# A batch of 31 leaves a last batch of 23 (240 training samples): slices of 12 and 11.
ARGS = ["run", "--headless", "--data", "synthetic", "--synthetic-size", "300", "--epochs",
        "2", "--batch-size", "31", "--every", "1", "--hist-every", "3", "--depth", "3",
        "--width", "16", "--threads", "1"]
TIMEOUT_S = 240  # the test fails rather than hangs; a run takes ~20 s on 2 busy cores

BOOM = '''
import torch
import torch.distributed as dist
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.Sigmoid(),
                                  nn.Linear(16, 10))
        self.calls = 0

    def forward(self, x):
        if self.training and torch.is_grad_enabled():
            self.calls += 1
            if self.calls == 3 and dist.get_rank() == 1:
                raise ValueError("rank one broke on purpose")
        return self.body(x)
'''


def _gloo() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_gloo_available()


needs_gloo = pytest.mark.skipif(not _gloo(), reason="this build has no gloo backend")


def torchrun(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VGDIAG_DIST_TIMEOUT_S": "60"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", "-m", "vgdiag", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def read_lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    assert main([*ARGS, "--out", str(out)]) == ExitCode.OK
    return out


def _parallel_run(tmp_path_factory: pytest.TempPathFactory, *extra: str) -> Path:
    if not _gloo():
        pytest.skip("this build has no gloo backend")
    cwd = tmp_path_factory.mktemp("torchrun")
    proc = torchrun(cwd, *ARGS, "--out", "run", *extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # One folder, written by rank 0: nothing else appears where the ranks ran.
    assert sorted(p.name for p in cwd.iterdir()) == ["run"]
    assert "DDP" in proc.stdout or "FSDP2" in proc.stdout
    return cwd / "run"


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _parallel_run(tmp_path_factory)


@pytest.fixture(scope="module")
def fsdp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not fsdp2_available():
        pytest.skip("this PyTorch build has no FSDP2 (torch.distributed.fsdp.fully_shard)")
    return _parallel_run(tmp_path_factory, "--fsdp")


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_rank0_writes_the_numbers_of_one_process_on_the_whole_batch(mode, single, request):
    run_dir: Path = request.getfixturevalue(mode)
    got, want = read_lines(run_dir), read_lines(single)
    assert [r["type"] for r in got] == [r["type"] for r in want]
    steps = [(a, b) for a, b in zip(got, want) if a["type"] == "step"]
    assert len(steps) == 16  # every step of 2 epochs of 8 batches
    for a, b in steps:
        assert a["step"] == b["step"]
        assert list(a["layers"]) == list(b["layers"]) == ["1", "3", "5", "7"]
        for layer in a["layers"]:
            sa, sb = a["layers"][layer], b["layers"][layer]
            for key in ("grad_norm", "grad_mean_abs", "weight_norm"):
                assert sa[key] == pytest.approx(sb[key], rel=1e-6, abs=1e-12), (layer, key)
            # Differences of float32 weights: a few ulps of W relative to a small change.
            for key in ("weight_change", "update_ratio"):
                assert sa[key] == pytest.approx(sb[key], rel=1e-5), (layer, key)
            for pname, value in sb["param_grad_norms"].items():
                assert sa["param_grad_norms"][pname] == pytest.approx(value, rel=1e-6, abs=1e-12)
        if "weight_hist" in b:  # histograms of whole parameters, in bins that agree
            for layer, hist in b["weight_hist"].items():
                assert sum(a["weight_hist"][layer]["counts"]) == sum(hist["counts"])
    epochs = [(a, b) for a, b in zip(got, want) if a["type"] == "epoch"]
    assert len(epochs) == 2
    for a, b in epochs:  # all-reduced over the ranks: the whole training set
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "steps"):
            assert a[key] == pytest.approx(b[key], rel=1e-6), key
    sa = json.loads((run_dir / "summary.json").read_text())
    sb = json.loads((single / "summary.json").read_text())
    assert sa["status"] == "completed" and sa["steps"] == sb["steps"] == 16
    assert sa["test"]["acc"] == pytest.approx(sb["test"]["acc"])
    assert sa["test"]["loss"] == pytest.approx(sb["test"]["loss"], rel=1e-6)
    assert [f["id"] for f in sa["findings"]] == [f["id"] for f in sb["findings"]]


@needs_gloo
def test_a_rank_that_raises_fails_the_run_on_every_rank(tmp_path):
    (tmp_path / "boom.py").write_text(BOOM)
    # Without the built-in MLP's --depth and --width, which a user model refuses.
    at = ARGS.index("--depth")
    args = ARGS[:at] + ARGS[at + 4:]
    assert "--width" not in args and "--depth" not in args
    proc = torchrun(tmp_path, *args, "--model", "boom.py:Net", "--out", "run")
    assert proc.returncode != 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed"
    # Rank 0 names the rank that raised and its error, not only its own broken collective.
    assert summary["error"].startswith("rank 1: ValueError: rank one broke on purpose")
    assert summary["steps"] == 2
    lines = read_lines(tmp_path / "run")
    assert [r["step"] for r in lines if r["type"] == "step"] == [0, 1]
    assert lines[-1]["type"] == "error"
    assert "rank 1: training failed: ValueError" in proc.stderr


@needs_gloo
def test_a_rank_that_is_killed_is_named_as_gone_not_as_a_socket_error(tmp_path):
    # SIGKILL leaves no error in the store: rank 0's collective fails on a closed
    # socket, and the folder says a rank's process ended, not only gloo's words.
    (tmp_path / "kill.py").write_text(BOOM.replace(
        'raise ValueError("rank one broke on purpose")',
        'import os, signal; os.kill(os.getpid(), signal.SIGKILL)'))
    at = ARGS.index("--depth")
    proc = torchrun(tmp_path, *ARGS[:at], *ARGS[at + 4:], "--model", "kill.py:Net",
                    "--out", "run")
    assert proc.returncode != 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"].startswith("another rank's process ended without saying why")
    assert ".cc:" not in summary["error"]  # no backend source path from the build machine


def test_fsdp_without_torchrun_and_single_process_commands_under_it(capsys, monkeypatch,
                                                                     tmp_path):
    assert main([*ARGS, "--fsdp", "--out", str(tmp_path / "r")]) == ExitCode.BAD_INPUT
    assert "torchrun --nproc_per_node N -m vgdiag run --fsdp" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(key, value)
    assert main(["compare", "--epochs", "1"]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert "vgdiag compare runs in one process: start it without torchrun" in err
    assert main(["view", str(tmp_path)]) == ExitCode.BAD_INPUT
    assert "the dashboard" in capsys.readouterr().err


@pytest.mark.parametrize("n", [1, 2, 5, 23, 31])
def test_slices_cover_the_batch_and_their_weighted_losses_average_to_its_mean(n):
    world = 3
    x = torch.arange(n, dtype=torch.float64).reshape(-1, 1)
    y = torch.arange(n)
    parts = [DataParallel(r, world, r, "cpu").shard(x, y) for r in range(world)]
    kept = [p for p in parts if p[2] > 0]
    assert torch.equal(torch.cat([p[1] for p in kept]), y)  # in order, each sample once
    sizes = [len(p[1]) for p in kept]
    assert max(sizes) - min(sizes) <= 1
    # DDP averages over ranks: the weighted slice means must average to the batch mean.
    averaged = sum(p[2] * p[0].mean() for p in kept) / world
    assert float(averaged) == pytest.approx(float(x.mean()))
    empty = [p for p in parts if p[2] == 0]
    assert len(empty) == max(world - n, 0)
    assert all(len(p[1]) == 1 for p in empty)  # a sample to run, weighted 0


def test_fsdp_units_keep_a_module_whose_code_uses_its_childrens_parameters_whole():
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2)
            self.mlp = nn.Linear(8, 8)

    model = nn.Sequential(nn.Sequential(Block(), Block()))
    units = fsdp_units(model)
    assert units == list(model[0])  # descends through the single-child wrapper
    assert fsdp_units(nn.MultiheadAttention(8, 2)) == []  # owns in_proj_weight: one unit


@needs_gloo
def test_bad_input_found_on_rank_0_alone_stops_every_rank_with_its_line(tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    proc = torchrun(tmp_path, *ARGS, "--out", "taken")
    assert proc.returncode != 0
    # Rank 0 prints its one line; rank 1, which got it through the exchange, exits 2
    # without printing it a second time.
    assert proc.stderr.count("--out taken already holds files") == 1, proc.stderr[-2000:]
    assert proc.stderr.count("vgdiag: error:") == 1
    assert "/vgdiag/" not in proc.stderr  # no traceback of ours (torchrun prints its own)
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]  # nothing lost
    # A bad option, found by every rank on its own, is said once too.
    proc = torchrun(tmp_path, "run", "--headless", "--epochs", "0")
    assert proc.returncode != 0
    assert proc.stderr.count("vgdiag: error:") == 1, proc.stderr[-2000:]
    assert "--epochs" in proc.stderr
    # Stopped by torchrun once rank 0 has exited, rank 1 ends as bad input too.
    assert "interrupted" not in proc.stderr and "exitcode  : 130" not in proc.stderr


def test_a_rank_other_than_0_leaves_bad_input_to_rank_0_to_say(capsys, monkeypatch, tmp_path):
    for key, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("vgdiag.cli.app._RANK_ZERO_GRACE_S", 0.0)
    for argv in (["run", "--plugin-opt", "relu.init=keep"], ["run", "--epochs", "x"],
                 ["run", "--epochs", "0"]):
        assert main(argv) == ExitCode.BAD_INPUT
        assert capsys.readouterr().err == ""
    # What may differ between machines, and commands that are not `vgdiag run` (a
    # subprocess of a rank), are said where they are found.
    for argv, said in ((["compare", "--epochs", "1"], "runs in one process"),
                       (["view", "--nope"], "--nope"),
                       (["run", "--plugin-opt", "nope.x=1", "--plugin", "nope"],
                        "unknown plugin 'nope'")):
        assert main(argv) == ExitCode.BAD_INPUT
        assert said in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")
    assert main(["run", "--plugin-opt", "relu.init=keep"]) == ExitCode.BAD_INPUT
    assert "add --plugin relu" in capsys.readouterr().err


def test_fsdp_refuses_a_staged_schedule():
    from types import SimpleNamespace

    from vgdiag.errors import UserError

    parallel = DataParallel(0, 2, 0, "cpu", fsdp=True)
    parallel.check(SimpleNamespace(stage_plan=None))
    with pytest.raises(UserError, match="drop --fsdp to use DDP"):
        parallel.check(SimpleNamespace(stage_plan=lambda model: []))
    DataParallel(0, 2, 0, "cpu").check(SimpleNamespace(stage_plan=lambda model: []))


class _Peers:
    """A DataParallel stand-in whose peer failed after `after` looks."""

    rank = 0

    def __init__(self, after: int) -> None:
        self.looks, self.after = 0, after

    def peer_failure(self, wait_s: float) -> str | None:
        self.looks += 1
        return "rank 1: ValueError: gone" if self.looks > self.after else None


def test_a_rank_stuck_waiting_for_a_lost_peer_still_leaves_a_failed_folder(tmp_path):
    from vgdiag.cli.data_parallel import PeerWatch
    from vgdiag.runs.store import RunStore

    exits: list[int] = []
    store = RunStore(tmp_path / "run", "stuck")
    watch = PeerWatch(_Peers(after=2), store, grace_s=0.2, poll_s=0.01, exit=exits.append)
    watch.start()
    watch.join(timeout=10)  # the main thread never comes back (stuck in a collective)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == "rank 1: ValueError: gone (rank 0 was left waiting for it)"
    assert exits == [ExitCode.TRAINING_FAILED]


def test_the_watch_leaves_the_folder_to_a_main_thread_that_reported_in_time(tmp_path):
    from vgdiag.cli.data_parallel import PeerWatch
    from vgdiag.runs.store import RunStore

    exits: list[int] = []
    store = RunStore(tmp_path / "run", "fine")
    watch = PeerWatch(_Peers(after=0), store, grace_s=5.0, poll_s=0.01, exit=exits.append)
    watch.start()
    watch.done.set()  # the main thread got out and wrote the failure itself
    watch.join(timeout=10)
    store.close()
    assert exits == []
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == \
        "interrupted"  # what close() writes for a stream it never saw end: untouched
