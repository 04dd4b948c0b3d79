"""compare's outputs: compare.json, compare.md, compare.html and the terminal table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from vgdiag.engine.records import _jsonable
from vgdiag.runs.compare import VariantOutcome, VariantProgress, VariantState
from vgdiag.runs.compare_table import budget_line, comparison_rows, verdict_text
from vgdiag.runs.folder import COMPARE_FILE, write_json_atomic, write_text_atomic
from vgdiag.textfmt import pack

COLUMNS = (
    ("variant", "variant"),
    ("seeds", "seeds"),
    ("test_acc", "test acc"),
    ("published", "published"),
    ("gain", "gain"),
    ("val_acc", "val acc"),
    ("train_acc", "train acc"),
    ("test_loss", "test loss"),
    ("steps", "steps"),
    ("samples", "samples"),
    ("ratio_init", "first/last @init"),
    ("ratio_end", "first/last @end"),
    ("epoch_to_target", "epoch ≥ target"),
    ("seconds", "wall s"),
    ("verdict", "verdict"),
)
# The terminal keeps every number (they never wrap); the verdict wraps instead.
TERMINAL_COLUMNS = ("variant", "test_acc", "published", "gain", "steps", "samples",
                    "ratio_init", "ratio_end", "seconds", "verdict")
TERMINAL_LABELS = {"test_acc": "test acc", "published": "pub", "ratio_init": "@init",
                   "ratio_end": "@end", "seconds": "time s"}
TEXT_KEYS = ("variant", "verdict")


def _count(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.0f}"


def cell(row: dict[str, Any], key: str) -> str:
    """A row's value as table text; '-' for what is unknown."""
    if key == "verdict":
        return verdict_text(row) or "-"
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key in ("ratio_init", "ratio_end"):
        return f"{value:.2g}"
    if key in ("steps", "samples"):
        return _count(float(value))
    if key == "seconds":
        return f"{value:.1f}"
    if key == "gain":
        clear = {True: " clear", False: " within spread", None: ""}[row.get("clear_gain")]
        if row.get("clear_gain") is False and "at chance" in str(row.get("learned", "")):
            clear = " at chance"  # beyond the spread maybe, but nothing learned
        return f"{value:+.3f}{clear}"
    if key in ("test_acc", "val_acc", "train_acc") and row.get(f"{key}_std") is not None:
        return f"{value:.3f}±{row[f'{key}_std']:.3f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _shown(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[str]:
    """`keys` less the columns no row has a value for (published: only with a preset)."""
    optional = ("published", "seeds")
    return [k for k in keys if k not in optional or any(
        r.get(k) is not None and not (k == "seeds" and r[k] == 1) for r in rows)]


