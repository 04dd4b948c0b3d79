"""Presets: named, documented bundles of compare options.

A preset is data, not code paths: the RunOptions fields it sets, the variants it runs
(each a plugin with its options, RunOptions overrides and a published result), and
the compare options (seeds, jobs). `vgdiag compare --preset NAME` loads it; every
option given explicitly on the command line wins over the preset's value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from vgdiag.errors import UserError
from vgdiag.inputs.recipe import RunOptions
from vgdiag.runs.compare import BASELINE, VariantSpec


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str  # one line for `--help` and the docs
    run: dict[str, Any]  # RunOptions fields
    variants: tuple[VariantSpec, ...]  # the baseline first
    jobs: int = 1
    source: str = ""  # where the bundle and its published numbers come from

    def run_options(self, defaults: dict[str, Any], explicit: dict[str, Any]) -> RunOptions:
        """`defaults`, the preset's fields over them, the explicitly given ones on top."""
        unknown = set(self.run) - {f.name for f in dataclasses.fields(RunOptions)}
        assert not unknown, unknown  # a preset naming a field that does not exist
        return RunOptions(**{**defaults, **self.run, **explicit})

    def specs(self, plugins: list[str] | None, plugin_opts: dict[str, dict[str, str]],
              explicit: Collection[str] = ()) -> list[VariantSpec]:
        """The preset's variants, only those of `plugins` when given; explicit plugin
        options override the preset's for that plugin (in every variant using it), and
        an option given explicitly (`explicit`: RunOptions field names) overrides a
        variant's own value too (`--init xavier` is every variant's init)."""
        chosen = []
        for spec in self.variants:
            if spec.plugin is not None and plugins is not None and spec.plugin not in plugins:
                continue
            options = {**spec.options, **plugin_opts.get(spec.plugin or "", {})}
            overrides = {k: v for k, v in spec.overrides.items() if k not in explicit}
            chosen.append(dataclasses.replace(spec, options=options, overrides=overrides))
        return chosen


# The reference experiment (REFERENCE.md): FashionMNIST in [0, 1], 54k/6k split with seed
# 42, Flatten -> 7 x [Linear(., 128) -> Sigmoid] -> Linear(128, 10), SGD lr 0.01 without
# momentum, batch 512, 100 epochs, seed 42. PyTorch's default init for the baseline;
# N(0, 0.05) with zero bias for every mitigation run.
REFERENCE_INIT = "normal:0.05"
_MITIGATION = {"init": REFERENCE_INIT}


def _mitigation(group: str, plugin: str, published: float, **options: str) -> VariantSpec:
    return VariantSpec(group, plugin, dict(options), dict(_MITIGATION), published=published)


REFERENCE = Preset(
    name="reference",
    summary="the reference experiment of REFERENCE.md: FashionMNIST, 7 sigmoid layers of "
    "128, SGD 0.01, batch 512, 100 epochs, the nine published runs",
    run={
        "data": "fashion-mnist",
        "depth": 7,
        "width": 128,
        "activation": "sigmoid",
        "init": "default",
        "optimizer": "sgd",
        "lr": 0.01,
        "batch_size": 512,
        "epochs": 100,
        "seed": 42,
        "loss": "cross-entropy",
    },
    variants=(
        VariantSpec(BASELINE, published=0.100),
        _mitigation("weight-init-std1", "weight-init", 0.736, scheme="normal", std="1.0"),
        _mitigation("weight-init-std10", "weight-init", 0.193, scheme="normal", std="10.0"),
        # The mitigation init is already the reference's N(0, 0.05): relu keeps it.
        _mitigation("relu", "relu", 0.788, init="keep"),
        _mitigation("adam", "adam", 0.859, lr="0.001"),
        _mitigation("batchnorm", "batchnorm", 0.879),
        _mitigation("skip", "skip", 0.676, blocks="2-3,5-7"),  # h3+h1, h7+h4
        # Per-sample scale: the formula taken literally (scale=unit) moves the first
        # layer by 0.9 of its norm on the first step and stays at chance (0.100).
        _mitigation("gradnorm", "gradnorm", 0.537, eps="1e-06", scale="batch"),
        _mitigation("layerwise", "layerwise", 0.876, blocks="2,2,2,1", init="keep",
                    **{"batch-size": "64"}),
    ),
    jobs=2,
    source="REFERENCE.md, 'The reference experiment' and its table of published results",
)

PRESETS: dict[str, Preset] = {p.name: p for p in (REFERENCE,)}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown --preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


__all__ = ["PRESETS", "REFERENCE", "Preset", "get_preset"]
