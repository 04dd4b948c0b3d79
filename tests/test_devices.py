"""CPU set-up of processes vgdiag trains in: subnormal floats flushed to zero."""

from __future__ import annotations

import subprocess
import sys

import torch


def test_training_in_vgdiag_flushes_subnormals_and_a_plain_process_does_not():
    probe = ("import torch; from vgdiag.engine.devices import flush_denormals; "
             "tiny = torch.tensor([1e-39]); before = (tiny * 0.5).item(); "
             "flush_denormals(torch.device('cpu')); print(before, (tiny * 0.5).item())")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    before, after = map(float, done.stdout.split())
    assert before > 0.0  # the default: 5e-40 is a subnormal float32
    assert after == 0.0


def test_a_run_leaves_the_process_cpu_settings_as_it_found_them():
    # run_training flushes subnormals and may set the thread count while it trains; a
    # process that goes on afterwards (tests, notebooks) gets its own settings back.
    from vgdiag.engine.trainer import run_training
    from vgdiag.inputs.recipe import RunOptions, build_experiment, load_data

    def flushed() -> bool:
        return torch.tensor([1e-39]).mul(1.0).item() == 0.0

    threads = torch.get_num_threads()
    torch.set_flush_denormal(False)
    options = RunOptions(epochs=1, depth=2, width=8, threads=1)
    data = load_data(options)
    seen = []
    for _event in run_training(build_experiment(options, data), data):
        seen.append((flushed(), torch.get_num_threads()))
    assert (True, 1) in seen  # it did change them while training
    assert not flushed() and torch.get_num_threads() == threads
