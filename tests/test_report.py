"""`vgdiag report`: Markdown, JSON and HTML from real and hand-written run folders."""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import torch

from vgdiag.engine.events import EpochEnded
from vgdiag.engine.records import LayerInfo, LayerStats, StepRecord
from vgdiag.engine.trainer import run_training
from vgdiag.errors import UserError
from vgdiag.inputs.recipe import RunOptions, build_experiment, load_data
from vgdiag.runs.reader import read_run
from vgdiag.runs.report import render_report
from vgdiag.runs.report_data import thin
from vgdiag.runs.report_md import md_escape
from vgdiag.runs.report_plots import gradient_profile_range, gradient_profile_svg
from vgdiag.runs.store import RunStore
from vgdiag.runs.svgplot import decade_range, log_ticks, nice_ticks, ramp_color, shorten

EVIL = "<script>alert(1)</script> & \"dq\" 'sq' | pipe"


def _train(path: Path, opts: RunOptions, stop_after_epochs: int | None = None) -> Path:
    data = load_data(opts)
    exp = build_experiment(opts, data)
    stop = threading.Event()
    threads = torch.get_num_threads()
    # Tiny models gain nothing from intra-op threads, and on a busy machine the
    # threads' spinning makes a 0.2 s run take seconds.
    torch.set_num_threads(1)
    try:
        with RunStore(path, exp.name, data.num_classes) as store:
            for ev in run_training(exp, data, stop):
                store.handle(ev)
                if isinstance(ev, EpochEnded) and ev.record.epoch == stop_after_epochs:
                    stop.set()
    finally:
        torch.set_num_threads(threads)
    return path


@pytest.fixture(scope="module")
def sigmoid_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # every=5 and hist_every=4 give 16 samples and 4 histogram steps in 80 steps.
    opts = RunOptions(epochs=2, depth=3, width=16, every=5, hist_every=4, batch_size=32,
                      lr=0.01)
    return _train(tmp_path_factory.mktemp("runs") / "sigmoid", opts)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 4 x 40 steps at the default --every 25: the trainer samples every 3rd step instead,
    # so that the run gets its 50 samples.
    opts = RunOptions(epochs=4, depth=2, width=8, batch_size=32, lr=0.01, hist_every=0)
    return _train(tmp_path_factory.mktemp("runs") / "short", opts)


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    opts = RunOptions(epochs=3, depth=2, width=8, activation="relu", init="he", batch_size=32,
                      lr=0.01)
    return _train(tmp_path_factory.mktemp("runs") / "stopped", opts, stop_after_epochs=1)


# ----- hand-written run folders ------------------------------------------------------


def _layer(name: str, depth: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "Linear", "depth": depth, "num_params": 20,
            "param_names": ["weight", "bias"], "fan_in": 4, "trainable": True, **extra}


def _step(step: int, grads: dict[str, float | None], **extra: Any) -> dict[str, Any]:
    layers = {n: {"grad_norm": g, "weight_norm": 1.0, "weight_change": 0.01 * step,
                  "update_ratio": 1e-3, "act_saturated": 0.25, "act_dead": None}
              for n, g in grads.items()}
    return {"type": "step", "step": step, "epoch": 1, "loss": 2.3, "layers": layers, **extra}


def _epoch(epoch: int, loss: float = 2.0, acc: float = 0.5) -> dict[str, Any]:
    return {"type": "epoch", "epoch": epoch, "train_loss": loss, "train_acc": acc,
            "val_loss": loss + 0.1, "val_acc": acc - 0.1, "seconds": 0.5, "steps": 10 * epoch,
            "stage": "train"}


