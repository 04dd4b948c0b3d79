"""Every plugin's default learns where the baseline cannot: real training, short budgets.

The built-in 7-layer sigmoid MLP at PyTorch's default init with plain SGD stays at
chance on the bundled digits and on the generated 28x28 strokes (a harder stand-in for
handwritten digits, black background like MNIST's) within these budgets; each fix,
applied with no options, must learn clearly better. One comparison per dataset, all
variants with the same seed, data order and budget.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vgdiag.inputs.recipe import RunOptions
from vgdiag.plugin_api import discover_plugins
from vgdiag.runs.compare import VariantState, build_specs, compare_variants
from vgdiag.runs.compare_table import comparison_rows

STROKES = str(Path(__file__).resolve().parents[1] / "sample_models" / "strokes_data.py")
BUDGET = {"epochs": 30, "batch_size": 16, "lr": 0.1, "width": 32, "every": 50}
DATASETS = {"digits": "digits", "strokes": f"{STROKES}:make_small"}
CLEAR_MARGIN = 0.15  # validation accuracy above the baseline's that counts as clearly better
CHANCE = 0.1

pytestmark = pytest.mark.slow  # two comparisons of 8 variants: about a minute on 2 cores


@pytest.fixture(scope="module", params=list(DATASETS))
def rows(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    opts = RunOptions(data=DATASETS[request.param], **BUDGET)
    plugins = [n for n, p in discover_plugins()[0].items() if p.origin.endswith("(built-in)")]
    outcomes = compare_variants(opts, build_specs(plugins), tmp_path_factory.mktemp("learn"),
                                jobs=2)
    assert all(o.state is VariantState.DONE for o in outcomes), [
        (o.name, o.state, o.reason) for o in outcomes]
    return request.param, {r["variant"]: r for r in comparison_rows(outcomes, 0.5)}


def test_the_baseline_stays_at_chance(rows) -> None:
    _, table = rows
    assert table["baseline"]["val_acc"] < CHANCE + 0.08
    assert table["baseline"]["learned"] == "at chance"


# Adam at lr 1e-3 from PyTorch's default init drives the strokes' sigmoid layers into
# saturation (the saturated_activations finding) before they learn in this short
# budget; on digits it learns. Strict: the day it learns here, this must be revisited.
ADAM_ON_STROKES = "adam's default stays near chance on strokes within the short budget"


@pytest.mark.parametrize("plugin", ["weight-init", "relu", "adam", "batchnorm", "skip",
                                    "layerwise", "gradnorm"])
def test_each_default_learns_clearly_better_than_the_baseline(rows, plugin: str,
                                                              request) -> None:
    dataset, table = rows
    if (dataset, plugin) == ("strokes", "adam"):
        request.applymarker(pytest.mark.xfail(reason=ADAM_ON_STROKES, strict=True))
    base, row = table["baseline"], table[plugin]
    assert row["val_acc"] >= base["val_acc"] + CLEAR_MARGIN, (dataset, row["val_acc"])
    assert row["test_acc"] >= base["test_acc"] + CLEAR_MARGIN, (dataset, row["test_acc"])
    assert row["learned"] in ("partly", "learned")
    # The same data budget: every variant saw the same samples (layer-wise in more steps).
    assert row["samples"] == base["samples"]
