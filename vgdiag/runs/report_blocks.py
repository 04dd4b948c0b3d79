"""The per-block gradient view and the gradient through time, as report tables.

Rows are plain strings so the Markdown and HTML reports lay them out alike; the
numbers come from gradflow (blocks) and the records' time profiles.
"""

from __future__ import annotations

import math

from vgdiag.engine.gradflow import block_summary, first_last_ratio
from vgdiag.runs.reader import RunData
from vgdiag.runs.report_data import fmt_num
from vgdiag.textfmt import plural

BLOCK_HEAD = ["block", "layers", "grad_norm init", "grad_norm last", "last \u00f7 output"]
TIME_HEAD = ["recurrent module", "time steps", "first step", "last step", "first \u00f7 last",
             "per step"]


def block_rows(run: RunData) -> tuple[list[list[str]], str]:
    """Rows of the block table and a one-line summary ("" when the model has no blocks)."""
    first = run.records[0] if run.records else None
    last = run.records[-1] if run.records else None
    summary = block_summary(first, last, run.layers) or run.summary.get("blocks") or {}
    rows = [[str(r["name"]), str(len(r["layers"])), fmt_num(r.get("grad_norm_first")),
             fmt_num(r.get("grad_norm")), fmt_num(r.get("ratio_to_output"))]
            for r in summary.get("rows", [])]
    if not rows:
        return [], ""
    # A row of one layer named as itself (a stem, a norm, the head) is not a block.
    single = sum(1 for r in summary.get("rows", [])
                 if len(r["layers"]) == 1 and r["layers"][0] == r["name"])
    outside = f" (and {plural(single, 'layer')} outside them)" if single else ""
    line = (f"{plural(len(rows) - single, 'block')}{outside}; first \u00f7 output block "
            f"{fmt_num(summary.get('ratio_first_last'))}, log10 slope per block "
            f"{fmt_num(summary.get('log10_slope_per_block'))}.")
    return rows, line


def time_rows(run: RunData) -> list[list[str]]:
    """||dLoss/dx_t|| at the first and last time step of each recurrent module."""
    last = next((r for r in reversed(run.records) if r.time_grad), None)
    profiles = last.time_grad if last is not None else run.summary.get("time_grad") or {}
    rows = []
    for name, series in profiles.items():
        values = [math.nan if v is None else float(v) for v in series]
        if len(values) < 2:
            continue
        ratio = first_last_ratio(values)
        per_step = ratio ** (1 / (len(values) - 1)) if math.isfinite(ratio) and ratio > 0 \
            else math.nan
        rows.append([name, str(len(values)), fmt_num(values[0]), fmt_num(values[-1]),
                     fmt_num(ratio), fmt_num(per_step)])
    return rows