def write_run(
    path: Path,
    *,
    name: str = "hand",
    status: str = "completed",
    layers: list[dict[str, Any]] | None = None,
    lines: list[dict[str, Any]] | None = None,
    findings: list[dict[str, Any]] | None = None,
    config: dict[str, Any] | None = None,
    error: str | None = None,
    tail: str = "",
) -> Path:
    path.mkdir(parents=True)
    summary = {"schema_version": 1, "name": name, "status": status, "error": error,
               "num_classes": 10, "seconds": 1.5, "steps": 20, "layers": layers or [],
               "epochs": [], "test": None, "findings": findings or [], "verdict": "healthy"}
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "config.json").write_text(json.dumps(config or {"schema_version": 1}))
    text = "".join(json.dumps(obj) + "\n" for obj in (lines or [])) + tail
    (path / "metrics.jsonl").write_text(text)
    return path


def _strict_loads(text: str) -> Any:
    def refuse(const: str) -> Any:
        raise AssertionError(f"non-standard JSON constant {const}")

    return json.loads(text, parse_constant=refuse)


def _svg(html: str, figure_id: str) -> str:
    match = re.search(rf'<figure id="{figure_id}">(<svg .*?</svg>)', html, re.S)
    assert match, f"no svg in figure {figure_id}"
    return match.group(1)


# ----- JSON ------------------------------------------------------------------------


def test_json_is_the_summary_plus_config_and_the_series_read_run_gives(sigmoid_run: Path) -> None:
    run = read_run(sigmoid_run)
    doc = _strict_loads(render_report(run, "json"))
    summary = json.loads((sigmoid_run / "summary.json").read_text())
    assert set(summary) <= set(doc)
    for key in ("name", "status", "steps", "layers", "epochs", "test", "findings", "verdict"):
        assert doc[key] == summary[key], key
    assert doc["config"] == run.config and doc["config"]["experiment"]["train"]["epochs"] == 2
    assert doc["notes"] == []
    series = doc["series"]
    assert series["steps"] == [r.step for r in run.records] == list(range(0, 80, 5))
    names = [info.name for info in run.layers]
    assert list(series["grad_norm"]) == names and len(names) == 4
    for name in names:
        assert series["grad_norm"][name] == [r.layers[name].grad_norm for r in run.records]


def test_json_writes_inf_as_1e999_and_nan_as_null_as_the_run_files_do(tmp_path: Path) -> None:
    # An infinite gradient is a finding, not a missing number: it must survive as inf.
    path = write_run(tmp_path / "r", layers=[_layer("a", 0), _layer("b", 1)],
                     lines=[_step(0, {"a": None, "b": 1.0}),
                            _step(5, {"a": float("inf"), "b": float("nan")}),
                            _epoch(1, loss=math.inf)])
    text = render_report(read_run(path), "json")
    assert "1e999" in text
    doc = _strict_loads(text)
    assert doc["series"]["grad_norm"] == {"a": [None, math.inf], "b": [1.0, None]}
    assert doc["epochs"][0]["train_loss"] == math.inf
    assert doc["layers"][0]["grad_norm_last"] == math.inf
    assert doc["layers"][1]["grad_norm_last"] is None


def test_long_runs_are_thinned_keeping_first_and_last() -> None:
    records = [StepRecord(step=i, epoch=1, loss=1.0, layers={}) for i in range(10_001)]
    kept = thin(records, 2000)
    assert len(kept) <= 2001 and kept[0].step == 0 and kept[-1].step == 10_000
    assert thin(records[:50], 2000) == records[:50]


# ----- Markdown --------------------------------------------------------------------


def test_markdown_shows_the_runs_numbers(sigmoid_run: Path) -> None:
    run = read_run(sigmoid_run)
    md = render_report(run, "md")
    summary = json.loads((sigmoid_run / "summary.json").read_text())
    assert md.startswith(f"# vgdiag report: {md_escape(run.name)}")
    assert "**Status: completed**" in md
    assert f"**{md_escape(summary['verdict'])}**" in md
    first, last = run.records[0], run.records[-1]
    out_name = run.layers[-1].name
    for info in run.layers:
        g0, g1 = first.layers[info.name].grad_norm, last.layers[info.name].grad_norm
        ratio = g1 / last.layers[out_name].grad_norm
        row = f"| {info.depth} | {info.name} | Linear | {g0:.3g} | {g1:.3g} | {ratio:.3g} |"
        assert row in md, row
    for f in summary["findings"]:
        assert f"{f['severity'].upper()}: {md_escape(f['id'])}" in md
        assert md_escape(f["message"]) in md
    for e in run.epochs:
        assert f"| {e.epoch} | {e.train_loss:.4f} | {100 * e.train_acc:.1f}% |" in md
    test = summary["test"]
    assert f"**Test:** loss {test['loss']:.4f}, accuracy {100 * test['acc']:.1f}%" in md
    assert "| learning rate | 0.01 |" in md and "| seed | 42 |" in md
    assert "| epochs | 2 |" in md and "torch " in md


