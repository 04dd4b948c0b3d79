"""The command line: exit codes, one-line errors, and the run folder it leaves."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from vgdiag.cli.app import main
from vgdiag.errors import ExitCode
from vgdiag.inputs.options import FailOn, opt

FAST = ["--epochs", "2", "--depth", "4", "--width", "16", "--headless"]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_version_and_help(capsys):
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.startswith("vgdiag ")
    code, out, _ = cli(capsys, "run", "-h")
    assert code == 0 and "--fail-on" in out and "--model" in out


def test_run_writes_a_complete_folder_and_fails_on_the_vanishing_baseline(capsys, tmp_path):
    out_dir = tmp_path / "baseline"
    code, out, err = cli(capsys, "run", *FAST, "--depth", "7", "--out", str(out_dir),
                         "--fail-on", "error")
    assert code == ExitCode.FINDINGS, err
    assert "vanishing_gradient" in out
    # The headline says what trains: the data's own learning rate, not one to guess.
    assert "(cpu; sgd lr 0.1, batch 16)" in " ".join(out.split())
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["schema_version"] == 1
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2]
    assert {"loss", "acc"} <= set(summary["test"])
    assert summary["verdict"].startswith("unhealthy")
    assert [layer["depth"] for layer in summary["layers"]] == list(range(8))
    for key in ("grad_norm_first", "grad_norm_last", "update_ratio_last", "weight_change_last"):
        assert summary["layers"][0][key] is not None
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    kinds = [json.loads(line)["type"] for line in lines]
    assert kinds.count("epoch") == 2 and kinds.count("step") >= 2
    config = json.loads((out_dir / "config.json").read_text())
    assert config["experiment"]["train"]["epochs"] == 2 and config["data"]["name"] == "digits"


def test_healthy_model_exits_zero_with_fail_on(capsys, tmp_path):
    code, out, err = cli(capsys, "run", *FAST, "--activation", "relu", "--init", "he",
                         "--out", str(tmp_path / "r"), "--fail-on", "error")
    assert code == ExitCode.OK, out + err


@pytest.mark.parametrize(
    "args, words",
    [
        (["run", "--every", "0"], "--every"),
        (["run", "--lr", "-1"], "--lr"),
        (["run", "--epochs", "abc"], "--epochs"),
        (["run", "--data", "nope"], "unknown --data"),
        (["run", "--data", "my_data.py"], "give my_data.py:FUNCTION"),
        (["run", "--activation", "swish"], "--activation"),
        (["run", "--init", "normal:x"], "--init"),
        (["run", "--optimizer", "lbfgs"], "--optimizer"),
        (["report", "/nonexistent/run", "--format", "pdf"], "--format"),
        (["compare", "--fail-on", "always"], "--fail-on"),
        (["run", "--device", "tpu"], "unknown --device"),
        (["run", "--fail-on", "sometimes"], "--fail-on"),
        (["report", "/nonexistent/run"], "not a folder"),
        (["inspect", "--depth", "0"], "--depth"),
        # The built-in model is checked before training too: an element-wise loss on
        # class labels is a bad choice of --loss, not a training failure.
        (["run", "--epochs", "1", "--loss", "mse"], "use --loss cross-entropy"),
        (["compare", "--epochs", "1", "--loss", "l1"], "use --loss cross-entropy"),
        # Options that would do nothing are refused, not silently ignored.
        (["run", "--model", "torch.nn:Linear", "--init", "he"], "built-in MLP only"),
        (["run", "--model", "torch.nn:Linear", "--depth", "3"], "--model-arg"),
        (["run", "--data-dir", "/tmp"], "--data-dir applies to --data mnist"),
        (["run", "--synthetic-size", "100"], "--synthetic-size applies"),
        (["run", "--plugin-opt", "weight-init.std=1.0"], "add --plugin weight-init"),
        (["run", "--model-arg", "depth=12"], "give --depth 12 instead"),
        (["compare", "--model-arg", "x=1"], "not the built-in MLP"),
        (["compare", "--plugins", "relu", "--plugin-opt", "adam.lr=1"], "add adam to --plugins"),
        # an unset shell variable (--plugins "$P") is not a request for all seven
        (["compare", "--epochs", "1", "--plugins", ""], "no plugin named in ''"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, args, words):
    code, out, err = cli(capsys, *args)
    assert code == ExitCode.BAD_INPUT
    assert err.count("\n") == 1 and words in err and "Traceback" not in err


def test_cuda_asked_for_without_cuda(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = cli(capsys, "inspect", "--device", "cuda")
    assert code == ExitCode.BAD_INPUT and "CUDA is not available" in err


def test_out_that_is_a_file_or_not_empty(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    code, _, err = cli(capsys, "run", *FAST, "--out", str(f))
    assert code == ExitCode.BAD_INPUT and "is a file" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("x")
    code, _, err = cli(capsys, "run", *FAST, "--out", str(tmp_path / "full"))
    assert code == ExitCode.BAD_INPUT and "already holds files" in err


def test_inspect_json(capsys):
    code, out, _ = cli(capsys, "inspect", "--json", "--fail-on", "warning")
    data = json.loads(out)
    assert code == ExitCode.FINDINGS
    assert data["findings"][0]["id"] == "vanishing_gradient"
    assert data["layers"][0]["grad_norm"] < data["layers"][-1]["grad_norm"] * 1e-3


def test_training_failure_exits_3_and_marks_the_folder(capsys, tmp_path):
    model = tmp_path / "boom.py"
    model.write_text(
        "import torch\n"
        "class Boom(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.lin = torch.nn.Linear(64, 10)\n"
        "        self.calls = 0\n"
        "    def forward(self, x):\n"
        "        self.calls += 1\n"
        "        if self.calls > 5:\n"
        "            raise RuntimeError('kaboom in forward')\n"
        "        return self.lin(x.flatten(1))\n"
    )
    out_dir = tmp_path / "run"
    code, out, err = cli(capsys, "run", "--model", f"{model}:Boom", "--epochs", "2",
                         "--headless", "--out", str(out_dir))
    assert code == ExitCode.TRAINING_FAILED, out + err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "kaboom" in summary["error"]
    # --debug after the command (where users put it) is taken, and shows where it raised
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "vgdiag", "run", "--model", f"{model}:Boom", "--epochs", "1",
         "--headless", "--out", str(tmp_path / "dbg"), "--debug"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == ExitCode.TRAINING_FAILED, proc.stderr
    assert "vgdiag: training failed: RuntimeError: kaboom" in proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr
    assert f'File "{model}", line 10, in forward' in proc.stderr


def test_debug_shows_the_traceback_and_keeps_the_exit_code(tmp_path: Path):
    # CI turns --debug on to see more: bad input must still read 2, not Python's 1.
    import subprocess
    import sys

    broken = tmp_path / "broken.py"
    broken.write_text("import torch\nclass Net(torch.nn.Module:\n    pass\n")
    for args in (["run", "--headless", "--epochs", "-1", "--debug"],
                 ["--debug", "inspect", "--model", f"{broken}:Net"],
                 ["report", str(tmp_path / "nowhere"), "--debug"]):
        proc = subprocess.run([sys.executable, "-m", "vgdiag", *args], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == ExitCode.BAD_INPUT, (args, proc.stderr)
        assert "Traceback (most recent call last)" in proc.stderr, args
        assert proc.stderr.rstrip().splitlines()[-1].startswith("vgdiag: error: "), args


def test_report_formats(capsys, tmp_path: Path):
    out_dir = tmp_path / "r"
    assert cli(capsys, "run", *FAST, "--out", str(out_dir))[0] == 0
    for fmt in ("md", "json", "html"):
        code, out, err = cli(capsys, "report", str(out_dir), "--format", fmt)
        assert code == 0, err
        assert out.strip()
    code, out, _ = cli(capsys, "report", str(out_dir), "--format", "json")
    assert json.loads(out)["status"] == "completed"
    target = tmp_path / "rep.html"
    code, _, err = cli(capsys, "report", str(out_dir), "--format", "html", "--out", str(target),
                       "--fail-on", "error")
    assert code == ExitCode.FINDINGS and target.read_text().lstrip().lower().startswith("<!doctype")


def test_plugins_lists_the_built_ins_with_their_origin(capsys):
    code, out, _ = cli(capsys, "plugins")
    assert code == 0
    for name in ("weight-init", "relu", "adam", "batchnorm", "skip", "layerwise", "gradnorm"):
        assert name in out
    assert "built-in" in out


def test_run_with_a_plugin_records_it_and_fixes_the_gradient(capsys, tmp_path):
    out_dir = tmp_path / "bn"
    code, out, err = cli(capsys, "run", *FAST, "--depth", "7", "--plugin", "batchnorm",
                         "--out", str(out_dir))
    assert code == 0, err
    config = json.loads((out_dir / "config.json").read_text())
    assert config["experiment"]["plugins"] == ["batchnorm"]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert "vanishing_gradient" not in summary["verdict"]
    code, _, err = cli(capsys, "run", *FAST, "--plugin", "relu", "--activation", "relu",
                       "--out", str(tmp_path / "x"))
    assert code == ExitCode.BAD_INPUT and "does not apply" in err


def test_help_shows_every_default(capsys, monkeypatch):
    """Each option's line in `--help` carries its default, computed or described."""
    import dataclasses

    from vgdiag.inputs.options import CompareOptions, RunCommandOptions, RunOptions

    monkeypatch.setenv("COLUMNS", "400")  # one line an option: the assertion reads it whole
    for command, classes in (("run", (RunOptions, RunCommandOptions)),
                             ("compare", (CompareOptions,))):
        code, out, _ = cli(capsys, command, "--help")
        assert code == 0
        lines = {line.split()[1]: line for line in out.splitlines()
                 if line.startswith("│ --") and "--help" not in line}
        for cls in classes:
            for f in dataclasses.fields(cls):
                name = (f.metadata["flags"] or ("--" + f.name.replace("_", "-"),))[0]
                assert name in lines, (name, out)
        assert all("[default: " in line for line in lines.values()), out
        assert "[default: 25]" in lines["--every"]  # engine.defaults.DEFAULT_EVERY
        assert "adam 1e-3; sgd 0.01" in lines["--lr"]  # the text survives Rich markup
        assert "sigmoid|tanh|relu|leaky-relu|gelu" in lines["--activation"]
        if command == "run":
            from vgdiag.inputs.losses import LOSSES

            assert all(name in lines["--loss"] for name in LOSSES), lines["--loss"]


