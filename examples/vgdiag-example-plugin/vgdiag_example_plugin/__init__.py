"""momentum: plain SGD -> SGD with momentum (an example of a third-party vgdiag plugin)."""

from __future__ import annotations

from dataclasses import dataclass

from vgdiag.engine.experiment import Experiment, sgd
from vgdiag.plugin_api import Plugin, option


def _beta(text: str) -> float:
    value = float(text)  # a ValueError says what is wrong
    if not 0 < value < 1:
        raise ValueError("give a number between 0 and 1")
    return value


@dataclass(frozen=True)
class MomentumOptions:
    beta: float = option(0.9, "momentum factor in (0, 1) (default 0.9)", parse=_beta)


class Momentum(Plugin):
    name = "momentum"
    summary = "add momentum to plain SGD (example third-party plugin)"
    # The diagnosis recommends this plugin for these findings, like a built-in.
    addresses = ("loss_stalled", "input_side_frozen")
    Options = MomentumOptions

    def applies(self, experiment: Experiment, options: MomentumOptions) -> str | None:
        if experiment.optimizer_name != "sgd":
            return f"only changes plain SGD; this experiment uses {experiment.optimizer_name}"
        return None

    def transform(self, experiment: Experiment, options: MomentumOptions) -> Experiment:
        return self.record(
            experiment,
            {"beta": options.beta},
            optimizer_factory=sgd(experiment.train.lr, momentum=options.beta),
            optimizer_name="sgd-momentum",
        )
