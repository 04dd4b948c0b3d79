"""adam: switch the optimizer to Adam, which rescales each parameter's step.

Adam divides each gradient by a running estimate of its magnitude, so layers whose
gradients vanished still take steps of about the learning rate.
"""

from __future__ import annotations

import dataclasses

from vgdiag.engine.experiment import Experiment, adam
from vgdiag.plugin_api import Plugin


class Adam(Plugin):
    name = "adam"
    summary = "train with the Adam optimizer instead of SGD"
    options = {"lr": "learning rate (default 1e-3, the reference's value)"}

    def why_not(self, experiment: Experiment, options: dict[str, str]) -> str | None:
        self.check_options(options)
        self.float_option(options, "lr", 1e-3)
        if experiment.optimizer_name == "adam":
            return "already uses Adam"
        return None

    def transform(self, experiment: Experiment, options: dict[str, str]) -> Experiment:
        lr = self.float_option(options, "lr", 1e-3)
        note = {"lr": lr, "replaced": experiment.optimizer_name}
        return self.record(
            experiment,
            note,
            optimizer_factory=adam(lr),
            optimizer_name="adam",
            # TrainConfig.lr describes the optimizer in use, so config.json stays true.
            train=dataclasses.replace(experiment.train, lr=lr),
        )