def test_markdown_abbreviates_long_epoch_tables(tmp_path: Path) -> None:
    epochs = [_epoch(i, loss=3.0 - i / 100) for i in range(1, 41)]
    md = render_report(read_run(write_run(tmp_path / "r", lines=epochs)), "md")
    rows = re.findall(r"^\| (\d+) \| \d\.\d{4} \|", md, re.M)
    assert [int(r) for r in rows] == list(range(1, 6)) + list(range(31, 41))
    assert "25 epochs in the middle are left out" in md


def test_markdown_escapes_user_names_and_keeps_tables_intact(tmp_path: Path) -> None:
    path = write_run(tmp_path / "r", name=EVIL, layers=[_layer(EVIL, 0), _layer("out", 1)],
                     lines=[_step(0, {EVIL: 1e-3, "out": 1.0})],
                     config={"experiment": {"model": "m.py:Net|x", "train": {"lr": 0.1}}})
    md = render_report(read_run(path), "md")
    assert "<script>" not in md and "\\<script\\>" in md
    table = [ln for ln in md.splitlines() if ln.startswith("| 0 |")]
    assert len(table) == 1
    assert len(re.findall(r"(?<!\\)\|", table[0])) == 11  # 10 columns, none split by the name
    assert "| model | m.py:Net\\|x |" in md


# ----- HTML ------------------------------------------------------------------------


def test_html_is_self_contained_with_the_four_plots(sigmoid_run: Path) -> None:
    run = read_run(sigmoid_run)
    html = render_report(run, "html")
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html
    without_ns = html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http" not in without_ns
    assert not re.search(r"\b(src|href)\s*=|url\(|@import|<script|<link|<img", html, re.I)
    n = len(run.layers)
    assert _svg(html, "grad-time").count('class="layer-line"') == n
    assert _svg(html, "grad-profile").count('class="profile-line"') == 2
    assert _svg(html, "loss").count('class="curve"') == 2
    assert _svg(html, "accuracy").count('class="curve"') == 2
    for kind in ("weight", "grad"):
        block = re.search(rf'<div class="multiples {kind}-hist">(.*?)</div>', html, re.S)
        assert block and block.group(1).count("<svg ") == n
        assert block.group(1).count('class="hist"') == 2 * n  # init and last step each
    hist_steps = [r.step for r in run.records if r.weight_hist]
    assert len(hist_steps) == 4 and f"last (step {hist_steps[-1]})" in html
    for info in run.layers:  # table cells carry the same numbers as the Markdown
        assert f"<td>{run.records[0].layers[info.name].grad_norm:.3g}</td>" in html
    for svg in re.findall(r"<svg .*?</svg>", html, re.S):  # each one stands alone as XML
        ET.fromstring(svg)


