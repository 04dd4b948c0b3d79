"""compare.html: the table, every variant's learning curves on shared axes, and the
gradient profiles of all variants on one axis, layer matched to layer.

Plugins insert layers (BatchNorm after each Linear, layer-wise heads) and rename others
(a skip wraps layers in a Residual), so names differ between variants. A layer is
matched to the baseline's by its kind and its rank among layers of that kind in depth
order (the 3rd Linear is the 3rd Linear); layers of a kind the baseline lacks are
inserted ones and are listed apart, not drawn over the baseline's.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from vgdiag.engine.records import LayerInfo, StepRecord
from vgdiag.runs import svgplot as svg
from vgdiag.runs.compare import VariantOutcome
from vgdiag.runs.compare_table import budget_line
from vgdiag.runs.reader import RunData, read_run

WIDTH, HEIGHT = 560, 300


def _runs(outcomes: list[VariantOutcome]) -> list[tuple[str, RunData]]:
    runs = []
    for o in outcomes:
        if o.run_dir is None:
            continue
        try:
            runs.append((o.name, read_run(o.run_dir)))
        except Exception:  # a folder that cannot be read leaves its curve out, not the page
            continue
    return runs


def curve_svg(runs: list[tuple[str, RunData]], key: str, title: str,
              y_range: tuple[float, float] | None = None) -> str:
    """`key` (val_acc, val_loss) against epoch for every run, one colour each."""
    series = [(name, [float(e.epoch) for e in run.epochs],
               [getattr(e, key) for e in run.epochs]) for name, run in runs]
    ys = [y for _, _, values in series for y in values if y is not None and math.isfinite(y)]
    xs = [x for _, values, _ in series for x in values]
    if not ys or not xs:
        return svg.empty_plot(WIDTH, HEIGHT, title, "no epoch finished yet")
    lo, hi = y_range or (min(ys), max(ys))
    frame = svg.Frame(WIDTH, HEIGHT, (min(xs), max(max(xs), min(xs) + 1)), (lo, hi or 1.0),
                      right=170)
    x_ticks = [(t, svg.tick_label(t)) for t in svg.nice_ticks(*frame.x_range)]
    parts = [svg.svg_open(WIDTH, HEIGHT, title=title),
             svg.axes(frame, x_ticks=x_ticks,
                      y_ticks=[(t, svg.tick_label(t)) for t in svg.nice_ticks(lo, hi)],
                      x_label="epoch", y_label=key.replace("_", " "), title=title)]
    entries = []
    for i, (name, x, y) in enumerate(series):
        color = svg.ramp_color(i, len(series))
        parts.append(svg.line(frame, x, y, color=color, tooltip=name))
        entries.append((name, color, ""))
    parts.append(svg.legend(entries, frame.plot_right + 10, frame.plot_top + 8, max_label=20))
    parts.append(svg.svg_close())
    return "".join(parts)


def matched_layers(layers: Sequence[LayerInfo]) -> dict[str, tuple[str, int]]:
    """Layer name -> (kind, rank among that kind in depth order): the matching key."""
    seen: dict[str, int] = {}
    keys = {}
    for info in sorted(layers, key=lambda i: i.depth):
        keys[info.name] = (info.kind, seen.get(info.kind, 0))
        seen[info.kind] = seen.get(info.kind, 0) + 1
    return keys


def _grad(record: StepRecord | None, name: str) -> float | None:
    stats = record.layers.get(name) if record else None
    value = getattr(stats, "grad_norm", None)
    return float(value) if isinstance(value, float) and value > 0 and math.isfinite(value) else None


def profile_svg(runs: list[tuple[str, RunData]], at: str) -> tuple[str, list[str]]:
    """log10 grad norm per baseline layer for every run at `at` ("init" or "end"), and
    one line per run naming the inserted layers (drawn apart, in the note)."""
    title = f"gradient norm per layer at {'initialisation' if at == 'init' else 'the end'}"
    if not runs:
        return svg.empty_plot(WIDTH, HEIGHT, title, "no run trained"), []
    base_keys = matched_layers(runs[0][1].layers)
    axis = list(base_keys.values())
    notes: list[str] = []
    lines: list[tuple[str, list[float | None]]] = []
    for name, run in runs:
        record = (run.records[0] if at == "init" else run.records[-1]) if run.records else None
        keys = matched_layers(run.layers)
        by_key = {key: _grad(record, layer) for layer, key in keys.items()}
        lines.append((name, [svg.log10_or_none(by_key.get(key)) for key in axis]))
        extra = [layer for layer, key in keys.items() if key not in set(axis)]
        if extra:
            notes.append(f"{name}: inserted {', '.join(extra)}")
    decades = svg.decade_range(v for _, values in lines for v in values)
    if decades is None:
        return svg.empty_plot(WIDTH, HEIGHT, title, "no gradient was measured"), notes
    frame = svg.Frame(WIDTH, HEIGHT, (0, max(len(axis) - 1, 1)), (decades[0], decades[1]),
                      right=170, bottom=56)
    labels = [(float(i), f"{kind} {rank + 1}") for i, (kind, rank) in enumerate(axis)]
    parts = [svg.svg_open(WIDTH, HEIGHT, title=title),
             svg.axes(frame, x_ticks=labels, y_ticks=svg.log_ticks(*decades),
                      y_label="grad norm", title=title, x_tick_rotate=-35)]
    entries = []
    for i, (name, values) in enumerate(lines):
        color = svg.ramp_color(i, len(lines))
        parts.append(svg.line(frame, [float(x) for x in range(len(axis))], values,
                              color=color, tooltip=name))
        entries.append((name, color, ""))
    parts.append(svg.legend(entries, frame.plot_right + 10, frame.plot_top + 8, max_label=20))
    parts.append(svg.svg_close())
    return "".join(parts), notes


def html_page(outcomes: list[VariantOutcome], rows: list[dict[str, Any]], target_acc: float,
              command: str, labels: list[str], cells: list[list[str]]) -> str:
    """One self-contained page: the table, the curves, the profiles."""
    runs = _runs(outcomes)
    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in cells)
    curves = (f"<figure>{curve_svg(runs, 'val_acc', 'validation accuracy', (0.0, 1.0))}</figure>"
              f"<figure>{curve_svg(runs, 'val_loss', 'validation loss')}</figure>")
    profiles, notes = "", list[str]()
    for at in ("init", "end"):
        plot, found = profile_svg(runs, at)
        profiles += f"<figure>{plot}</figure>"
        notes = notes or found
    note = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>vgdiag compare</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }}
td:first-child, td:last-child, th:first-child, th:last-child {{ text-align: left; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 1rem; }}
figure {{ margin: 0; }}
code {{ background: #f3f3f3; padding: 0.1rem 0.3rem; }}
</style></head><body>
<h1>vgdiag compare</h1>
<p>{html.escape(budget_line(rows))} <code>{html.escape(command)}</code></p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p>gain: test accuracy over the baseline's, clear only beyond both seeds' spreads;
verdict: learned (validation accuracy against chance), then gradient health. Target
validation accuracy: {target_acc:g}.</p>
<h2>Learning curves</h2>
<div class="plots">{curves}</div>
<h2>Gradient profiles (log10 gradient norm per layer, layers matched by kind and order)</h2>
<div class="plots">{profiles}</div>
<ul>{note}</ul>
</body></html>
"""
