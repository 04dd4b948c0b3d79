"""CPU set-up of processes vgdiag trains in: subnormal floats flushed to zero."""

from __future__ import annotations

import subprocess
import sys


def test_training_in_vgdiag_flushes_subnormals_and_a_plain_process_does_not():
    probe = ("import torch; from vgdiag.engine.devices import flush_denormals; "
             "tiny = torch.tensor([1e-39]); before = (tiny * 0.5).item(); "
             "flush_denormals(torch.device('cpu')); print(before, (tiny * 0.5).item())")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    before, after = map(float, done.stdout.split())
    assert before > 0.0  # the default: 5e-40 is a subnormal float32
    assert after == 0.0
