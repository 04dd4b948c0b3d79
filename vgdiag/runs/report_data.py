"""What every report format shows, computed once from a run folder read back.

Per-layer numbers at "init" and "last" come from the first and last sampled step in
metrics.jsonl, which for a cut-off run is newer than its summary.json. No torch: a
report can be made for any folder `vgdiag run` left behind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vgdiag import textfmt
from vgdiag.engine.gradflow import can_be_output, eligible, ratios_to_output
from vgdiag.engine.records import Finding, LayerInfo, StepRecord
from vgdiag.engine.status import RunStatus
from vgdiag.engine.summary import run_verdict
from vgdiag.runs.reader import STATUS_NOTES, RunData, config_value, latest_steps

# A million-step run samples 100k steps; a report needs its shape, not every point.
MAX_SERIES_POINTS = 2000
# Epoch tables longer than this show the first and last epochs only.
EPOCH_TABLE_HEAD, EPOCH_TABLE_TAIL = 5, 10
DASH = "\u2014"  # shown for a number that was not measured
UPDATE_RATIO = "\u2016\u0394W\u2016 / \u2016W\u2016 of the last step"
WEIGHT_CHANGE = "\u2016W \u2212 W0\u2016 / \u2016W0\u2016"


def fmt_num(x: float | None, digits: int = 3) -> str:
    """A number in `digits` significant digits; a dash for None or NaN."""
    return textfmt.fmt_num(x, digits, missing=DASH)


def fmt_loss(x: float | None) -> str:
    """A loss to 4 decimals; '-' where not measured (NaN), 'inf' where it overflowed."""
    return DASH if x is None or math.isnan(x) else f"{x:.4f}"  # inf prints as inf


def fmt_pct(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return DASH
    return f"{100 * x:.1f}%"


@dataclass
class LayerRow:
    """One line of the per-layer table."""

    depth: int
    name: str
    kind: str
    trainable: bool
    grad_init: float  # grad_norm at the first sampled step
    grad_last: float  # grad_norm at the last sampled step
    ratio_to_output: float  # grad_last / the output layer's grad_last
    update_ratio: float
    weight_change: float
    saturated: float
    dead: float


@dataclass
class ReportData:
    """Everything the renderers show, computed once from a RunData."""

    run: RunData
    layers: list[LayerInfo]  # depth order
    rows: list[LayerRow]
    findings: list[Finding]
    verdict: str
    notes: list[str]  # all of the reader's notes
    num_classes: int
    error: str | None
    test: dict[str, Any] | None
    init_step: int | None
    last_step: int | None
    status_line: str  # one sentence on how the run ended
    essentials: list[tuple[str, str]] = field(default_factory=list)
    steps: int = 0  # optimizer steps done (a cut-off run's from its metrics, when later)
    seconds: float = 0.0  # wall time of training (likewise)

    @property
    def box_notes(self) -> list[str]:
        """The notes a report lists under its status line: not the one it restates."""
        return [n for n in self.notes if n not in STATUS_NOTES]


def prepare(run: RunData) -> ReportData:
    """Gather what the reports show; a cut-off run's findings are recomputed from its metrics."""
    notes = list(run.notes)
    layers = ordered_layers(run)
    classes = num_classes(run)
    findings = list(run.findings)  # read_run recomputes them for cut-off runs
    error = run.summary.get("error")
    test = run.summary.get("test")
    first = run.records[0] if run.records else None
    last = run.records[-1] if run.records else None
    return ReportData(
        run=run,
        layers=layers,
        rows=layer_rows(run, layers),
        findings=findings,
        verdict=run_verdict(run.status, str(error) if error else None, findings),
        notes=notes,
        num_classes=classes,
        error=str(error) if error else None,
        test=test if isinstance(test, dict) else None,
        init_step=first.step if first else None,
        last_step=last.step if last else None,
        status_line=status_line(run, str(error) if error else None),
        essentials=config_essentials(run),
        steps=steps_done(run),
        seconds=float(run.summary.get("seconds") or 0.0),
    )