def test_html_escapes_every_user_string(tmp_path: Path) -> None:
    finding = {"id": "vanishing_gradient", "severity": "error", "layers": [EVIL],
               "evidence": {"grad_norm": {EVIL: 1e-6}}, "message": f"bad {EVIL}",
               "recommend": ["<b>fix</b>"]}
    path = write_run(
        tmp_path / "r", name=EVIL, status="failed", error=f"RuntimeError: {EVIL}",
        layers=[_layer(EVIL, 0), _layer("<img src=x onerror=alert(2)>", 1)],
        lines=[_step(0, {EVIL: 1e-6, "<img src=x onerror=alert(2)>": 1.0})],
        findings=[finding],
        config={"experiment": {"model": "<iframe>", "notes": {"loss": "</style>"}},
                "data": {"name": "<svg onload=alert(3)>"}},
    )
    html = render_report(read_run(path), "html")
    for raw in ("<script", "<img", "<iframe", "<b>", "<svg onload", "dq\"", "'sq'"):
        assert raw not in html, raw
    assert html.count("</style>") == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;dq&quot; &#x27;sq&#x27;" in html
    assert '<pre class="error">RuntimeError: &lt;script&gt;' in html
    assert "The run failed: RuntimeError:" in html


def test_html_and_md_handle_an_empty_cut_off_run(tmp_path: Path) -> None:
    path = write_run(tmp_path / "r", status="running")
    run = read_run(path)
    assert run.status == "cut off" and run.records == []
    md = render_report(run, "md")
    assert "**Status: cut off**" in md and "The run was cut off" in md
    assert "No layer was recorded." in md and "No epoch finished." in md
    html = render_report(run, "html")
    assert "no positive, finite gradient norm was recorded" in html
    assert "no gradients were recorded" in html and "No histograms were recorded" in html
    assert _strict_loads(render_report(run, "json"))["series"] == {"steps": [], "grad_norm": {}}


def test_cut_off_run_with_a_truncated_line_is_rediagnosed(tmp_path: Path) -> None:
    layers = [_layer("in", 0), _layer("mid", 1), _layer("out", 2)]
    lines = [_step(s, {"in": 1e-7, "mid": 1e-4, "out": 0.5}) for s in (0, 10, 20)]
    path = write_run(tmp_path / "r", status="running", layers=layers, lines=lines,
                     tail='{"type": "step", "step": 30, "lay')
    run = read_run(path)
    md = render_report(run, "md")
    assert "**Status: cut off**" in md
    assert "skipped 1 incomplete or corrupt line(s)" in md
    # summary.json had no findings yet; the metrics show a vanishing gradient.
    assert "**unhealthy: vanishing\\_gradient" in md
    doc = _strict_loads(render_report(run, "json"))
    assert doc["status"] == "cut off" and doc["steps"] == 21
    assert doc["findings"][0]["id"] == "vanishing_gradient"
    assert any("recomputed" in n for n in doc["notes"])
    html = render_report(run, "html")
    assert 'class="banner bad"' in html and "skipped 1 incomplete" in html


def test_interrupted_run_says_so(interrupted_run: Path) -> None:
    run = read_run(interrupted_run)
    assert run.status == "interrupted" and len(run.epochs) == 1
    md = render_report(run, "md")
    assert "**Status: interrupted**" in md and "1 of 3 epochs" in md
    assert "was interrupted before its planned end" in md
    assert 'class="badge warn">interrupted' in render_report(run, "html")


def test_single_record_and_bad_values_in_log_plots(tmp_path: Path) -> None:
    names = ["small", "nan", "zero", "big", "neg", "inf"]
    grads = {"nan": None, "zero": 0.0, "neg": -1.0, "inf": float("inf"), "small": 1e-3,
             "big": 1.0}
    hist = {"lo": -1.0, "hi": 1.0, "counts": [0, 3, 5, 0]}
    path = write_run(tmp_path / "r", layers=[_layer(n, i) for i, n in enumerate(names)],
                     lines=[_step(0, grads, weight_hist={"big": hist})])
    run = read_run(path)
    profile = gradient_profile_svg(run)
    paths = re.findall(r'class="profile-line" d="([^"]*)"', profile)
    # Two lone points: the line breaks at the NaN and 0 between them instead of joining.
    assert len(paths) == 1 and paths[0].count("M") == 2 and paths[0].count("L") == 0
    assert profile.count("<circle") == 2  # only the two positive, finite norms
    html = render_report(run, "html")
    assert "nan" not in re.findall(r'd="([^"]*)"', html)  # no NaN coordinates anywhere
    assert not re.search(r'="[^"]*\b(nan|inf)\b[^"]*"', _svg(html, "grad-time"))
    assert "not recorded" in html  # layers without a histogram get a placeholder
    md = render_report(run, "md")
    assert "| 5 | inf | Linear | inf | inf |" in md and "| 1 | nan | Linear | \u2014 |" in md


