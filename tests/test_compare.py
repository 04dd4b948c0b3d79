"""compare: same seed, data and budget for every variant; parallel equals sequential."""

from __future__ import annotations

import json
from pathlib import Path

from vgdiag.cli.app import main
from vgdiag.errors import ExitCode
from vgdiag.inputs.recipe import RunOptions
from vgdiag.runs.compare import VariantState, build_specs, compare_variants
from vgdiag.runs.compare_table import comparison_rows
from vgdiag.runs.compare_workers import longest_first

TINY = RunOptions(epochs=2, depth=3, width=16, batch_size=32, every=5)


def worker_of(log: Path) -> str:
    first = log.read_text().splitlines()[0]  # "vgdiag compare worker PID: NAME"
    return first.split(":")[0].rsplit(" ", 1)[1]


def test_parallel_and_sequential_give_the_same_numbers(tmp_path):
    plugins = ["weight-init", "adam", "layerwise"]
    seq = compare_variants(TINY, build_specs(plugins), tmp_path / "seq", jobs=1)
    par = compare_variants(TINY, build_specs(plugins), tmp_path / "par", jobs=2)
    assert [o.name for o in seq] == [o.name for o in par] == ["baseline", *plugins]
    # Two worker processes trained the four variants, each several in turn with the
    # dataset it loaded once.
    logs = [tmp_path / "par" / "logs" / f"{name}.log" for name in ["baseline", *plugins]]
    assert len({worker_of(log) for log in logs}) == 2
    for a, b in zip(seq, par):
        assert a.state is b.state is VariantState.DONE
        assert a.steps == b.steps > 0 and a.samples == b.samples > 0
        def numbers(epochs):  # wall time differs between processes; nothing else may
            return [{k: v for k, v in e.items() if k != "seconds"} for e in epochs]

        assert numbers(a.summary["epochs"]) == numbers(b.summary["epochs"])
        assert a.summary["test"] == b.summary["test"]
        assert [layer["grad_norm_last"] for layer in a.summary["layers"]] == [
            layer["grad_norm_last"] for layer in b.summary["layers"]
        ]


def test_the_costliest_variants_start_first_and_equal_costs_keep_their_order():
    specs = build_specs(["weight-init", "layerwise", "skip", "adam"])
    assert [s.name for s in longest_first(specs)] == [
        "layerwise", "adam", "baseline", "weight-init", "skip"]


def test_variants_share_the_baselines_starting_point(tmp_path):
    # Same seed and data order: a plugin that only changes the optimizer starts from
    # the very same weights, so step 0's gradients are identical.
    outcomes = compare_variants(TINY, build_specs(["adam"]), tmp_path, jobs=1)
    base, adam = (o.summary["layers"] for o in outcomes)
    assert [x["grad_norm_first"] for x in base] == [x["grad_norm_first"] for x in adam]
    rows = comparison_rows(outcomes, 0.5)
    assert rows[0]["ratio_init"] == rows[1]["ratio_init"]


def test_compare_cli_writes_its_files_and_reports_not_applicable(capsys, tmp_path):
    out = tmp_path / "cmp"
    code = main(["compare", "--epochs", "1", "--depth", "3", "--width", "16",
                 "--activation", "relu", "--init", "he", "--plugins", "relu,batchnorm",
                 "--out", str(out), "--fail-on", "error"])
    stdout, stderr = capsys.readouterr()
    assert code == ExitCode.OK, stdout + stderr
    doc = json.loads((out / "compare.json").read_text())
    assert doc["baseline"]["status"] == "completed"
    relu, batchnorm = doc["variants"]
    assert relu["plugin"] == "relu" and not relu["applied"]
    assert relu["state"] == "not applicable"
    assert "no saturating activation" in relu["reason"]
    assert batchnorm["applied"] and batchnorm["summary"]["status"] == "completed"
    assert "not applicable" in (out / "compare.md").read_text()
    html = (out / "compare.html").read_text()
    assert html.count("<svg") >= 2 and "http" not in html.replace("http://www.w3.org", "")
    assert "not applicable" in stdout


def test_compare_rejects_unknown_plugins_and_bad_jobs(capsys, tmp_path):
    assert main(["compare", "--plugins", "nope", "--out", str(tmp_path / "a")]) == 2
    assert "unknown plugin" in capsys.readouterr().err
    assert main(["compare", "--jobs", "0", "--out", str(tmp_path / "b")]) == 2
    assert main(["compare", "--plugin-opt", "adam.lr", "--out", str(tmp_path / "c")]) == 2
    assert "malformed plugin option" in capsys.readouterr().err


def test_a_variants_seconds_leave_out_the_datasets_load(tmp_path, monkeypatch):
    # The dataset is loaded once per job: its load is not the first variant's cost.
    # A clock that jumps an hour inside the load makes any share of it show.
    import vgdiag.runs.compare as compare_module

    clock = [0.0]
    real = compare_module.time.perf_counter
    monkeypatch.setattr(compare_module.time, "perf_counter", lambda: real() + clock[0])
    load = compare_module.load_data

    def slow_load(opts):
        clock[0] += 3600.0
        return load(opts)

    monkeypatch.setattr(compare_module, "load_data", slow_load)
    outcomes = compare_variants(TINY, build_specs(["adam"]), tmp_path, jobs=1)
    assert clock[0] == 3600.0  # loaded once, for the first variant
    assert all(0 < o.seconds < 600 for o in outcomes)
