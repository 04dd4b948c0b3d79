"""The comparison's rows: one per variant, its seeds folded into mean ± std.

What a row must say honestly: how much training the variant had (optimizer steps and
samples seen: layer-wise training takes more, smaller steps over the same data),
whether it *learned* (validation accuracy against chance) beside its gradient
health, and whether its gain over the baseline is beyond the seeds' spread.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from vgdiag.engine.gradflow import can_be_output, first_last_ratio, has_weight
from vgdiag.engine.records import LayerInfo
from vgdiag.runs.compare import BASELINE, VariantOutcome, VariantState

# Fractions of the way from chance to perfect accuracy: below the first a variant
# did not learn, from the second on it clearly did.
CHANCE_MARGIN = 0.1
LEARNED_MARGIN = 0.5


def learned(val_acc: float | None, num_classes: int, diverged: bool = False) -> str:
    """'learned' | 'partly' | 'at chance' | 'diverged' (outputs went non-finite, so no
    accuracy) | '' (no accuracy) for a validation accuracy."""
    if val_acc is None or not math.isfinite(val_acc) or num_classes < 2:
        return "diverged" if diverged else ""
    chance = 1.0 / num_classes
    if val_acc < chance + CHANCE_MARGIN * (1 - chance):
        return "at chance"
    if val_acc < chance + LEARNED_MARGIN * (1 - chance):
        return "partly"
    return "learned"


def _ratio(summary: dict[str, Any] | None, key: str) -> float:
    """First/last grad_norm ratio of the layers a gradient reaches, from a summary."""
    if not summary:
        return math.nan
    layers = [layer for layer in summary.get("layers", [])
              if layer.get("trainable", True) and layer.get("used", True)]
    values = [layer.get(key) for layer in layers]
    infos = [LayerInfo.from_json({"name": "", **layer}) for layer in layers]
    # The diagnosis' own choice of output and first layer (gradflow.gradient_profile).
    return first_last_ratio([float(v) if isinstance(v, (int, float)) else math.nan
                             for v in values],
                            [can_be_output(i) for i in infos], [has_weight(i) for i in infos])


def _epoch_reaching(summary: dict[str, Any] | None, target: float) -> int | None:
    for epoch in (summary or {}).get("epochs", []):
        acc = epoch.get("val_acc")
        if isinstance(acc, (int, float)) and acc >= target:
            return int(epoch["epoch"])
    return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def variant_row(o: VariantOutcome, target_acc: float) -> dict[str, Any]:
    """One flat dict for one variant (one seed)."""
    s = o.summary or {}
    last = (s.get("epochs") or [{}])[-1]
    test = s.get("test") or {}
    health = s.get("verdict") or ""
    if o.state is VariantState.FAILED:
        health = f"failed: {o.reason}"
    elif o.state in (VariantState.NOT_APPLICABLE, VariantState.SKIPPED):
        health = f"{o.state.value}: {o.reason}" if o.reason else o.state.value
    num_classes = int(s.get("num_classes") or 0)
    return {
        "variant": o.name,
        "group": o.spec.group,
        "seed": o.spec.seed,
        "state": o.state.value,
        "applied": o.state is not VariantState.NOT_APPLICABLE,
        "reason": o.reason,
        "steps": o.steps or s.get("steps") or None,
        "samples": o.samples or None,
        "train_acc": _number(last.get("train_acc")),
        "val_acc": _number(last.get("val_acc")),
        "test_acc": _number(test.get("acc")),
        "val_loss": _number(last.get("val_loss")),
        "test_loss": _number(test.get("loss")),
        "ratio_init": _ratio(s, "grad_norm_first"),
        "ratio_end": _ratio(s, "grad_norm_last"),
        "epoch_to_target": _epoch_reaching(s, target_acc),
        "seconds": o.seconds,
        "learned": learned(_number(last.get("val_acc")), num_classes, diverged=any(
            f.get("id") == "non_finite" for f in s.get("findings", []))),
        "health": health,
        "published": o.spec.published,
    }


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], None
    return statistics.fmean(values), statistics.stdev(values)


def comparison_rows(outcomes: list[VariantOutcome], target_acc: float) -> list[dict[str, Any]]:
    """One row per variant group, seeds folded: what the tables and CI gates read.

    Numeric keys hold the mean over the seeds that trained; `<key>_std` the standard
    deviation (None with one seed). `gain` is the test accuracy over the baseline's;
    `clear_gain` is True only where the gain exceeds both spreads added and the
    variant is not at chance, None when a spread is unknown (one seed).
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for o in outcomes:
        groups.setdefault(o.spec.group, []).append(variant_row(o, target_acc))
    rows = []
    for group, members in groups.items():
        trained = [m for m in members if m["test_acc"] is not None or m["val_acc"] is not None]
        done = [m for m in members if m["state"] == VariantState.DONE.value]
        row = dict(members[0])
        row.update(variant=group, seeds=len(members),
                   seconds=sum(m["seconds"] for m in members))
        for key in ("train_acc", "val_acc", "test_acc", "val_loss", "test_loss",
                    "ratio_init", "ratio_end", "steps", "samples"):
            # a seed that diverged took steps, saw samples and had gradients at init,
            # but has no accuracy; a failed or interrupted one's partial budget is no
            # budget of the variant
            among = done if key in ("steps", "samples", "ratio_init", "ratio_end") else trained
            values = [float(m[key]) for m in among
                      if m[key] is not None and math.isfinite(float(m[key]))]
            row[key], row[f"{key}_std"] = _mean_std(values)
        for key in ("learned", "health", "state"):
            distinct = list(dict.fromkeys(str(m[key]) for m in members if m[key]))
            row[key] = "; ".join(distinct)
        epochs = [m["epoch_to_target"] for m in members]
        row["epoch_to_target"] = (None if any(e is None for e in epochs)
                                  else max(e for e in epochs if e is not None))
        rows.append(row)
    base = next((r for r in rows if r["variant"] == BASELINE), None)
    for row in rows:
        row["gain"], row["clear_gain"] = None, None
        if base is None or row is base or row["test_acc"] is None or base["test_acc"] is None:
            continue
        row["gain"] = row["test_acc"] - base["test_acc"]
        if row["test_acc_std"] is not None and base["test_acc_std"] is not None:
            # Beyond both spreads, and not a variant still at chance: a shift of the
            # class it always predicts is no gain.
            row["clear_gain"] = (row["gain"] > row["test_acc_std"] + base["test_acc_std"]
                                 and "at chance" not in row["learned"]
                                 and "diverged" not in row["learned"])
    return rows