def test_help_fits_80_columns_without_cutting_a_word(capsys, monkeypatch):
    """At 80 columns Rich crops a word longer than the help column with '…'."""
    monkeypatch.setenv("COLUMNS", "80")
    for command in ("run", "compare", "inspect", "report", "view", "export"):
        code, out, _ = cli(capsys, command, "--help")
        assert code == 0
        assert "…" not in out, (command, [line for line in out.splitlines() if "…" in line])
        assert all(len(line) <= 80 for line in out.splitlines()), command
    code, out, _ = cli(capsys, "run", "--help")
    assert "--no-headless" not in out and "--headless" in out  # a switch, not a pair


def test_recipe_file_with_command_line_override(capsys, tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('activation = "relu"\ninit = "he"\ndepth = 3\nwidth = 8\n'
                      'epochs = 1\nbatch-size = 64\nmodel-arg = []\n')
    out_dir = tmp_path / "r"
    code, _, err = cli(capsys, "run", "--recipe", str(recipe), "--depth", "2", "--headless",
                       "--out", str(out_dir))
    assert code == 0, err
    config = json.loads((out_dir / "config.json").read_text())
    train = config["experiment"]["train"]
    assert (train["epochs"], train["batch_size"]) == (1, 64)  # from the file
    model = config["experiment"]["model"]
    assert "depth=2" in model and "activation=relu" in model and "init=he" in model


@pytest.mark.parametrize(
    "text, words",
    [('depht = 3\n', "unknown option 'depht'"), ('depth = "three"\n', "depth must be int"),
     ('activation = "swish"\n', "unknown --activation"), ('depth = \n', "not valid TOML"),
     ('fail-on = "error"\n', "give --fail-on on the command line")],
)
def test_bad_recipe_is_one_line(capsys, tmp_path, text, words):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(text)
    code, _, err = cli(capsys, "inspect", "--recipe", str(recipe))
    assert code == ExitCode.BAD_INPUT, err
    assert err.count("\n") == 1 and words in err, err


@pytest.mark.parametrize("args", [["run", "--optimizer", "lbfgs"], ["run", "--fail-on", "x"],
                                  ["inspect", "--activation", "swish"],
                                  ["report", ".", "--format", "pdf"]])
def test_bad_choice_in_a_real_process(args):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "vgdiag", *args], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == ExitCode.BAD_INPUT, done.stderr
    assert done.stderr.count("\n") == 1 and args[1] in done.stderr, done.stderr
    assert "is not one of" in done.stderr and done.stdout == ""


