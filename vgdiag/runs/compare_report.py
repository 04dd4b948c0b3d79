"""compare's outputs: compare.json, compare.md, compare.html and the terminal table."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from vgdiag.engine.records import _jsonable
from vgdiag.runs.compare import VariantOutcome, comparison_rows
from vgdiag.runs.store import read_run, write_json_atomic

COLUMNS = (
    ("variant", "variant"),
    ("train_acc", "train acc"),
    ("val_acc", "val acc"),
    ("test_acc", "test acc"),
    ("test_loss", "test loss"),
    ("ratio_init", "first/last @init"),
    ("ratio_end", "first/last @end"),
    ("epoch_to_target", "epoch ≥ target"),
    ("seconds", "wall s"),
    ("verdict", "verdict"),
)


def _cell(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key in ("ratio_init", "ratio_end"):
        return f"{value:.2g}"
    if key == "seconds":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _row_cells(row: dict[str, Any]) -> list[str]:
    if not row["applied"] and row["reason"] and row["verdict"] in ("", "not applicable"):
        reason = f"not applicable: {row['reason']}"
        return [row["variant"], *["-"] * (len(COLUMNS) - 2), reason]
    cells = [_cell(key, row[key]) for key, _ in COLUMNS]
    if not row["applied"] and row["reason"]:
        cells[-1] = f"failed: {row['reason']}"
    return cells


# The terminal table leaves out what compare.md has room for, to fit 80 columns.
TERMINAL_COLUMNS = ("variant", "test_acc", "ratio_init", "ratio_end", "epoch_to_target",
                    "seconds", "verdict")
TERMINAL_LABELS = {"test_acc": "acc", "ratio_init": "@init", "ratio_end": "@end",
                   "epoch_to_target": "epoch", "seconds": "s"}
TERMINAL_WIDTHS = {"variant": 11, "test_acc": 5, "ratio_init": 7, "ratio_end": 7,
                   "epoch_to_target": 5, "seconds": 5}


def rich_table(rows: list[dict[str, Any]], target_acc: float) -> Table:
    """The comparison for a terminal: one finding id a line in the verdict column."""
    keys = [key for key, _ in COLUMNS]
    table = Table(
        title="Baseline and mitigations",
        caption=f"acc: test; @init/@end: first ÷ last layer grad norm; "
        f"epoch: val acc ≥ {target_acc:g}",
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for key in TERMINAL_COLUMNS:
        label = TERMINAL_LABELS.get(key, dict(COLUMNS)[key])
        text = key in ("variant", "verdict")
        table.add_column(label, justify="left" if text else "right", no_wrap=True,
                         min_width=TERMINAL_WIDTHS.get(key))
    for row in rows:
        cells = dict(zip(keys, _row_cells(row)))
        cells["verdict"] = cells["verdict"].replace("unhealthy: ", "").replace(", ", "\n")
        table.add_row(*(cells[key] for key in TERMINAL_COLUMNS))
    return table


def markdown(rows: list[dict[str, Any]], target_acc: float, command: str) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        "# vgdiag compare",
        "",
        f"Same seed, data order and epoch budget for every variant. `{command}`",
        "",
        "| " + " | ".join(label for _, label in COLUMNS) + " |",
        "|" + "|".join("---" if k in ("variant", "verdict") else "---:" for k, _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(esc(c) for c in _row_cells(row)) + " |" for row in rows]
    lines += [
        "",
        f"first/last: the first layer's gradient norm over the output layer's, at "
        f"initialisation and at the end; epoch ≥ target: first epoch with validation "
        f"accuracy ≥ {target_acc:g}.",
        "",
    ]
    return "\n".join(lines)


def html_page(outcomes: list[VariantOutcome], rows: list[dict[str, Any]], target_acc: float,
              command: str) -> str:
    """One self-contained page: the table, then the gradient profiles side by side."""
    from vgdiag.runs.report import gradient_profile_range, gradient_profile_svg

    runs = [(o.name, read_run(o.run_dir)) for o in outcomes if o.run_dir is not None]
    decades = gradient_profile_range(*[run for _, run in runs]) if runs else None
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _row_cells(row)) + "</tr>"
        for row in rows
    )
    plots = "".join(
        f'<figure>{gradient_profile_svg(run, title=name, width=380, height=260, decades=decades)}'
        "</figure>"
        for name, run in runs
    )
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
<p>Same seed, data order and epoch budget for every variant: <code>{html.escape(command)}</code></p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p>first/last: the first layer's gradient norm over the output layer's. Target validation
accuracy: {target_acc:g}.</p>
<h2>Gradient profiles (log10 gradient norm per layer, at initialisation and at the end)</h2>
<div class="plots">{plots}</div>
</body></html>
"""


def write_outputs(
    out_dir: Path,
    outcomes: list[VariantOutcome],
    target_acc: float,
    command: str,
    options: dict[str, Any],
) -> list[dict[str, Any]]:
    """Write compare.json, compare.md and compare.html; return the table rows."""
    rows = comparison_rows(outcomes, target_acc)
    baseline, variants = outcomes[0], outcomes[1:]
    document = {
        "schema_version": 1,
        "command": command,
        "options": options,
        "target_acc": target_acc,
        "baseline": baseline.summary,
        "variants": [o.to_json() for o in variants],
        "table": rows,
    }
    write_json_atomic(out_dir / "compare.json", _jsonable(document))
    (out_dir / "compare.md").write_text(markdown(rows, target_acc, command), encoding="utf-8")
    (out_dir / "compare.html").write_text(html_page(outcomes, rows, target_acc, command),
                                          encoding="utf-8")
    return rows