def test_profile_plots_share_decades_for_side_by_side(tmp_path: Path) -> None:
    a = read_run(write_run(tmp_path / "a", layers=[_layer("x", 0), _layer("y", 1)],
                           lines=[_step(0, {"x": 1e-6, "y": 1.0})]))
    b = read_run(write_run(tmp_path / "b", layers=[_layer("x", 0), _layer("y", 1)],
                           lines=[_step(0, {"x": 0.5, "y": 200.0})]))
    assert gradient_profile_range(a, b) == (-6, 3)
    span = gradient_profile_range(a, b)
    labels = [re.findall(r">(1e-?\d+)<", gradient_profile_svg(r, decades=span)) for r in (a, b)]
    assert labels[0] == labels[1] == ["1e-6", "1e-4", "1e-2", "1e0", "1e2"]
    records = [StepRecord(0, 1, 1.0, {"p": LayerStats(grad_norm=0.1)})]
    svg = gradient_profile_svg(records, [LayerInfo("p", "Linear", 0, 1, ())], title=EVIL)
    assert svg.startswith("<svg") and "<script" not in svg and "&lt;script&gt;" in svg


def test_unknown_format_is_a_user_error(sigmoid_run: Path) -> None:
    with pytest.raises(UserError, match="md, html, json"):
        render_report(read_run(sigmoid_run), "pdf")


# ----- plotting helpers ------------------------------------------------------------


def test_svgplot_helpers() -> None:
    assert ramp_color(0, 5) == "#0d0887" and ramp_color(4, 5) == "#e8a317"
    assert ramp_color(0, 1) == "#0d0887"
    assert nice_ticks(0, 1, 5) == [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
    assert decade_range([None, math.nan, -6.3, 0.2]) == (-7, 1)
    assert decade_range([2.0, 2.0]) == (2, 3) and decade_range([None]) is None
    assert [label for _, label in log_ticks(0, 1)] == ["1e0", "2e0", "5e0", "1e1"]
    assert len(log_ticks(-16, 4)) <= 9
    assert shorten("abcdefghijklmnop", 7) == "abc\u2026nop" and shorten("ab", 7) == "ab"


# ----- what the header and configuration say -----------------------------------------


def test_sampling_interval_is_the_one_the_run_used(short_run: Path, tmp_path: Path) -> None:
    run = read_run(short_run)
    assert run.config["experiment"]["train"]["every"] == 25
    used = run.config["sampled_every"]
    steps = [r.step for r in run.records]
    assert used == 3 and steps == list(range(0, steps[-1] + 1, used))
    assert "| sampled every | 3 (asked 25) |" in render_report(run, "md")
    assert "<tr><th>sampled every</th><td>3 (asked 25)</td></tr>" in render_report(run, "html")
    # The same interval asked and used is one number; an older folder without
    # `sampled_every` shows the option.
    config = {"experiment": {"train": {"every": 5}}, "sampled_every": 5}
    assert "| sampled every | 5 |" in render_report(
        read_run(write_run(tmp_path / "same", config=config)), "md")
    del config["sampled_every"]
    assert "| sampled every | 5 |" in render_report(
        read_run(write_run(tmp_path / "older", config=config)), "md")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: no process has this id now
    return child.pid


def _as_left_by_a_kill(completed: Path, folder: Path, pid: int) -> dict[str, Any]:
    """A copy of a completed run whose summary.json is the one written after its first
    epoch, still "running" and naming writer `pid`: what a kill -9 later leaves, since
    the summary is rewritten at most every 2 s while metrics.jsonl gets every record."""
    folder.mkdir()
    for name in ("config.json", "metrics.jsonl"):
        (folder / name).write_bytes((completed / name).read_bytes())
    summary = json.loads((completed / "summary.json").read_text())
    first = summary["epochs"][0]
    summary.update(status="running", steps=first["steps"], seconds=1.0, epochs=[first],
                   test=None, writer={"pid": pid, "host": socket.gethostname()})
    (folder / "summary.json").write_text(json.dumps(summary))
    return summary


def test_cut_off_run_reports_the_steps_and_time_of_its_metrics(short_run: Path,
                                                              tmp_path: Path) -> None:
    _as_left_by_a_kill(short_run, tmp_path / "killed", _dead_pid())
    lines = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text()
             .splitlines()]
    epochs = [x for x in lines if x["type"] == "epoch"]
    last_step = [x for x in lines if x["type"] == "step"][-1]["step"]
    steps = max(epochs[-1]["steps"], last_step + 1)
    assert len(epochs) == 4 and steps == 160
    seconds = 1.0 + sum(e["seconds"] for e in epochs[1:])  # the summary's + what came after
    run = read_run(tmp_path / "killed")
    assert run.status == "cut off"
    md = render_report(run, "md")
    assert f"**Status: cut off** \u00b7 {steps} steps \u00b7 {seconds:.1f} s \u00b7 4 of 4 " \
           "epochs" in md
    assert f"&middot; {steps} steps &middot; {seconds:.1f} s &middot; 4 epochs" in \
        render_report(run, "html")
    doc = _strict_loads(render_report(run, "json"))
    assert doc["steps"] == steps and doc["seconds"] == pytest.approx(seconds)
    assert run.state.steps == steps and run.state.seconds == pytest.approx(seconds)


