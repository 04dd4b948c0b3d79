"""vgdiag.watch in a DistributedDataParallel training loop.

    torchrun --nproc_per_node 2 examples/ddp_watch.py            # CPU: gloo
    torchrun --nproc_per_node 2 examples/ddp_watch.py --fsdp     # FSDP2 (fully_shard)

Every rank trains on its own shard of the data and records; DDP has averaged the
gradients by the time optimizer.step() runs, so the gradient and weight statistics
are the same on every rank. Rank 0 (`w.is_main`) writes the run folder (`--out`,
then `vgdiag report runs/ddp` or `vgdiag view runs/ddp`) and prints the result; the
epoch losses in the folder are averaged over the ranks. With --fsdp each rank holds
a slice of every parameter and the probe adds the slices' squared norms across ranks
on sampled steps.
On GPUs, torchrun with one process per GPU uses NCCL instead.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import vgdiag
from vgdiag.engine.models import build_mlp
from vgdiag.inputs.datasets import load_synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256, help="per rank")
    parser.add_argument("--fsdp", action="store_true", help="shard with FSDP2 instead of DDP")
    parser.add_argument("--out", type=Path, default=Path("runs/ddp"),
                        help="the run folder rank 0 writes (new or empty)")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)

    torch.manual_seed(42)  # the same initial weights on every rank
    model = build_mlp(784, 10, depth=7, width=128, activation="sigmoid").to(device)
    if args.fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (world,))
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        wrapped: nn.Module = fully_shard(model, mesh=mesh)
    else:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=0.01)

    data = load_synthetic(42, size=6000).to(device)
    x_all, y_all = data.train.x[rank::world], data.train.y[rank::world]  # type: ignore[attr-defined]

    with vgdiag.watch(wrapped, optimizer, every=5, num_classes=10, out=args.out) as w:
        for epoch in range(args.epochs):
            order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(epoch))
            for start in range(0, len(order), args.batch_size):
                idx = order[start : start + args.batch_size].to(device)
                optimizer.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(wrapped(x_all[idx]), y_all[idx])
                w.observe_loss(loss)
                loss.backward()
                optimizer.step()
            w.observe_epoch()  # every rank: the mean loss is averaged over the ranks

    if w.is_main:
        first, last = w.history.first, w.history.last
        assert first is not None and last is not None
        print(f"{world} ranks, {last.step + 1} steps, {len(w.history)} samples on rank 0")
        print(f"{'layer':8s} {'grad_norm first':>16s} {'grad_norm last':>15s}")
        for info in w.layers:
            print(f"{info.name:8s} {first.layers[info.name].grad_norm:16.3e} "
                  f"{last.layers[info.name].grad_norm:15.3e}")
        for finding in w.findings():
            print(f"[{finding.severity}] {finding.id}: {finding.message}")
        print(f"run folder: {w.out}  (vgdiag report {w.out})")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
