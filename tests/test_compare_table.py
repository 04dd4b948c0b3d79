"""The comparison table: seeds give a spread, learning is told apart from gradient
health, and narrow terminals keep every number."""

from __future__ import annotations

import json
import statistics

import pytest
from rich.console import Console

from vgdiag.cli.app import main
from vgdiag.errors import ExitCode
from vgdiag.inputs.recipe import RunOptions
from vgdiag.runs.compare import VariantState, build_specs, compare_variants
from vgdiag.runs.compare_report import (
    COLUMNS,
    NARROW_WIDTH,
    TERMINAL_LABELS,
    cell,
    rich_table,
    terminal_view,
)
from vgdiag.runs.compare_table import comparison_rows, learned

TINY = RunOptions(epochs=2, depth=3, width=16, batch_size=32, every=5)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory: pytest.TempPathFactory) -> list:
    specs = build_specs(["adam"], seeds=[1, 2])
    return compare_variants(TINY, specs, tmp_path_factory.mktemp("seeds"), jobs=1)


def test_two_seeds_give_mean_and_spread(two_seeds: list) -> None:
    assert [o.name for o in two_seeds] == ["baseline-seed1", "baseline-seed2",
                                           "adam-seed1", "adam-seed2"]
    assert all(o.state is VariantState.DONE for o in two_seeds)
    rows = comparison_rows(two_seeds, 0.5)
    assert [r["variant"] for r in rows] == ["baseline", "adam"]
    for row, members in zip(rows, (two_seeds[:2], two_seeds[2:])):
        accs = [o.summary["test"]["acc"] for o in members]
        assert row["seeds"] == 2
        assert row["test_acc"] == pytest.approx(statistics.fmean(accs))
        assert row["test_acc_std"] == pytest.approx(statistics.stdev(accs))
    # Seeds change the init: the two baselines did not start from the same weights.
    first = [o.summary["layers"][0]["grad_norm_first"] for o in two_seeds[:2]]
    assert first[0] != first[1]
    adam = rows[1]
    assert adam["gain"] == pytest.approx(adam["test_acc"] - rows[0]["test_acc"])
    beyond = adam["gain"] > adam["test_acc_std"] + rows[0]["test_acc_std"]
    assert adam["clear_gain"] == (beyond and adam["learned"] != "at chance")
    assert "±" in cell(adam, "test_acc")


def test_the_same_data_budget_is_reported_in_steps_and_samples(two_seeds: list) -> None:
    rows = comparison_rows(two_seeds, 0.5)
    n_train = json.loads((two_seeds[0].run_dir / "config.json").read_text())["data"]
    assert all(r["samples"] == rows[0]["samples"] for r in rows)
    assert rows[0]["steps"] == two_seeds[0].summary["epochs"][-1]["steps"]
    assert n_train  # the config records the split the samples count over


def test_learned_is_judged_against_chance() -> None:
    assert learned(0.13, 10) == "at chance"
    assert learned(0.40, 10) == "partly"
    assert learned(0.80, 10) == "learned"
    assert learned(0.52, 2) == "at chance" and learned(0.9, 2) == "learned"
    assert learned(None, 10) == "" and learned(0.5, 0) == ""


@pytest.mark.parametrize("width", [40, 60, 90, 160])
def test_narrow_terminals_keep_every_number(two_seeds: list, width: int) -> None:
    rows = comparison_rows(two_seeds, 0.5)
    for row in rows:  # long reasons must wrap, not push the numbers out
        row["health"] = "unhealthy: " + ", ".join(["vanishing_gradient"] * 6)
    console = Console(width=width, record=True, color_system=None)
    console.print(terminal_view(rows, 0.5, width))
    text = console.export_text()
    for row in rows:
        for key in ("test_acc", "steps", "samples", "gain"):
            if row.get(key) is not None:
                assert cell(row, key).split()[0] in text, (width, key, text)
    assert all(len(line) <= width for line in text.splitlines())
    if width < NARROW_WIDTH:  # blocks: no `label value` field is broken across lines
        lines = text.splitlines()
        for row in rows:
            for key in ("test_acc", "gain", "seconds"):
                field = f"{TERMINAL_LABELS.get(key, dict(COLUMNS)[key])} {cell(row, key)}"
                if row.get(key) is not None and len(field) < width - 2:
                    assert any(field in line for line in lines), (width, field, text)


