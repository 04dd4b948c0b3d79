"""The dashboard fits any terminal: no number cut, no layer dropped without a word.

Each main screen at 80x24, 120x40 and 200x60, replayed and followed live, read back
as the plain text on the screen and checked against the numbers of the run.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
from pathlib import Path

import pytest
from fake_runs import layers, write_run
from test_tui_snapshots import followed_app, in_progress, until_followed

from vgdiag.cli.layer_table import layer_table
from vgdiag.engine.records import LayerStats, StepRecord
from vgdiag.runs.reader import read_run
from vgdiag.tui.app import build_app
from vgdiag.tui.charts import fmt
from vgdiag.tui.dashboard import VgdiagApp
from vgdiag.tui.state import grad_ratios

SIZES = [(80, 24), (120, 40), (200, 60)]
TAB_KEYS = {"gradients": "1", "layers": "2", "distributions": "3", "updates": "4",
            "activations": "5", "training": "6", "findings": "7"}
# A number whose exponent was cut ("2.3e-", "1.2e"); cuts like "0." are found by the
# checks of each value in its row (a trailing dot also ends sentences).
CUT_NUMBER = re.compile(r"\d(?:\.\d*)?e(?![-+]?\d)")


def screen_text(app: VgdiagApp) -> list[str]:
    return [strip.text for strip in app.screen._compositor.render_strips()]


async def each_tab(app: VgdiagApp, pilot, check) -> None:  # noqa: ANN001
    for tab, key in TAB_KEYS.items():
        await pilot.press(key)
        await pilot.pause(0.2)
        check(tab, screen_text(app))


def check_screen(app: VgdiagApp, size: tuple[int, int], tab: str, lines: list[str]) -> None:
    where = f"{tab} at {size[0]}x{size[1]}"
    text = "\n".join(lines)
    cut = [m.group(0) for line in lines for m in CUT_NUMBER.finditer(line)]
    assert not cut, f"{where}: cut numbers {cut}\n{text}"
    view = app.view
    assert view is not None and view.last is not None
    last = view.last
    names = [i.name for i in view.layers]
    if tab == "gradients":
        # The step of the bars in full, every layer's gradient and ratio in its row.
        assert f"step {last.step}" in text, f"{where}\n{text}"
        ratios = grad_ratios(last, view.layers)
        at = next(i for i, line in enumerate(lines) if "grad norm over time" in line)
        legend = lines[at]
        column = legend.index("grad norm over time")
        # The bars: above the map, or left of it on a wide terminal; they scroll, so
        # the rows shown are checked (the map below accounts for every layer).
        bars = lines[:at] if column < 5 else [line[:column] for line in lines]
        shown = 0
        for name in names:
            row = next((line for line in bars if re.search(rf"\s{re.escape(name)}\s", line)),
                       None)
            if row is not None:
                shown += 1
                assert fmt(last.layers[name].grad_norm) in row and fmt(ratios[name]) in row, row
        assert shown == len(names) or size == (80, 24), f"{where}: bars cut\n{text}"
        held = re.search(r"\((\d+) layers in (\d+) rows\)", legend)
        map_rows = list(itertools.takewhile(
            lambda line: re.match(r"^\s*net\.\d+( \+\d+)?\s+[·░▒▓█]", line),
            (line[column:] for line in lines[at + 1:])))
        counted = sum(1 + int(m.group(1) or 0) for line in map_rows
                      if (m := re.match(r"^\s*net\.\d+(?: \+(\d+))?", line)))
        assert counted == len(names), f"{where}: {counted} of {len(names)} layers\n{text}"
        assert (held is not None) == (len(map_rows) < len(names)), legend
    if tab == "layers":
        for name in names:
            stats = last.layers[name]
            row = next(line for line in lines if re.search(rf"^\s*{re.escape(name)}\s", line))
            for key in ("grad_norm", "update_ratio", "weight_change", "act_saturated"):
                assert fmt(getattr(stats, key)) in row, f"{where}: {key} of {name}: {row}"
        assert "Δ init" in text


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_replayed_screens_fit(tmp_path: Path, size: tuple[int, int]) -> None:
    app = build_app(run=read_run(write_run(tmp_path / "run")), title="vgdiag view")

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause(0.3)
            await each_tab(app, pilot, lambda tab, lines: check_screen(app, size, tab, lines))
            header = screen_text(app)[:2]
            assert "steps/s" not in "".join(header) and "left" not in "".join(header)
            assert "".join(header).count("mlp-sigmoid-d7") == 1, header

    asyncio.run(main())


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_live_screens_fit(tmp_path: Path, size: tuple[int, int]) -> None:
    app = followed_app(in_progress(tmp_path / "run"))

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await until_followed(pilot)
            await each_tab(app, pilot, lambda tab, lines: check_screen(app, size, tab, lines))

    asyncio.run(main())


def test_a_deep_model_at_80x24_groups_layers_and_says_so(tmp_path: Path) -> None:
    app = build_app(run=read_run(write_run(tmp_path / "run", depth=23)), title="vgdiag view")

    async def main() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.3)
            check_screen(app, (80, 24), "gradients", screen_text(app))
            assert "(24 layers in" in "\n".join(screen_text(app))

    asyncio.run(main())


def test_before_after_matches_rows_by_layer_name(tmp_path: Path) -> None:
    before = read_run(write_run(tmp_path / "run"))
    after = read_run(write_run(tmp_path / "run-bn", fixed=True, batchnorm=True, name="bn"))
    app = build_app(run=before, compare_with=[after], title="vgdiag compare")

    async def main() -> None:
        async with app.run_test(size=(120, 72)) as pilot:
            await pilot.pause(0.3)
            lines = screen_text(app)
            assert not [m.group(0) for line in lines for m in CUT_NUMBER.finditer(line)]
            rows = [line for line in lines if re.match(r"^\s*net\.\d+\s", line)]
            # Row i is the same layer on both sides: net.1 beside net.1.0, and so on.
            for index in range(1, 16, 2):
                row = next(line for line in rows if line.split()[0] == f"net.{index}")
                wrapped = f"net.{index}.0" if index < 15 else "net.15"  # the output layer
                assert f" {wrapped} " in row, row
            apart = next(i for i, line in enumerate(lines) if "only in this run (7)" in line)
            inserted = [line for line in lines[apart + 1:] if "+net." in line]
            assert [line.split("+")[-1].split()[0] for line in inserted] == \
                [f"net.{i}.1" for i in range(1, 14, 2)]

    asyncio.run(main())


def test_inspect_table_has_one_gradient_column_and_no_update_before_a_step() -> None:
    infos = layers(2)
    record = StepRecord(0, 0, 2.3, {i.name: LayerStats(grad_norm=0.1 * (1 + i.depth))
                                    for i in infos})
    at_init = [c.header for c in layer_table(infos, record, record).columns]
    assert at_init == ["layer", "grad", "÷ out", "sat", "dead"]
    later = StepRecord(10, 1, 2.2, record.layers)
    assert [c.header for c in layer_table(infos, record, later).columns] == [
        "layer", "grad@init", "grad now", "÷ out", "upd/W", "ΔW/W0", "sat", "dead"]



def test_a_recurrent_run_shows_its_gradient_through_time(tmp_path: Path) -> None:
    from vgdiag.tui.widgets import TimeGradPlot

    plain = build_app(run=read_run(write_run(tmp_path / "plain")), title="vgdiag view")
    rnn = build_app(run=read_run(write_run(tmp_path / "rnn", recurrent=True)),
                    title="vgdiag view")

    async def main() -> None:
        async with plain.run_test(size=(80, 40)) as pilot:
            await pilot.pause(0.3)
            assert not plain.query_one(TimeGradPlot).display
        async with rnn.run_test(size=(80, 40)) as pilot:
            await pilot.pause(0.3)
            plot = rnn.query_one(TimeGradPlot)
            assert plot.display
            (series,) = plot.series
            # Halving per step from 0.05 at t = 11: log10 falls by log10(2) a step.
            assert series.ys[-1] == pytest.approx(math.log10(0.05))
            assert series.ys[0] == pytest.approx(math.log10(0.05) - 11 * math.log10(2))
            text = "\n".join(screen_text(rnn))
            assert "log10 |dLoss/dx_t| through time" in text and "━ rnn" in text

    asyncio.run(main())


def test_histogram_axes_span_the_data_in_the_dashboard_and_the_report(tmp_path: Path) -> None:
    import numpy as np

    from vgdiag.engine.records import Histogram
    from vgdiag.runs.hist_range import occupied_range
    from vgdiag.runs.report import render_report

    counts = np.zeros(40, np.int64)
    counts[0], counts[10:15] = 7, [1, 5, 9, 5, 1]  # zeros clamped low; a 2.5-decade spread
    grad = Histogram(-16.0, 4.0, counts)
    assert occupied_range(grad) == (-16.0, -8.5)
    assert occupied_range(grad, skip_floor=True) == (-11.0, -8.5)
    html = render_report(read_run(write_run(tmp_path / "run")), "html")
    assert 'id="update-time"' in html and "0.001 rule of thumb" in html
    assert html.count('class="plot hist-time"') == 4  # input and output side, both kinds
    # The fake run's log10|grad| histograms sit around 1e-4..1e-7.5: no 1e-16 or 1e4 ends.
    grad_part = html[html.index("multiples grad-hist"):html.index('id="update-time"')]
    assert "1e-16" not in grad_part and "1e4" not in grad_part


def test_a_legend_too_wide_for_its_plot_wraps_instead_of_running_into_the_next() -> None:
    # compare's two plots side by side, one series per variant: a label cropped at the
    # plot's edge ran into the next plot's title ("━ batchnval loss").
    from textual.app import App, ComposeResult
    from textual.containers import Horizontal

    from vgdiag.tui.widgets.plot import LinePlot, Series

    names = ["baseline", "weight-init", "relu", "adam", "batchnorm", "skip", "layerwise"]

    class Two(App[None]):
        CSS = "LinePlot { width: 1fr; height: 12; }"

        def compose(self) -> ComposeResult:
            with Horizontal():
                yield LinePlot("val acc", x_label="epoch", id="a")
                yield LinePlot("val loss", x_label="epoch", id="b")

    async def main() -> None:
        app = Two()
        async with app.run_test(size=(80, 24)) as pilot:
            for plot in app.query(LinePlot):
                plot.series = tuple(Series(n, [0, 1], [0.1 * k, 0.2], f"series--{k % 4}")
                                    for k, n in enumerate(names))
            await pilot.pause(0.2)
            text = "\n".join(screen_text(app))  # type: ignore[arg-type]
            for name in names:
                assert text.count(f"━ {name}") == 2, (name, text)
            assert "val acc" in text and "val loss" in text

    asyncio.run(main())