def steps_done(run: RunData) -> int:
    """The most of summary.json's steps, the last epoch record's and the last sampled
    step's + 1 (read_run brings a run that did not end up to its metrics already)."""
    return latest_steps(run.summary, run.epochs, run.records)


def ordered_layers(run: RunData) -> list[LayerInfo]:
    """The run's layers in depth order, plus any layer only the metrics name."""
    layers = sorted(run.layers, key=lambda i: i.depth)
    known = {i.name for i in layers}
    extra = [n for r in run.records for n in r.layers if n not in known]
    for name in dict.fromkeys(extra):
        layers.append(LayerInfo(name=name, kind="", depth=len(layers), num_params=0,
                                param_names=()))
    return layers


def num_classes(run: RunData) -> int:
    value = run.summary.get("num_classes") or config_value(run.config, "data", "num_classes") or 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def layer_rows(run: RunData, layers: Sequence[LayerInfo]) -> list[LayerRow]:
    """Per-layer numbers at the first and last sampled step (summary.json's when none)."""
    by_name = {d.get("name"): d for d in run.summary.get("layers", []) if isinstance(d, dict)}
    first = run.records[0] if run.records else None
    last = run.records[-1] if run.records else None

    def stat(record: StepRecord | None, name: str, key: str, summary_key: str) -> float:
        if record is not None:
            s = record.layers.get(name)
            return float(getattr(s, key)) if s is not None else math.nan
        value = by_name.get(name, {}).get(summary_key)
        return math.nan if value is None else float(value)

    rows = [
        LayerRow(
            depth=info.depth,
            name=info.name,
            kind=info.kind_label,
            trainable=info.trainable,
            grad_init=stat(first, info.name, "grad_norm", "grad_norm_first"),
            grad_last=stat(last, info.name, "grad_norm", "grad_norm_last"),
            ratio_to_output=math.nan,
            update_ratio=stat(last, info.name, "update_ratio", "update_ratio_last"),
            weight_change=stat(last, info.name, "weight_change", "weight_change_last"),
            saturated=stat(last, info.name, "act_saturated", "act_saturated_last"),
            dead=stat(last, info.name, "act_dead", "act_dead_last"),
        )
        for info in layers
    ]
    # The same output layer (and ratios) as the diagnosis and every front end.
    used = {i.name: eligible(i) for i in layers}
    matrix = {i.name: can_be_output(i) for i in layers}
    ratios = ratios_to_output([r.grad_last for r in rows],
                              [r.trainable and used.get(r.name, True) for r in rows],
                              [matrix.get(r.name, False) for r in rows])
    for r, ratio in zip(rows, ratios):
        r.ratio_to_output = ratio
    return rows


def grad_norm_series(
    run: RunData, max_points: int = MAX_SERIES_POINTS
) -> tuple[list[int], dict[str, list[float]]]:
    """Sampled steps and grad_norm per layer (NaN where a layer was not measured).

    Runs with more than `max_points` sampled steps are thinned evenly; the first and
    last sampled steps are always kept.
    """
    records = thin(run.records, max_points)
    names = [i.name for i in ordered_layers(run)]
    series = {
        n: [float(r.layers[n].grad_norm) if n in r.layers else math.nan for r in records]
        for n in names
    }
    return [r.step for r in records], series


def thin(records: Sequence[StepRecord], max_points: int) -> list[StepRecord]:
    if len(records) <= max_points or max_points < 2:
        return list(records)
    stride = math.ceil((len(records) - 1) / (max_points - 1))
    kept = list(records[::stride])
    if kept[-1] is not records[-1]:
        kept.append(records[-1])
    return kept