def test_fail_on_choices_are_the_severities():
    from vgdiag.engine.records import SEVERITIES
    from vgdiag.inputs.options import FailOn

    assert [m.value for m in FailOn] == ["none", *SEVERITIES]


def test_read_recipe_gives_run_options(tmp_path):
    from vgdiag.inputs.options import Activation, RunOptions, read_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text('activation = "leaky-relu"\nlr = 1\ndata-dir = "d"\n')
    opts = read_recipe(recipe)
    assert opts == RunOptions(activation=Activation.leaky_relu, lr=1.0, data_dir=Path("d"))
    assert isinstance(opts.lr, float) and opts.activation is Activation.leaky_relu


def test_recipe_names_files_absolute_whatever_their_suffix_case(tmp_path, monkeypatch):
    from vgdiag.inputs.options import RunOptions

    monkeypatch.chdir(tmp_path)
    (tmp_path / "Net.PT").write_bytes(b"")
    (tmp_path / "net.py").write_text("")
    recipe = RunOptions(model="Net.PT", data="net.py:make").as_recipe()
    assert recipe["model"] == str(tmp_path.resolve() / "Net.PT")
    assert recipe["data"] == f"{tmp_path.resolve() / 'net.py'}:make"
    assert RunOptions(model="missing.pt").as_recipe()["model"] == "missing.pt"


