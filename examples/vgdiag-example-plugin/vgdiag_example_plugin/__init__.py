"""momentum: plain SGD -> SGD with momentum (an example of a third-party vgdiag plugin)."""

from __future__ import annotations

from vgdiag.engine.experiment import Experiment, sgd
from vgdiag.plugin_api import Plugin


class Momentum(Plugin):
    name = "momentum"
    summary = "add momentum to plain SGD (example third-party plugin)"
    options = {"beta": "momentum factor in (0, 1) (default 0.9)"}

    def _beta(self, options: dict[str, str]) -> float:
        beta = self.float_option(options, "beta", 0.9)
        if beta >= 1:
            raise self._bad("beta", options["beta"], "give a number between 0 and 1")
        return beta

    def why_not(self, experiment: Experiment, options: dict[str, str]) -> str | None:
        self.check_options(options)
        self._beta(options)
        if experiment.optimizer_name != "sgd":
            return f"only changes plain SGD; this experiment uses {experiment.optimizer_name}"
        return None

    def transform(self, experiment: Experiment, options: dict[str, str]) -> Experiment:
        beta = self._beta(options)
        return self.record(
            experiment,
            {"beta": beta},
            optimizer_factory=sgd(experiment.train.lr, momentum=beta),
            optimizer_name="sgd-momentum",
        )
