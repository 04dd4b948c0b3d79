"""Models whose code misbehaves on purpose, for the fault suite (tests/test_faults.py).

Each takes the digits data (1 x 8 x 8 images, 10 classes). The one-batch shape check
before training builds its own instance, so a fault "at call N" of an instance's
forward fires during training.
"""

from __future__ import annotations

import sys

import torch
from torch import nn


class _Base(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))
        self.calls = 0
        self.eval_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if not self.training:
            self.eval_calls += 1
        self.fault()
        return self.body(x)

    def fault(self) -> None:
        return None


class Fine(_Base):
    pass


class ExitInInit(_Base):
    def __init__(self) -> None:
        super().__init__()
        sys.exit(0)


class ExitInForward(_Base):
    def fault(self) -> None:
        if self.calls == 3:
            sys.exit(0)


class InterruptInForward(_Base):
    def fault(self) -> None:
        if self.calls == 3:
            raise KeyboardInterrupt


class RaiseInForward(_Base):
    def fault(self) -> None:
        if self.calls == 3:
            raise RuntimeError("boom at the third step")


class NoneAtStep7(_Base):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return None if self.calls == 7 else out  # type: ignore[return-value]


class NanCrash(_Base):
    """The loss turns NaN and the model's own sampling then raises on it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.calls >= 3:
            out = out * float("nan")
            torch.multinomial(out.softmax(dim=1), 1)
        return out


class FailInTest(_Base):
    """Fails at the second evaluation: with one epoch, that is the final test pass."""

    def fault(self) -> None:
        if self.eval_calls == 2:
            raise ValueError("the test evaluation broke")


class Slow(_Base):
    """Trains slowly enough to be killed at a random point."""

    def fault(self) -> None:
        if self.calls % 4 == 0:
            import time

            time.sleep(0.004)