@dataclass
class Toy:
    size: int = opt(3, "Size [in cells].")
    level: FailOn = opt(FailOn.warning, "Level.")


def test_generated_signature_keeps_brackets_and_calls_the_body_with_instances(monkeypatch):
    """The generator on a dataclass of its own: help text verbatim, values as instances."""
    import typer
    from typer.testing import CliRunner

    from vgdiag.cli.options_typer import command

    seen: list[Toy] = []

    @command(Toy)
    def toy(options: Toy) -> None:
        """A toy command."""
        seen.append(options)

    toy_app = typer.Typer(rich_markup_mode="rich")
    toy_app.command()(toy)
    toy_app.command("other")(toy)  # two commands: Typer keeps the name
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    helped = runner.invoke(toy_app, ["toy", "--help"])
    assert "Size [in cells]." in helped.output and "[default: 3]" in helped.output
    done = runner.invoke(toy_app, ["toy", "--size", "5", "--level", "error"])
    assert done.exit_code == 0, done.output
    assert seen == [Toy(size=5, level=FailOn.error)] and seen[0].level is FailOn.error


def test_a_custom_loss_is_checked_before_training(capsys, tmp_path, monkeypatch):
    # The pre-flight runs the user's loss once: a tuple, a float or a per-sample loss is
    # one line and exit 2, not a training failure after the run folder exists.
    (tmp_path / "losses.py").write_text(
        "import torch\n"
        "def pair(out, y):\n    return torch.nn.functional.cross_entropy(out, y), 1\n"
        "def number(out, y):\n    return 1.0\n"
        "def one(out, y):\n    return torch.nn.functional.cross_entropy(out, y).reshape(1)\n")
    monkeypatch.chdir(tmp_path)
    for name, words in (("pair", "returned a tuple"), ("number", "returned a float")):
        code, _, err = cli(capsys, "run", "--headless", "--epochs", "1",
                           "--loss", f"losses.py:{name}", "--out", str(tmp_path / name))
        assert code == ExitCode.BAD_INPUT and words in err and err.count("\n") == 1, err
        assert not (tmp_path / name).exists()
    # A one-element loss of shape (1,) is one number: it trains (and evaluates).
    code, _, err = cli(capsys, "run", "--headless", "--epochs", "1",
                       "--loss", "losses.py:one", "--out", str(tmp_path / "one"))
    assert code in (ExitCode.OK, ExitCode.FINDINGS), err


