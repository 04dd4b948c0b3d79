"""`vgdiag report --format md`: a run folder as GitHub-flavoured Markdown."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from vgdiag.engine.status import RunStatus
from vgdiag.runs.reader import RunData
from vgdiag.runs.regression import BaselineComparison
from vgdiag.runs.report_blocks import BLOCK_HEAD, TIME_HEAD, block_rows, time_rows
from vgdiag.runs.report_data import (
    DASH,
    EPOCH_TABLE_HEAD,
    UPDATE_RATIO,
    WEIGHT_CHANGE,
    config_value,
    epoch_rows_shown,
    evidence_items,
    fmt_loss,
    fmt_num,
    fmt_pct,
    prepare,
)
from vgdiag.textfmt import one_line, plural

# ----- Markdown ---------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&$])")


def md_escape(text: object) -> str:
    """User text safe inside Markdown prose and table cells (one line, specials escaped)."""
    return _MD_SPECIAL.sub(r"\\\1", one_line(text))


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> list[str]:
    out = ["| " + " | ".join(header) + " |"]
    out.append("|" + "|".join(("---:" if a == "r" else "---") for a in align.ljust(len(header)))
               + "|")
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def render_markdown(run: RunData, baseline: BaselineComparison | None = None) -> str:
    """A GitHub-flavoured Markdown report of the run (and of what got worse since
    `baseline`)."""
    d = prepare(run)
    out = [f"# vgdiag report: {md_escape(run.name)}", ""]
    facts = [f"**Status: {md_escape(run.status)}**"]
    facts.append(f"{d.steps} steps")
    if d.seconds:
        facts.append(f"{d.seconds:.1f} s")
    planned = config_value(run.config, "experiment", "train", "epochs")
    facts.append(f"{len(run.epochs)} of {plural(planned, 'epoch')}" if planned
                 else plural(len(run.epochs), "epoch"))
    out += [" \u00b7 ".join(facts), "", f"Run folder: {md_escape(run.path)}", ""]
    if run.status != RunStatus.COMPLETED:
        out += [f"> **{md_escape(d.status_line)}**"]
        out += [f"> - {md_escape(n)}" for n in d.box_notes]
        out.append("")
    elif d.notes:
        out += [f"> Note: {md_escape(n)}" for n in d.notes] + [""]

    out += ["## Verdict", "", f"**{md_escape(d.verdict)}**", ""]
    if baseline is not None:
        head, *rest = baseline.lines()
        out += ["## Against the baseline", "", md_escape(head), ""]
        out += [f"- {md_escape(line)}" for line in rest] + [""]

    out += ["## Findings", ""]
    if not d.findings:
        out += ["No findings.", ""]
    for i, f in enumerate(d.findings, 1):
        out += [f"### {i}. {md_escape(f.severity.upper())}: {md_escape(f.id)}", "",
                md_escape(f.message), ""]
        if f.layers:
            out.append("- Layers: " + ", ".join(md_escape(n or "<root>") for n in f.layers))
        for key, value in evidence_items(f.evidence):
            out.append(f"- {md_escape(key)}: {md_escape(value)}")
        if f.recommend:
            out.append("- Recommended plugins: " + ", ".join(md_escape(p) for p in f.recommend))
        out.append("")

    out += ["## Layers", ""]
    if d.rows:
        if d.init_step is not None:
            out += [f"`grad_norm` at init (step {d.init_step}) and last (step {d.last_step}); "
                    f"`update_ratio` = {UPDATE_RATIO}; `weight_change` = {WEIGHT_CHANGE}.", ""]
        out += _md_table(
            ["depth", "layer", "kind", "grad_norm init", "grad_norm last", "last \u00f7 output",
             "update_ratio", "weight_change", "saturated", "dead"],
            [[str(r.depth), md_escape(r.name or "<root>"),
              md_escape(r.kind or DASH) + ("" if r.trainable else " (frozen)"),
              fmt_num(r.grad_init), fmt_num(r.grad_last), fmt_num(r.ratio_to_output),
              fmt_num(r.update_ratio), fmt_num(r.weight_change), fmt_pct(r.saturated),
              fmt_pct(r.dead)] for r in d.rows],
            "rll" + "r" * 7,
        )
        out.append("")
    else:
        out += ["No layer was recorded.", ""]

    blocks, block_line = block_rows(run)
    if blocks:
        out += ["## Blocks", "", block_line, ""]
        out += _md_table(BLOCK_HEAD, [[md_escape(c) for c in r] for r in blocks], "lrrrr")
        out.append("")
    through_time = time_rows(run)
    if through_time:
        out += ["## Gradient through time", "", "||dLoss/dx_t|| at each recurrent module's "
                "input, last sampled step.", ""]
        out += _md_table(TIME_HEAD, [[md_escape(c) for c in r] for r in through_time], "lrrrrr")
        out.append("")

    out += ["## Training", ""]
    if run.epochs:
        shown, left_out = epoch_rows_shown(len(run.epochs))
        staged = len({e.stage for e in run.epochs}) > 1
        header = ["epoch"] + (["stage"] if staged else []) + [
            "train loss", "train acc", "val loss", "val acc"]
        rows = []
        for k, idx in enumerate(shown):
            if left_out and k == EPOCH_TABLE_HEAD:
                rows.append(["\u2026"] * len(header))
            e = run.epochs[idx]
            rows.append([str(e.epoch)] + ([md_escape(e.stage)] if staged else []) + [
                fmt_loss(e.train_loss), fmt_pct(e.train_acc), fmt_loss(e.val_loss),
                fmt_pct(e.val_acc)])
        out += _md_table(header, rows, "r" * len(header))
        if left_out:
            out += ["", f"{left_out} epochs in the middle are left out; the JSON report and "
                    "metrics.jsonl hold them all."]
        out.append("")
    else:
        out += ["No epoch finished.", ""]
    if d.test:
        out += [f"**Test:** loss {fmt_loss(d.test.get('loss'))}, accuracy "
                f"{fmt_pct(d.test.get('acc'))}", ""]
    elif run.status == RunStatus.COMPLETED:
        out += ["No test split was evaluated.", ""]
    if d.num_classes >= 2:
        out += [f"Chance level for {d.num_classes} classes: loss ln({d.num_classes}) = "
                f"{math.log(d.num_classes):.4f}, accuracy {100 / d.num_classes:.1f}%.", ""]

    out += ["## Configuration", ""]
    out += _md_table(["setting", "value"], [[k, md_escape(v)] for k, v in d.essentials])
    out.append("")
    return "\n".join(out)
