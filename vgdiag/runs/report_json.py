"""`vgdiag report --format json`: summary.json's schema plus config, notes and series."""

from __future__ import annotations

from typing import Any

from vgdiag.engine.summary import summary_json
from vgdiag.runs.folder import dumps
from vgdiag.runs.reader import RunData
from vgdiag.runs.regression import BaselineComparison
from vgdiag.runs.report_data import grad_norm_series, prepare


def report_json(run: RunData) -> dict[str, Any]:
    """The JSON report as a dict: summary.json's schema plus config, notes and series.

    `series` holds {"steps": [...], "grad_norm": {layer: [...]}}. Written by
    render_json as every run file is (runs.folder.dumps): inf as 1e999, NaN as null.
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
    return doc


def render_json(run: RunData, baseline: BaselineComparison | None = None) -> str:
    doc = report_json(run)
    if baseline is not None:
        doc["baseline"] = baseline.to_json()
    return dumps(doc, indent=2) + "\n"