def rich_table(rows: list[dict[str, Any]], target_acc: float) -> Table:
    """The comparison for a terminal: numbers never wrap or drop, the verdict wraps."""
    keys = _shown(rows, TERMINAL_COLUMNS)
    table = Table(
        title="Baseline and mitigations",
        caption="test acc: mean±std over seeds; gain: over the baseline, clear only beyond "
        "both spreads; steps, samples: training each variant had; @init/@end: first ÷ last "
        "layer grad norm; verdict: learned vs chance, then gradient health",
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for key in keys:
        label = TERMINAL_LABELS.get(key, dict(COLUMNS)[key])
        if key in TEXT_KEYS:
            table.add_column(label, justify="left", overflow="fold",
                             min_width=8 if key == "variant" else 12,
                             ratio=1 if key == "verdict" else None)
        else:
            table.add_column(label, justify="right", no_wrap=True,
                             min_width=max(len(label), 4))
    for row in rows:
        cells = {key: cell(row, key) for key in keys}
        cells["verdict"] = cells["verdict"].replace("unhealthy: ", "unhealthy:\n")
        cells["verdict"] = cells["verdict"].replace(", ", "\n").replace(" · ", "\n")
        table.add_row(*(Text(cells[key]) for key in keys))
    return table


def narrow_table(rows: list[dict[str, Any]], width: int = 80) -> RenderableType:
    """The same rows for a terminal too narrow for columns: one block per variant, its
    numbers in whole `label value` fields."""
    blocks: list[RenderableType] = [Text("Baseline and mitigations", style="bold")]
    for row in rows:
        fields = [f"{TERMINAL_LABELS.get(k, dict(COLUMNS)[k])} {cell(row, k)}"
                  for k in _shown(rows, TERMINAL_COLUMNS) if k not in TEXT_KEYS]
        lines = ["  ".join(line) for line in pack(fields, max(width - 2, 20), 2, len)]
        blocks.append(Text.assemble((row["variant"], "bold"), "\n  ", "\n  ".join(lines), "\n  ",
                                    cell(row, "verdict")))
    return Group(*blocks)


NARROW_WIDTH = 100  # below this many columns the table would squeeze its numbers


def terminal_view(rows: list[dict[str, Any]], target_acc: float, width: int) -> RenderableType:
    """The table for `width` columns, and what the variants share (budget_line: it says
    where samples seen differ from the baseline's, as layerwise's do on short runs)."""
    table = narrow_table(rows, width) if width < NARROW_WIDTH else rich_table(rows, target_acc)
    return Group(table, Text(budget_line(rows), style="dim"))


def progress_table(progress: list[VariantProgress]) -> Table:
    """One row per variant while compare runs: epoch, val acc, ETA."""
    table = Table(box=box.SIMPLE, pad_edge=False, title="compare", title_justify="left")
    for label in ("variant", "state", "epoch", "val acc", "val loss", "ETA s"):
        table.add_column(label, justify="left" if label in ("variant", "state") else "right",
                         no_wrap=True)
    for p in progress:
        eta = p.eta_s
        table.add_row(
            p.name, p.state.value,
            f"{p.epoch}/{p.total_epochs}" if p.total_epochs else "-",
            "-" if p.val_acc is None or math.isnan(p.val_acc) else f"{p.val_acc:.3f}",
            "-" if p.val_loss is None or math.isnan(p.val_loss) else f"{p.val_loss:.3f}",
            "-" if eta is None else f"{eta:.0f}",
        )
    return table


def markdown(rows: list[dict[str, Any]], target_acc: float, command: str) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    keys = _shown(rows, tuple(k for k, _ in COLUMNS))
    labels = dict(COLUMNS)
    lines = [
        "# vgdiag compare",
        "",
        f"{budget_line(rows)} `{command}`",
        "",
        "| " + " | ".join(labels[k] for k in keys) + " |",
        "|" + "|".join("---" if k in TEXT_KEYS else "---:" for k in keys) + "|",
    ]
    lines += ["| " + " | ".join(esc(cell(row, k)) for k in keys) + " |" for row in rows]
    lines += [
        "",
        "test acc: mean±std over the seeds; gain: test accuracy over the baseline's, "
        "clear only where it exceeds both spreads added; steps and samples: the "
        "optimizer steps taken and training samples seen; first/last: the first layer's "
        "gradient norm over the output layer's, at initialisation and at the end; "
        f"epoch ≥ target: first epoch with validation accuracy ≥ {target_acc:g}; "
        "verdict: learned (validation accuracy against chance), then gradient health.",
        "",
    ]
    return "\n".join(lines)


def write_outputs(
    out_dir: Path,
    outcomes: list[VariantOutcome],
    target_acc: float,
    command: str,
    options: dict[str, Any],
) -> list[dict[str, Any]]:
    """Write compare.json, compare.md and compare.html; return the table rows."""
    from vgdiag.runs.compare_html import html_page

    rows = comparison_rows(outcomes, target_acc)
    baseline = next((o for o in outcomes if o.spec.plugin is None and o.summary), None)
    document = {
        "schema_version": 2,
        "command": command,
        "options": options,
        "target_acc": target_acc,
        "baseline": baseline.summary if baseline else None,
        "variants": [o.to_json() for o in outcomes
                     if o is not baseline and o.state is not VariantState.SKIPPED],
        "skipped": [o.name for o in outcomes if o.state is VariantState.SKIPPED],
        "table": rows,
    }
    write_json_atomic(out_dir / COMPARE_FILE, _jsonable(document))
    write_text_atomic(out_dir / "compare.md", markdown(rows, target_acc, command))
    write_text_atomic(out_dir / "compare.html", html_page(
        outcomes, rows, target_acc, command, [labels for _, labels in COLUMNS],
        [[cell(row, k) for k, _ in COLUMNS] for row in rows]))
    return rows