def status_line(run: RunData, error: str | None) -> str:
    """One plain sentence on how the run ended."""
    if run.status == RunStatus.COMPLETED:
        return "The run completed."
    if run.status == RunStatus.INTERRUPTED:
        return ("The run was interrupted before its planned end: the numbers cover only "
                "what was trained.")
    if run.status == RunStatus.FAILED:
        return "The run failed: " + (error or "training raised an error") + "."
    if run.status == RunStatus.RUNNING:
        return ("The run is still running: the numbers cover what it has written so far.")
    if run.status == RunStatus.CUT_OFF:
        return ("The run was cut off: its process ended (killed or crashed) without "
                "finishing the run folder; the numbers cover what it wrote.")
    return f"The run ended with status {run.status!r}."


def config_essentials(run: RunData) -> list[tuple[str, str]]:
    """(label, value) pairs of what was run, for a short configuration table."""
    c = run.config
    train = config_value(c, "experiment", "train") or {}
    data = config_value(c, "data") or {}
    sizes = ", ".join(f"{k} {data[k]}" for k in ("train", "val", "test") if k in data)
    device = str(c.get("device", DASH))
    if c.get("device_name"):
        device += f" ({c['device_name']})"
    plugins = config_value(c, "experiment", "plugins") or []
    versions = ", ".join(
        f"{label} {c[key]}"
        for label, key in (("vgdiag", "vgdiag_version"), ("torch", "torch_version"),
                           ("python", "python_version"))
        if c.get(key)
    )
    pairs = [
        ("model", config_value(c, "experiment", "model")),
        ("plugins", ", ".join(map(str, plugins)) if plugins else "none"),
        ("data", f"{data.get('name', DASH)}" + (f" ({sizes})" if sizes else "")),
        ("classes", data.get("num_classes")),
        ("loss", config_value(c, "experiment", "notes", "loss")),
        ("optimizer", config_value(c, "experiment", "optimizer")),
        ("learning rate", (", ".join(f"{v:g}" if isinstance(v, float) else str(v)
                                     for v in train["lr_groups"]) + " (per parameter group)"
                           if train.get("lr_groups") else train.get("lr"))),
        ("batch size", train.get("batch_size")),
        ("epochs", train.get("epochs")),
        ("seed", train.get("seed")),
        ("sampled every", sampling_interval(c)),
        ("device", device),
        ("versions", versions or None),
    ]
    return [(k, DASH if v is None or v == "" else str(v)) for k, v in pairs]


def sampling_interval(config: dict[str, Any]) -> Any:
    """The probe's interval the run used (config.json's `sampled_every`, which a short
    run's trainer shortens), with the one asked for where they differ: "3 (asked 25)"."""
    asked = config_value(config, "experiment", "train", "every")
    used = config.get("sampled_every")
    if used is None or isinstance(used, bool):
        return asked
    if asked is not None and asked != used:
        return f"{used} (asked {asked})"
    return used


def evidence_items(evidence: dict[str, Any], max_entries: int = 6) -> list[tuple[str, str]]:
    """A finding's evidence as (key, short text); long per-layer dicts are abbreviated."""
    items = []
    for key, value in evidence.items():
        if isinstance(value, dict):
            pairs = [f"{k}: {_fmt_any(v)}" for k, v in value.items()]
            if len(pairs) > max_entries:
                pairs = pairs[:3] + ["\u2026"] + pairs[-2:]
            items.append((key, ", ".join(pairs)))
        elif isinstance(value, (list, tuple)):
            items.append((key, ", ".join(_fmt_any(v) for v in value) or "none"))
        else:
            items.append((key, _fmt_any(value)))
    return items


def epoch_rows_shown(count: int) -> tuple[list[int], int]:
    """Indices of the epochs an abbreviated table shows, and how many it leaves out."""
    if count <= EPOCH_TABLE_HEAD + EPOCH_TABLE_TAIL + 1:
        return list(range(count)), 0
    head = list(range(EPOCH_TABLE_HEAD))
    tail = list(range(count - EPOCH_TABLE_TAIL, count))
    return head + tail, count - len(head) - len(tail)


def _fmt_any(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return DASH if value is None else str(value).lower()
    if isinstance(value, (int, float)):
        return str(value) if isinstance(value, int) else fmt_num(value, 4)
    return str(value)


