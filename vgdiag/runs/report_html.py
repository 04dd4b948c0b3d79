"""The HTML report: one self-contained file, plots drawn as inline SVG.

No external CSS, scripts, fonts or images: the file opens the same offline, attached
to a CI job or mailed. Every string from the user's model or files (layer and run
names, messages, config values, error text) is escaped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from vgdiag._version import __version__
from vgdiag.engine.records import EpochRecord
from vgdiag.engine.status import RunStatus
from vgdiag.runs.reader import RunData
from vgdiag.runs.regression import BaselineComparison
from vgdiag.runs.report_blocks import BLOCK_HEAD, TIME_HEAD, block_rows, time_rows
from vgdiag.runs.report_data import (
    DASH,
    EPOCH_TABLE_HEAD,
    UPDATE_RATIO,
    WEIGHT_CHANGE,
    ReportData,
    epoch_rows_shown,
    evidence_items,
    fmt_loss,
    fmt_num,
    fmt_pct,
    prepare,
)
from vgdiag.runs.report_plots import (
    INIT_COLOR,
    LAST_COLOR,
    grad_norm_time_svg,
    gradient_profile_svg,
    histogram_svg,
)
from vgdiag.runs.report_time import over_time_html
from vgdiag.runs.svgcharts import curves_svg
from vgdiag.runs.svgplot import empty_plot, esc
from vgdiag.textfmt import plural

TRAIN_COLOR, VAL_COLOR = "#1f5fa8", "#d9480f"
MAX_HIST_LAYERS = 64  # small multiples past this are unreadable; the rest are counted


def render_html(run: RunData, baseline: BaselineComparison | None = None) -> str:
    """The whole report as one HTML document (with what got worse since `baseline`)."""
    d = prepare(run)
    sections = [
        _header(d),
        _section("Against the baseline", "\n".join(
            f"<p>{esc(line)}</p>" for line in baseline.lines())) if baseline else "",
        _findings(d),
        _section("Gradients", _gradient_plots(d)),
        _section("Training", _training(d)),
        _section("Weight and gradient histograms", _histograms(d)),
        _section("Over time", over_time_html(d.run, list(d.layers))) if d.layers else "",
        _section("Layers", _layer_table(d)),
        _blocks_and_time(d),
        _section("Configuration", _config(d)),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>vgdiag report: {esc(run.name)}</title>\n<style>{CSS}</style>\n</head>\n"
        "<body>\n<main>\n" + "\n".join(sections) + "\n"
        f'<footer>Made by vgdiag {esc(__version__)} from {esc(run.path)}</footer>\n'
        "</main>\n</body>\n</html>\n"
    )


def _section(title: str, body: str) -> str:
    return f'<section>\n<h2>{esc(title)}</h2>\n{body}\n</section>'


def _header(d: ReportData) -> str:
    run = d.run
    status_cls = {RunStatus.COMPLETED: "ok", RunStatus.INTERRUPTED: "warn",
                  RunStatus.RUNNING: "warn"}.get(run.status, "bad")
    facts = [f'<span class="badge {status_cls}">{esc(run.status)}</span>']
    facts.append(f"{d.steps} steps")
    if d.seconds:
        facts.append(f"{d.seconds:.1f} s")
    facts.append(plural(len(run.epochs), "epoch"))
    out = [f"<header>\n<h1>vgdiag report: <span class=\"name\">{esc(run.name)}</span></h1>",
           f'<p class="facts">{" &middot; ".join(facts)}</p>',
           f'<p class="path">Run folder: <code>{esc(run.path)}</code></p>']
    notes = d.box_notes
    if run.status != RunStatus.COMPLETED or notes:
        box = "bad" if run.status in (RunStatus.FAILED, RunStatus.CUT_OFF) else "warn"
        out.append(f'<div class="banner {box}">')
        if run.status != RunStatus.COMPLETED:
            out.append(f"<p><strong>{esc(d.status_line)}</strong></p>")
        if notes:
            out.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
        out.append("</div>")
    if d.error:
        out.append(f'<pre class="error">{esc(d.error)}</pre>')
    healthy = d.verdict == "healthy"
    out.append(f'<p class="verdict {"ok" if healthy else "bad"}">Verdict: '
               f"<strong>{esc(d.verdict)}</strong></p>\n</header>")
    return "\n".join(out)


def _findings(d: ReportData) -> str:
    if not d.findings:
        return _section("Findings", "<p>No findings.</p>")
    cards = []
    for f in d.findings:
        rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>"
                       for k, v in evidence_items(f.evidence))
        layers = ", ".join(f"<code>{esc(n or '<root>')}</code>" for n in f.layers)
        fixes = " ".join(f'<span class="chip">{esc(p)}</span>' for p in f.recommend)
        cards.append(
            f'<article class="finding {esc(f.severity)}">'
            f'<h3><span class="sev">{esc(f.severity)}</span> {esc(f.id)}</h3>'
            f"<p>{esc(f.message)}</p>"
            + (f'<p class="layers">Layers: {layers}</p>' if f.layers else "")
            + (f'<table class="evidence">{rows}</table>' if rows else "")
            + (f'<p class="fixes">Recommended plugins: {fixes}</p>' if fixes else "")
            + "</article>"
        )
    return _section("Findings", "\n".join(cards))


# ----- gradients --------------------------------------------------------------------


def _gradient_plots(d: ReportData) -> str:
    profile = gradient_profile_svg(
        d.run, d.layers, title="Gradient profile: init vs last", width=460, height=320
    )
    return (
        '<div class="plots">\n'
        f'<figure id="grad-time">{grad_norm_time_svg(d)}<figcaption>Gradient norm of each '
        "layer over training, log scale; dark blue is the input side, orange the output "
        "side.</figcaption></figure>\n"
        f'<figure id="grad-profile">{profile}<figcaption>log10 gradient norm per layer: a '
        "line falling toward the input is a vanishing gradient.</figcaption></figure>\n"
        "</div>"
    )


# ----- training curves --------------------------------------------------------------


def _training(d: ReportData) -> str:
    run = d.run
    chance_loss = math.log(d.num_classes) if d.num_classes >= 2 else None
    chance_acc = 1.0 / d.num_classes if d.num_classes >= 2 else None
    if run.epochs:
        xs = [float(e.epoch) for e in run.epochs]
        loss = curves_svg("Loss", xs, [
            ("train", [e.train_loss for e in run.epochs], TRAIN_COLOR, ""),
            ("val", [e.val_loss for e in run.epochs], VAL_COLOR, "5 3"),
        ], x_label="epoch", y_label="loss", reference=(chance_loss, "chance"))
        acc = curves_svg("Accuracy", xs, [
            ("train", [e.train_acc for e in run.epochs], TRAIN_COLOR, ""),
            ("val", [e.val_acc for e in run.epochs], VAL_COLOR, "5 3"),
        ], x_label="epoch", y_label="accuracy", reference=(chance_acc, "chance"),
            y_range=(0.0, 1.0))
    else:
        xs = [float(r.step) for r in run.records]
        loss = curves_svg("Loss (sampled batches)", xs, [
            ("train batch", [r.loss for r in run.records], TRAIN_COLOR, "")
        ], x_label="optimizer step", y_label="loss", reference=(chance_loss, "chance"),
            empty_message="no epoch finished and no loss was sampled")
        acc = empty_plot(380, 260, "Accuracy", "no epoch finished")
    parts = ['<div class="plots">', f'<figure id="loss">{loss}</figure>',
             f'<figure id="accuracy">{acc}</figure>', "</div>"]
    if d.test:
        parts.append(f'<p class="test">Test: loss <strong>{fmt_loss(d.test.get("loss"))}'
                     f'</strong>, accuracy <strong>{fmt_pct(d.test.get("acc"))}</strong></p>')
    parts.append(_epoch_table(run.epochs))
    return "\n".join(parts)


def _epoch_table(epochs: Sequence[EpochRecord]) -> str:
    if not epochs:
        return "<p>No epoch finished.</p>"
    shown, left_out = epoch_rows_shown(len(epochs))
    staged = len({e.stage for e in epochs}) > 1
    head = ["epoch"] + (["stage"] if staged else []) + [
        "train loss", "train acc", "val loss", "val acc", "seconds"]
    rows = []
    for k, idx in enumerate(shown):
        if left_out and k == EPOCH_TABLE_HEAD:
            rows.append(f'<tr><td colspan="{len(head)}" class="gap">\u2026 {left_out} epochs '
                        "left out \u2026</td></tr>")
        e = epochs[idx]
        cells = [str(e.epoch)] + ([e.stage] if staged else []) + [
            fmt_loss(e.train_loss), fmt_pct(e.train_acc), fmt_loss(e.val_loss),
            fmt_pct(e.val_acc), fmt_num(e.seconds, 3)]
        rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return _table(head, rows, "epochs")


# ----- histograms -------------------------------------------------------------------


def _histograms(d: ReportData) -> str:
    with_w = [r for r in d.run.records if r.weight_hist]
    with_g = [r for r in d.run.records if r.grad_hist]
    if not with_w and not with_g:
        return "<p>No histograms were recorded (they are taken on every N-th sampled step; " \
               "--hist-every 0 turns them off).</p>"
    parts = []
    for kind, recs in (("weight", with_w), ("grad", with_g)):
        if not recs:
            continue
        first, last = recs[0], recs[-1]
        pair = [first] if last is first else [first, last]
        key = f'<span class="key" style="border-color:{INIT_COLOR}"></span>init (step ' \
              f"{first.step})"
        if last is not first:
            key += (f' <span class="key" style="border-color:{LAST_COLOR}"></span>last (step '
                    f"{last.step})")
        heading = ("Weights" if kind == "weight"
                   else "log10 |gradient| on the range the values span (zeros, clamped "
                        "to 1e-16, are left out of the axis)")
        cells = []
        names = [i.name for i in d.layers]
        for name in names[:MAX_HIST_LAYERS]:
            hists = [r.hists(kind).get(name)
                     for r in pair]
            cells.append(histogram_svg(name, hists, log_axis=kind == "grad"))
        more = len(names) - MAX_HIST_LAYERS
        parts.append(f'<h3>{esc(heading)}</h3><p class="legend">{key}</p>'
                     f'<div class="multiples {kind}-hist">{"".join(cells)}</div>'
                     + (f"<p>{more} more layers are not shown.</p>" if more > 0 else ""))
    return "\n".join(parts)


# ----- tables -----------------------------------------------------------------------


def _table(head: Sequence[str], rows: Sequence[str], css_class: str) -> str:
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    return (f'<div class="scroll"><table class="{css_class}"><thead><tr>{th}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _layer_table(d: ReportData) -> str:
    if not d.rows:
        return "<p>No layer was recorded.</p>"
    rows = []
    for r in d.rows:
        kind = (r.kind or DASH) + ("" if r.trainable else " (frozen)")
        cells = [str(r.depth), r.name or "<root>", kind, fmt_num(r.grad_init),
                 fmt_num(r.grad_last), fmt_num(r.ratio_to_output), fmt_num(r.update_ratio),
                 fmt_num(r.weight_change), fmt_pct(r.saturated), fmt_pct(r.dead)]
        rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    steps = (f"<p><code>grad_norm</code> at init (step {d.init_step}) and last (step "
             f"{d.last_step}); last \u00f7 output = the layer's last grad_norm over the output "
             f"layer's; <code>update_ratio</code> = {UPDATE_RATIO}; <code>weight_change</code> = "
             f"{WEIGHT_CHANGE}.</p>" if d.init_step is not None else "")
    return steps + _table(
        ["depth", "layer", "kind", "grad_norm init", "grad_norm last", "last \u00f7 output",
         "update_ratio", "weight_change", "saturated", "dead"], rows, "layers")


def _blocks_and_time(d: ReportData) -> str:
    def table(head: list[str], rows: list[list[str]], css: str) -> str:
        return _table(head, ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>"
                             for r in rows], css)
    out = []
    blocks, line = block_rows(d.run)
    if blocks:
        out.append(_section("Blocks", f"<p>{esc(line)}</p>" + table(BLOCK_HEAD, blocks,
                                                                      "layers")))
    through_time = time_rows(d.run)
    if through_time:
        out.append(_section("Gradient through time", "<p>||dLoss/dx_t|| at each recurrent "
                            "module's input, last sampled step.</p>"
                            + table(TIME_HEAD, through_time, "layers")))
    return "\n".join(out)


def _config(d: ReportData) -> str:
    rows = [f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in d.essentials]
    flat = [f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in _flatten(d.run.config)]
    out = f'<table class="config">{"".join(rows)}</table>'
    if flat:
        out += ("<details><summary>Full config.json</summary>"
                f'<table class="config">{"".join(flat)}</table></details>')
    return out


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(obj, dict) and obj:
        out: list[tuple[str, str]] = []
        for k, v in obj.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(obj, str):
        return [(prefix, obj)]
    return [(prefix, json.dumps(obj, default=str))]


CSS = """
:root { --fg:#1d2330; --muted:#5b6474; --line:#e3e6eb; --ok:#1e7b34; --warn:#a86200;
  --bad:#b42318; --bg:#ffffff; --soft:#f6f7f9; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif; }
main { max-width:1200px; margin:0 auto; padding:24px 28px 48px; }
h1 { font-size:24px; margin:0 0 6px; } h1 .name { font-family:ui-monospace,monospace; }
h2 { font-size:18px; margin:32px 0 12px; padding-bottom:4px; border-bottom:1px solid var(--line); }
h3 { font-size:15px; margin:16px 0 6px; }
code, pre { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12.5px; }
.facts, .path { margin:2px 0; color:var(--muted); }
.badge { display:inline-block; padding:1px 9px; border-radius:10px; color:#fff;
  font-weight:600; font-size:12px; }
.badge.ok { background:var(--ok); } .badge.warn { background:var(--warn); }
.badge.bad { background:var(--bad); }
.banner { margin:12px 0; padding:8px 14px; border-radius:6px; border-left:4px solid; }
.banner.warn { background:#fff7e6; border-color:var(--warn); }
.banner.bad { background:#fdecea; border-color:var(--bad); }
.banner ul { margin:4px 0; padding-left:20px; }
pre.error { background:#fdecea; color:var(--bad); padding:10px 14px; border-radius:6px;
  white-space:pre-wrap; }
.verdict { font-size:16px; margin:12px 0 0; }
.verdict.ok strong { color:var(--ok); } .verdict.bad strong { color:var(--bad); }
.finding { border:1px solid var(--line); border-left:5px solid var(--muted); border-radius:6px;
  padding:8px 14px; margin:10px 0; background:var(--soft); }
.finding.error { border-left-color:var(--bad); } .finding.warning { border-left-color:var(--warn); }
.finding.info { border-left-color:#2f6fb5; }
.finding h3 { margin:4px 0; font-family:ui-monospace,monospace; }
.finding p { margin:4px 0; }
.sev { font-family:system-ui,sans-serif; text-transform:uppercase; font-size:11px;
  letter-spacing:.05em; color:var(--muted); margin-right:6px; }
.chip { display:inline-block; background:#e8eefb; color:#1f4b99; border-radius:10px;
  padding:0 8px; margin:1px 2px; font-size:12px; }
table { border-collapse:collapse; font-size:13px; }
th, td { padding:4px 10px; border-bottom:1px solid var(--line); text-align:left; }
table.layers td, table.epochs td { text-align:right; font-variant-numeric:tabular-nums; }
table.layers td:nth-child(2), table.layers td:nth-child(3) { text-align:left; }
table.evidence th { font-weight:500; color:var(--muted); }
table.evidence td { font-family:ui-monospace,monospace; font-size:12px; }
thead th { background:var(--soft); }
td.gap { text-align:center !important; color:var(--muted); }
.scroll { overflow-x:auto; }
.plots { display:flex; flex-wrap:wrap; gap:18px; align-items:flex-start; }
figure { margin:0; } figcaption { color:var(--muted); font-size:12px; max-width:760px; }
svg.plot { max-width:100%; height:auto; background:#fff; }
.multiples { display:flex; flex-wrap:wrap; gap:8px; }
.legend .key { display:inline-block; width:18px; border-top:3px solid; margin:0 5px 3px 10px; }
details summary { cursor:pointer; color:var(--muted); margin:10px 0; }
footer { margin-top:40px; color:var(--muted); font-size:12px; }
"""