DIVERGING = """
from torch import nn

class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(),
                                 nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)
"""
DIVERGE = ["--lr", "1e4", "--epochs", "3", "--data", "synthetic", "--synthetic-size", "500",
           "--device", "cpu"]


def strict_json(text: str):
    """json.loads that refuses what strict parsers (JSON.parse, jq) refuse."""
    def refuse(token: str):
        raise ValueError(f"not JSON: {token}")
    return json.loads(text, parse_constant=refuse)


def test_a_diverged_run_writes_strict_json_and_claims_no_accuracy(capsys, tmp_path):
    model = tmp_path / "m.py"
    model.write_text(DIVERGING)
    run = tmp_path / "run"
    code, out, err = cli(capsys, "run", "--model", f"{model}:Mlp", *DIVERGE, "--headless",
                         "--out", str(run))
    assert code == ExitCode.OK, err  # completed, unhealthy: exit by --fail-on (none)
    summary = strict_json((run / "summary.json").read_text())
    for line in (run / "metrics.jsonl").read_text().splitlines():
        strict_json(line)
    assert summary["status"] == "completed" and "non_finite" in summary["verdict"]
    # argmax of NaN logits is not an accuracy
    assert summary["test"]["acc"] is None
    assert all(e["val_acc"] is None for e in summary["epochs"])
    assert "test acc -" in out


def test_compare_reports_a_diverged_variant_as_diverged_not_failed(capsys, tmp_path):
    model = tmp_path / "m.py"
    model.write_text(DIVERGING)
    out_dir = tmp_path / "cmp"
    code, out, err = cli(capsys, "compare", "--model", f"{model}:Mlp", *DIVERGE,
                         "--plugins", "adam", "--out", str(out_dir))
    assert code == ExitCode.OK, out + err
    doc = strict_json((out_dir / "compare.json").read_text())
    base = next(r for r in doc["table"] if r["variant"] == "baseline")
    assert base["state"] == "done" and base["learned"] == "diverged", base
    assert base["test_acc"] is None and base["gain"] is None
    assert base["ratio_init"] is not None  # its step 0 was finite
    # samples: the batches the cut-short epoch took (64 each), not the training set
    assert base["samples"] == 64 * base["steps"] < 400, base
    summary = strict_json((out_dir / "baseline" / "summary.json").read_text())
    assert summary["status"] == "completed"


def test_masked_logits_keep_their_accuracy():
    import torch

    from vgdiag.engine.evaluation import Evaluator
    from vgdiag.engine.splits import TensorSplit

    class Masked(torch.nn.Module):  # class 9 is never allowed: its logit is -inf
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 10)

        def forward(self, x):
            out = self.fc(x)
            return out.masked_fill(torch.arange(10) == 9, float("-inf"))

    torch.manual_seed(0)
    x, y = torch.randn(50, 4), torch.randint(0, 9, (50,))
    model = Masked()
    evaluate = Evaluator(torch.nn.functional.cross_entropy, None, classify=True,
                         batch_size=16, device=torch.device("cpu"))
    loss, acc = evaluate(model, TensorSplit(x, y))
    with torch.no_grad():
        expected = float((model(x).argmax(1) == y).double().mean())
    assert math.isfinite(loss) and acc == pytest.approx(expected)


