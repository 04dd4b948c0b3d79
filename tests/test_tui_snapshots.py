"""SVG snapshots of the dashboard's screens, built through the same factory as `vgdiag view`.

The run folders are written by hand (through RunStore, from fixed numbers): no
training, no clock, no version string, so the pictures are the same on any machine.
Regenerate after a deliberate change with `pytest tests/test_tui_snapshots.py
--snapshot-update` and look at the SVGs before committing them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from vgdiag.engine.events import EpochEnded, RunFinished, RunStarted, StageStarted, StepSampled
from vgdiag.engine.records import EpochRecord, Finding, Histogram, LayerInfo, LayerStats, StepRecord
from vgdiag.runs.store import RunStore, read_run
from vgdiag.tui.app import build_app
from vgdiag.tui.dashboard import VgdiagApp
from vgdiag.tui.screens.fix_picker import FixChoice, FixPicker

LAYERS = [
    LayerInfo("net.1", "Linear", 0, 4160, ("weight", "bias"), "Sigmoid", 64),
    LayerInfo("net.3", "Linear", 1, 4160, ("weight", "bias"), "Sigmoid", 64),
    LayerInfo("net.5", "Linear", 2, 4160, ("weight", "bias"), "Sigmoid", 64),
    LayerInfo("net.7", "Linear", 3, 650, ("weight", "bias"), None, 64),
]
STEPS_PER_EPOCH = 50
EPOCHS = 4


def _hist(lo: float, hi: float, centre: float, width: float, bins: int = 40) -> Histogram:
    x = np.linspace(lo, hi, bins)
    counts = np.round(1000 * np.exp(-0.5 * ((x - centre) / width) ** 2)).astype(np.int64)
    return Histogram(lo, hi, counts)


def _findings(fixed: bool) -> list[Finding]:
    if fixed:
        return []
    return [
        Finding("loss_stalled", "error", [], {"loss": 2.3021, "ln_classes": math.log(10),
                                              "stalled_for": 3},
                "Training has stalled: the loss 2.3021 sits within 1% of ln(10) = 2.3026, "
                "the loss of guessing, for 3 epochs.", ["adam", "weight-init", "relu"]),
        Finding("vanishing_gradient", "error", ["net.1", "net.3"],
                {"ratio_first_last": 2.0e-4, "grad_norm": {"net.1": 6e-5, "net.3": 5e-4,
                                                           "net.5": 4e-3, "net.7": 0.3}},
                "The gradient vanishes toward the input: the first layer gets 0.0002 of the "
                "output layer's gradient norm.", ["weight-init", "relu", "batchnorm", "adam"]),
    ]


def write_run(folder: Path, *, fixed: bool = False, name: str = "mlp-sigmoid-d3") -> Path:
    """A 4-epoch run: vanishing gradients and a stalled loss, or (fixed) a healthy one."""
    decay = 0.6 if fixed else 8.0  # gradient divided by this per layer toward the input
    with RunStore(folder, name=name, num_classes=10) as store:
        config = {
            "device": "cpu",
            "experiment": {"name": name, "model": "builtin:mlp depth=3 width=64 "
                           f"activation={'relu' if fixed else 'sigmoid'}", "plugins": []},
            "data": {"name": "digits", "num_classes": 10},
            "stages": [{"name": "train", "epochs": EPOCHS}],
            "steps_per_epoch": STEPS_PER_EPOCH,
        }
        store.handle(RunStarted(config, STEPS_PER_EPOCH, EPOCHS))
        store.handle(StageStarted(0, "train", EPOCHS, [i.name for i in LAYERS]))
        for step in range(0, STEPS_PER_EPOCH * EPOCHS, 10):
            t = step / (STEPS_PER_EPOCH * EPOCHS)
            out = 0.3 * (1.0 - 0.5 * t)
            layers = {}
            for info in LAYERS:
                depth_from_out = len(LAYERS) - 1 - info.depth
                g = out / decay ** depth_from_out * (1.0 + 0.1 * math.sin(step / 7 + info.depth))
                layers[info.name] = LayerStats(
                    grad_norm=g, grad_mean_abs=g / 40, weight_norm=2.0 + t * 0.1,
                    weight_change=0.05 * t / decay ** depth_from_out, update_ratio=g * 3e-3,
                    act_saturated=0.0 if fixed else 0.2 + 0.1 * info.depth,
                    act_dead=0.1 if fixed else math.nan)
            hist_step = step in (0, 100, 190)
            weight_hist = {
                i.name: _hist(-0.3, 0.3, 0.0, 0.06 + 0.04 * t * (2 if fixed else 0.2))
                for i in LAYERS
            } if hist_step else {}
            grad_hist = {
                i.name: _hist(-12.0, 0.0, -4.0 - 2 * (3 - i.depth) * (0.3 if fixed else 1.0), 1.0)
                for i in LAYERS
            } if hist_step else {}
            loss = (2.31 - 1.5 * t) if fixed else 2.305 - 0.003 * t
            record = StepRecord(step, step // STEPS_PER_EPOCH + 1, loss, layers, weight_hist,
                                grad_hist)
            store.handle(StepSampled(record, LAYERS, step + 1, step / 100))
            if (step + 10) % STEPS_PER_EPOCH == 0:
                epoch = (step + 10) // STEPS_PER_EPOCH
                e = epoch / EPOCHS
                acc = 0.1 + (0.8 * e if fixed else 0.01 * e)
                store.handle(EpochEnded(EpochRecord(
                    epoch, loss + 0.01, acc, loss, acc + 0.02, 0.5, epoch * STEPS_PER_EPOCH,
                    "train"), _findings(fixed)))
        store.handle(RunFinished("completed", LAYERS, {"loss": loss, "acc": acc},
                                 _findings(fixed), 2.0, STEPS_PER_EPOCH * EPOCHS))
    return folder


@pytest.fixture
def saved_app(tmp_path: Path) -> VgdiagApp:
    return build_app(run=read_run(write_run(tmp_path / "run")), title="vgdiag view")


def test_gradients(snap_compare, saved_app: VgdiagApp) -> None:  # noqa: ANN001
    assert snap_compare(saved_app, terminal_size=(80, 24))


def test_gradients_wide(snap_compare, saved_app: VgdiagApp) -> None:  # noqa: ANN001
    assert snap_compare(saved_app, terminal_size=(160, 44))


def test_gradients_16_colours(snap_compare, saved_app: VgdiagApp) -> None:  # noqa: ANN001
    saved_app.theme = "ansi-dark"
    assert snap_compare(saved_app, terminal_size=(80, 24))


def test_layers_with_a_selected_layer(snap_compare, saved_app: VgdiagApp) -> None:  # noqa: ANN001
    assert snap_compare(saved_app, press=["2", "down"], terminal_size=(80, 24))


def test_training_curves(snap_compare, saved_app: VgdiagApp) -> None:  # noqa: ANN001
    assert snap_compare(saved_app, press=["3"], terminal_size=(80, 24))


def test_findings(snap_compare, saved_app: VgdiagApp) -> None:  # noqa: ANN001
    assert snap_compare(saved_app, press=["4"], terminal_size=(80, 24))


def test_help(snap_compare, saved_app: VgdiagApp) -> None:  # noqa: ANN001
    assert snap_compare(saved_app, press=["question_mark"], terminal_size=(80, 24))


def test_fix_picker(snap_compare, saved_app: VgdiagApp) -> None:  # noqa: ANN001
    choices = [
        FixChoice("weight-init", "re-initialise weights larger", None, True),
        FixChoice("relu", "replace saturating activations with ReLU", None, True),
        FixChoice("adam", "train with Adam instead of SGD", "already uses Adam", False),
    ]

    async def open_picker(pilot) -> None:  # noqa: ANN001
        saved_app.push_screen(FixPicker(choices))
        await pilot.pause()

    assert snap_compare(saved_app, terminal_size=(80, 24), run_before=open_picker)


def test_before_after(snap_compare, tmp_path: Path) -> None:  # noqa: ANN001
    before = read_run(write_run(tmp_path / "run"))
    after = read_run(write_run(tmp_path / "run-relu", fixed=True, name="mlp-sigmoid-d3-relu"))
    app = build_app(run=before, compare_with=[after], title="vgdiag compare")
    assert snap_compare(app, terminal_size=(80, 24))
