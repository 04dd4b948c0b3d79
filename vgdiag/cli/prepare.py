"""What the training commands do before they train: plugin options, one-batch check."""

from __future__ import annotations

import sys
from typing import Any


def parse_plugin_options(items: list[str] | None) -> dict[str, dict[str, str]]:
    if not items:
        return {}
    from vgdiag.plugin_api import parse_plugin_opts, validate_plugin_opts

    parsed = parse_plugin_opts(items)
    validate_plugin_opts(parsed)
    return parsed


def preflight(experiment: Any, bundle: Any) -> None:
    """One batch forward before training: shape errors become one clear line, and what
    is odd but may be meant (more outputs than classes) a warning line on stderr. The
    built-in model is checked too: its shapes are right, but a --loss may not fit."""
    from vgdiag.inputs.shapecheck import check_shapes

    say_warnings(check_shapes(experiment.build_model(), bundle,
                              experiment.notes.get("loss", ""), experiment.output_key,
                              loss_fn=experiment.loss_fn))


def say_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"vgdiag: warning: {warning}", file=sys.stderr)