def test_the_notice_box_says_cut_off_once(short_run: Path, tmp_path: Path) -> None:
    _as_left_by_a_kill(short_run, tmp_path / "killed", _dead_pid())
    run = read_run(tmp_path / "killed")
    md = render_report(run, "md")
    box = [ln for ln in md.splitlines() if ln.startswith(">")]
    assert box[0].startswith("> **The run was cut off: its process ended")
    assert sum("cut off" in ln for ln in box) == 1, box
    assert box[1:] == ["> - findings were recomputed from the metrics the run wrote"]
    html = render_report(run, "html")
    banner = re.search(r'<div class="banner bad">(.*?)</div>', html, re.S)
    assert banner and banner.group(1).count("cut off") == 1, banner
    assert "<li>findings were recomputed" in banner.group(1)
    assert any("cut off" in n for n in run.notes)  # the reader still says it (view, stderr)


def test_a_run_still_writing_says_so_once_with_its_metrics_steps(short_run: Path,
                                                                tmp_path: Path) -> None:
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _as_left_by_a_kill(short_run, tmp_path / "live", writer.pid)
        run = read_run(tmp_path / "live")
        assert run.status == "running"
        md = render_report(run, "md")
    finally:
        writer.kill()
        writer.wait()
    box = [ln for ln in md.splitlines() if ln.startswith(">")]
    assert box[0] == "> **The run is still running: the numbers cover what it has written " \
        "so far.**"
    assert not any("still being written" in ln for ln in box), box
    assert "**Status: running** \u00b7 160 steps" in md


def test_the_block_summary_counts_repeated_blocks_not_the_stem_and_head(tmp_path: Path):
    from vgdiag.cli.app import main

    repo = Path(__file__).resolve().parents[1]
    folder = tmp_path / "res"
    assert main(["run", "--headless", "--model",
                 f"{repo / 'sample_models' / 'residual_net.py'}:ResidualNet",
                 "--epochs", "1", "--out", str(folder)]) == 0
    rows = json.loads((folder / "summary.json").read_text())["blocks"]["rows"]
    single = [r for r in rows if r["layers"] == [r["name"]]]
    assert single and len(single) < len(rows)  # a stem or head beside the blocks
    md = render_report(read_run(folder), "md")
    assert (f"{len(rows) - len(single)} blocks (and {len(single)} layer"
            f"{'s' if len(single) > 1 else ''} outside them)") in md