def test_a_run_folders_config_json_runs_the_same_run_again(tmp_path):
    # config.json records every option (files absolute): given to --recipe from another
    # folder, it trains the same model on the same data to the same numbers.
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    (src / "net.py").write_text(
        "import torch\n"
        "def build(width: int = 4):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, width),\n"
        "                               torch.nn.Tanh(), torch.nn.Linear(width, 10))\n")
    first = subprocess.run(
        [sys.executable, "-m", "vgdiag", "run", "--headless", "--model", "net.py:build",
         "--model-arg", "width=12", "--epochs", "1", "--lr", "0.05", "--out", "one"],
        cwd=src, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    config = json.loads((src / "one" / "config.json").read_text())
    recipe = config["experiment"]["recipe"]
    assert recipe["model"] == f"{src / 'net.py'}:build" and recipe["model-arg"] == ["width=12"]
    assert recipe["lr"] == 0.05 and recipe["epochs"] == 1
    again = subprocess.run(
        [sys.executable, "-m", "vgdiag", "run", "--headless", "--recipe",
         str(src / "one" / "config.json"), "--out", str(tmp_path / "two")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr

    def steps(folder: Path) -> list[dict]:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return [r["layers"] for r in map(json.loads, lines) if r["type"] == "step"]

    assert steps(src / "one") == steps(tmp_path / "two")
    layers = json.loads((tmp_path / "two" / "summary.json").read_text())["layers"]
    assert {x["name"]: x["num_params"] for x in layers}["1"] == 64 * 12 + 12  # width=12
    with_plugin = tmp_path / "p" / "config.json"
    with_plugin.parent.mkdir()
    config["experiment"]["plugins"] = ["relu"]
    with_plugin.write_text(json.dumps(config))
    refused = subprocess.run(
        [sys.executable, "-m", "vgdiag", "run", "--headless", "--recipe", str(with_plugin)],
        capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--plugin relu" in refused.stderr


def test_more_outputs_than_classes_is_said_on_stderr_and_the_run_goes_on(capsys, tmp_path):
    # The pre-flight's warnings used to be computed and dropped.
    model = tmp_path / "wide.py"
    model.write_text("import torch\n"
                     "Wide = lambda: torch.nn.Sequential(torch.nn.Flatten(), "
                     "torch.nn.Linear(64, 24))\n")
    code, out, err = cli(capsys, "inspect", "--model", f"{model}:Wide", "--json")
    assert code == 0 and json.loads(out)["layers"]
    assert "vgdiag: warning: the model outputs 24 classes but the data has 10" in err


def test_report_out_writes_through_links_and_into_pipes_never_replacing_them(capsys,
                                                                           tmp_path: Path):
    import os
    import stat
    import threading

    out_dir = tmp_path / "r"
    assert cli(capsys, "run", *FAST, "--out", str(out_dir))[0] == 0
    # A link keeps being a link; its target gets the report, with its permissions kept.
    target, link = tmp_path / "target.md", tmp_path / "link.md"
    target.write_text("old")
    target.chmod(0o640)
    link.symlink_to(target.name)
    assert cli(capsys, "report", str(out_dir), "--out", str(link))[0] == 0
    assert link.is_symlink() and target.read_text().startswith("# vgdiag report")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    # A FIFO (as /dev/null or /dev/stdout would be) is written into, not renamed over.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    assert cli(capsys, "report", str(out_dir), "--format", "json", "--out", str(fifo))[0] == 0
    reader.join(30)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert json.loads(got[0])["status"] == "completed"
    assert not list(tmp_path.glob(".*.tmp"))
    # /dev/stdout redirected to a log (`>> log`) adds to the log, keeping what it held.
    import subprocess
    import sys

    log = tmp_path / "log.txt"
    log.write_text("earlier line\n")
    with open(log, "a") as out:
        proc = subprocess.run([sys.executable, "-m", "vgdiag", "report", str(out_dir),
                               "--out", "/dev/stdout"], stdout=out, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().startswith("earlier line\n# vgdiag report")


def test_the_dashboards_refuse_to_open_without_a_terminal(tmp_path: Path):
    # A CI job or a pipe: one line and exit 2, not a dashboard drawn into the log that
    # only a signal could end.
    import subprocess
    import sys

    out_dir = tmp_path / "r"
    assert main(["run", *FAST, "--out", str(out_dir)]) == 0
    for args, instead in ((["view", str(out_dir)], f"`vgdiag report {out_dir}`"),
                          (["compare", "--tui", "--epochs", "1"], "drop --tui")):
        proc = subprocess.run([sys.executable, "-m", "vgdiag", *args], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL)
        assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
        assert proc.stderr.startswith("vgdiag: error: ") and instead in proc.stderr
        assert proc.stdout == ""
    assert not (tmp_path / "runs").exists()  # compare made no folder