def verdict_text(row: dict[str, Any]) -> str:
    """'learned · healthy', 'at chance · unhealthy: ...': learning beside gradient health."""
    return " · ".join(part for part in (row.get("learned"), row.get("health")) if part)


def budget_line(rows: list[dict[str, Any]]) -> str:
    """What the variants share, said truthfully: the same split and seeds always; the
    same data budget only where every variant saw as many samples as the baseline
    (layerwise trains at least one epoch per stage, so short runs give it more)."""
    base = next((r for r in rows if r["variant"] == BASELINE), None)
    seen = base.get("samples") if base else None
    more = [r for r in rows if r is not base and seen and r.get("samples")
            and abs(r["samples"] - seen) > 0.01 * seen]
    # The published figures are those of the reference's own budget: beside a shorter
    # run or other data they show the order to expect, not a number to meet.
    published = (" Published: the test accuracy REFERENCE.md reports for the run, on "
                 "FashionMNIST with 100 epochs at batch 512; with another budget or data "
                 "it shows the order to expect, not the figure."
                 if any(r.get("published") is not None for r in rows) else "")
    if not more:
        return "Same data split, seeds and data budget for every variant." + published
    which = ", ".join(f"{r['variant']} {r['samples'] / seen:.1f}x" for r in more)
    return ("Same data split and seeds for every variant; samples seen differ from the "
            f"baseline's ({which}): compare those rows with that in mind." + published)