def test_the_wide_table_has_a_column_per_number(two_seeds: list) -> None:
    rows = comparison_rows(two_seeds, 0.5)
    console = Console(width=160, record=True, color_system=None)
    console.print(rich_table(rows, 0.5))
    header = next(line for line in console.export_text().splitlines() if "variant" in line)
    for label in ("test acc", "gain", "steps", "samples", "verdict"):
        assert label in header


def test_cli_seeds_writes_the_spread(capsys, tmp_path) -> None:
    out = tmp_path / "cmp"
    code = main(["compare", "--epochs", "1", "--depth", "2", "--width", "8",
                 "--plugins", "adam", "--seeds", "2", "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == ExitCode.OK, stdout + stderr
    doc = json.loads((out / "compare.json").read_text())
    assert [r["seeds"] for r in doc["table"]] == [2, 2]
    assert all(r["test_acc_std"] is not None for r in doc["table"])
    assert (out / "baseline-seed42").is_dir() and (out / "adam-seed43").is_dir()
    assert "±" in (out / "compare.md").read_text()
    html = (out / "compare.html").read_text()
    assert "validation accuracy" in html and "validation loss" in html
    assert main(["compare", "--seeds", "0", "--out", str(tmp_path / "x")]) == ExitCode.BAD_INPUT


def test_a_gain_at_chance_is_labelled_at_chance_not_within_spread() -> None:
    from vgdiag.runs.compare_report import cell

    row = {"gain": 0.008, "clear_gain": False, "learned": "at chance"}
    assert cell(row, "gain") == "+0.008 at chance"
    row = {"gain": 0.008, "clear_gain": False, "learned": "learned"}
    assert cell(row, "gain") == "+0.008 within spread"
    assert cell({"gain": 0.3, "clear_gain": True, "learned": "learned"}, "gain") == "+0.300 clear"


def test_the_budget_line_says_when_a_variant_saw_more_samples() -> None:
    from vgdiag.runs.compare_table import budget_line

    same = [{"variant": "baseline", "samples": 5.4e6}, {"variant": "adam", "samples": 5.4e6}]
    assert budget_line(same).startswith("Same data split, seeds and data budget")
    more = [*same, {"variant": "layerwise", "samples": 1.89e7}]
    line = budget_line(more)
    assert "samples seen differ" in line and "layerwise 3.5x" in line and "adam" not in line
    assert "Published" not in line
    # A preset's published figures come with the budget they were measured at.
    line = budget_line([{**r, "published": 0.9} for r in same])
    assert "Published: the test accuracy REFERENCE.md reports" in line and "100 epochs" in line
    # The terminal says it too, at any width, not only compare.md and compare.html.
    for width in (60, 160):
        console = Console(width=width, record=True)
        console.print(terminal_view([{**r, "learned": "learned"} for r in more], 0.5, width))
        assert "layerwise 3.5x" in " ".join(console.export_text().split())


def test_a_diverged_seed_counts_its_budget_but_no_accuracy_and_no_clear_gain() -> None:
    from vgdiag.runs.compare import VariantOutcome, VariantSpec

    def outcome(group, seed, state, acc, steps, samples, diverged=False):
        summary = {"num_classes": 10, "epochs": [{"epoch": 1, "val_acc": acc}],
                   "test": {"acc": acc, "loss": 1.0},
                   "findings": [{"id": "non_finite"}] if diverged else []}
        spec = VariantSpec(group, None if group == "baseline" else group, seed=seed)
        return VariantOutcome(spec, state, summary=summary, steps=steps, samples=samples)

    done, cut = VariantState.DONE, VariantState.INTERRUPTED
    rows = {r["variant"]: r for r in comparison_rows([
        outcome("baseline", 1, done, 0.10, 100, 6400),
        outcome("baseline", 2, done, 0.11, 100, 6400),
        outcome("adam", 1, done, 0.90, 100, 6400),
        outcome("adam", 2, done, None, 4, 256, diverged=True),
        outcome("adam", 3, cut, 0.5, 10, 640),
    ], target_acc=0.5)}
    adam = rows["adam"]
    assert "diverged" in adam["learned"]
    assert adam["steps"] == pytest.approx(52)  # done seeds: the diverged one's 4 steps count
    assert adam["clear_gain"] is False  # one seed diverged: no clear gain
