"""`vgdiag report --format json`: summary.json's schema plus config, notes and series."""

from __future__ import annotations

import json
import math
from typing import Any

from vgdiag.engine.summary import summary_json
from vgdiag.runs.reader import RunData
from vgdiag.runs.report_data import grad_norm_series, prepare


def report_json(run: RunData) -> dict[str, Any]:
    """The JSON report as a dict: summary.json's schema plus config, notes and series.

    `series` holds {"steps": [...], "grad_norm": {layer: [...]}}. NaN and infinite
    numbers become null, so any strict JSON reader accepts the document.
    """
    data = prepare(run)
    first = run.records[0] if run.records else None
    last = run.records[-1] if run.records else None
    steps = [int(run.summary.get("steps") or 0)]
    steps += [run.epochs[-1].steps] if run.epochs else []
    steps += [last.step + 1] if last else []
    doc = summary_json(
        name=run.name,
        status=run.status,
        layers=data.layers,
        first=first,
        last=last,
        epochs=run.epochs,
        test=data.test,
        findings=data.findings,
        seconds=float(run.summary.get("seconds") or 0.0),
        steps=max(steps),
        error=data.error,
        num_classes=data.num_classes,
    )
    for key, value in run.summary.items():  # keys a newer writer added pass through
        doc.setdefault(key, value)
    step_list, grad = grad_norm_series(run)
    doc.update(
        config=run.config,
        notes=data.notes,
        series={"steps": step_list, "grad_norm": grad},
    )
    return _strict(doc)


def render_json(run: RunData) -> str:
    return json.dumps(report_json(run), indent=2, allow_nan=False) + "\n"


def _strict(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return _strict(value.item())
    return value
