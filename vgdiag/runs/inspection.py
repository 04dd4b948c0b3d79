"""inspect: one forward/backward at initialisation, no training, seconds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from vgdiag.engine.diagnosis import diagnose, verdict
from vgdiag.engine.probe import Probe
from vgdiag.engine.records import Finding, LayerInfo, StepRecord
from vgdiag.inputs.datasets import DATA_DEFAULTS
from vgdiag.inputs.recipe import RunOptions, build_experiment, load_data


@dataclass
class InspectResult:
    model_spec: str
    data_name: str
    batch_size: int
    layers: list[LayerInfo]
    record: StepRecord
    findings: list[Finding]
    warnings: list[str] = field(default_factory=list)  # the pre-flight's: odd, may be meant

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model_spec,
            "data": self.data_name,
            "batch_size": self.batch_size,
            "loss": self.record.loss,
            "layers": [
                {**info.to_json(), **self.record.layers[info.name].to_json()}
                for info in self.layers
                if info.name in self.record.layers
            ],
            "findings": [f.to_json() for f in self.findings],
            "verdict": verdict(self.findings),
        }


def inspect_at_init(opts: RunOptions) -> InspectResult:
    """Measure every layer on one training batch with the freshly initialised model."""
    opts.validate()
    data = load_data(opts)
    experiment = build_experiment(opts, data)
    warnings: list[str] = []
    if not experiment.model_spec.startswith("builtin:"):
        from vgdiag.inputs.shapecheck import check_shapes

        warnings = check_shapes(experiment.build_model(), data,
                                experiment.notes.get("loss", ""), experiment.output_key)
    device = torch.device(experiment.train.device)
    torch.manual_seed(experiment.train.seed)
    model = experiment.build_model().to(device)
    model.train()
    defaults = DATA_DEFAULTS.get(opts.data, DATA_DEFAULTS["synthetic"])
    batch_size = opts.batch_size or defaults.batch_size
    order = torch.Generator().manual_seed(experiment.train.seed)
    x, y = next(iter(data.train.to(device).batches(batch_size, order)))
    with Probe(model, None, every=1, hist_every=1) as probe:
        out = model(x)
        if not isinstance(out, torch.Tensor) or experiment.output_key is not None:
            from vgdiag.engine.outputs import select_output

            out = select_output(out, experiment.output_key)
        loss = experiment.loss_fn(out, y)
        probe.observe_loss(loss)
        loss.backward()
        probe.end_step()
        layers = probe.layers
    record = probe.history[0]
    from vgdiag.plugin_api import not_applicable

    findings = diagnose([record], layers, (), data.num_classes,
                        exclude=not_applicable(experiment))
    return InspectResult(experiment.model_spec, data.name, int(y.shape[0]), layers, record,
                         findings, warnings)
