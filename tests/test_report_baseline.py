"""`vgdiag report RUN --baseline BASE`: a CI gate on what got worse, via the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vgdiag.engine.gradflow import gradient_profile
from vgdiag.errors import ExitCode
from vgdiag.runs.reader import read_run

FAST = ["--headless", "--epochs", "2", "--depth", "4", "--width", "16", "--every", "5"]


def vgdiag(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vgdiag", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("baseline")
    made = {}
    for name, opts in (("healthy", ["--activation", "relu", "--init", "he"]),
                       ("healthy2", ["--activation", "relu", "--init", "he", "--seed", "7"]),
                       ("vanishing", ["--activation", "sigmoid", "--depth", "8"])):
        made[name] = root / name
        proc = vgdiag("run", *FAST, *opts, "--out", str(made[name]))
        assert proc.returncode == 0, proc.stderr
    return made


def test_a_run_that_starts_to_vanish_fails_against_a_healthy_baseline(runs, tmp_path) -> None:
    out = tmp_path / "r.json"
    proc = vgdiag("report", str(runs["vanishing"]), "--baseline", str(runs["healthy"]),
                  "--format", "json", "--out", str(out))
    assert proc.returncode == ExitCode.FINDINGS, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith("vgdiag: regression: ")]
    assert any("vanishing_gradient (new error)" in x for x in lines)
    assert any("fell to" in x and "toward vanishing" in x for x in lines)
    doc = json.loads(out.read_text())["baseline"]
    # Independent: the median first/last ratio of each run's last five sampled steps.
    for key, name in (("ratio_first_last", "vanishing"), ("baseline_ratio_first_last",
                                                           "healthy")):
        run = read_run(runs[name])
        ratios = sorted(gradient_profile(r, run.layers)["ratio"] for r in run.records[-5:])
        assert doc[key] == pytest.approx(ratios[2], rel=1e-9)
    assert {r["kind"] for r in doc["regressions"]} >= {"finding", "gradient"}
    # Another model (8 sigmoid layers against 4 ReLU ones): said, not failed on.
    model, layers = doc["differences"]
    assert model.startswith("model builtin:mlp depth=4") and "depth=8" in model
    assert layers == "5 layers in common (name and kind) of 5 there and 9 here"
    assert f"vgdiag: note: the baseline differs: {layers}" in proc.stderr


def test_problems_the_baseline_shares_do_not_fail_the_build(runs) -> None:
    alone = vgdiag("report", str(runs["vanishing"]), "--fail-on", "error")
    assert alone.returncode == ExitCode.FINDINGS  # the absolute gate fails it
    proc = vgdiag("report", str(runs["vanishing"]), "--baseline", str(runs["vanishing"]),
                  "--fail-on", "error")
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert "## Against the baseline" in proc.stdout and "No regression" in proc.stdout


def test_another_seed_of_a_healthy_run_is_no_regression(runs) -> None:
    proc = vgdiag("report", str(runs["healthy2"]), "--baseline", str(runs["healthy"]),
                  "--format", "html")
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert "Against the baseline" in proc.stdout and "regression" not in proc.stderr
    assert "differs" not in proc.stderr + proc.stdout  # the same model and data


def test_a_bad_baseline_or_tolerance_is_one_line_and_exit_2(runs, tmp_path) -> None:
    for args in (["--baseline", str(tmp_path / "nowhere")], ["--baseline",
                 str(runs["healthy"]), "--tolerance", "0.5"]):
        proc = vgdiag("report", str(runs["vanishing"]), *args)
        assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
        assert ("--baseline: " if "nowhere" in args[1] else "--tolerance") in proc.stderr


def test_a_run_that_did_not_finish_is_a_regression(runs, tmp_path) -> None:
    # Killed before its first step (out of memory, a CI timeout): only its config.
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_text((runs["healthy2"] / "config.json").read_text())
    proc = vgdiag("report", str(cut), "--baseline", str(runs["healthy"]))
    assert proc.returncode == ExitCode.FINDINGS, proc.stderr
    assert "vgdiag: regression: the run is cut off where the baseline completed" in proc.stderr



def test_a_layer_of_the_same_name_and_another_kind_is_not_in_common() -> None:
    # "2" a Linear in both, "0" and "1" convolutions in one and Linear in the other.
    from vgdiag.engine.records import LayerInfo
    from vgdiag.runs.regression import differences

    class Run:
        def __init__(self, kinds: list[str]) -> None:
            self.config: dict = {}
            self.layers = [LayerInfo(str(k), kind, k, 1, ()) for k, kind in enumerate(kinds)]

    cnn, mlp = Run(["Conv2d", "Conv2d", "Linear"]), Run(["Linear", "Linear", "Linear"])
    assert differences(cnn, mlp) == ["1 layers in common (name and kind) of 3 there and 3 "
                                     "here"]
    assert differences(mlp, mlp) == []
