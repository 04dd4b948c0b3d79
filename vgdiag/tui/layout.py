"""What the dashboard's tabs hold, and the terminal sizes from which panels move.

The stylesheet (vgdiag.tcss) places the panels by the ids given here and by the
app's size classes: `-wide` from WIDE_WIDTH columns, `-tall` from TALL_HEIGHT rows.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Container, VerticalScroll
from textual.widgets import TabbedContent, TabPane

from vgdiag.tui.widgets import (
    ActivationsPanel,
    DistributionMaps,
    FindingsView,
    GradientBars,
    GradientHeatmap,
    LayerHistogramsPanel,
    LayerTable,
    TimeGradPlot,
    TrainingCurves,
    UpdatesPanel,
)

WIDE_WIDTH = 120  # from here panels stand side by side
TALL_HEIGHT = 40
# The tabs in key order (1, 2, ...): id, title, what the key's tooltip says.
TABS: dict[str, tuple[str, str]] = {
    "gradients": ("Gradients", "Gradient flow: per-layer bars and the map over time"),
    "layers": ("Layers", "Layer table and the selected layer's histograms"),
    "distributions": ("Distributions", "The selected layer's weights and log10|grad| over time"),
    "updates": ("Updates", "Update ÷ weight over time, against the 1e-3 rule of thumb"),
    "activations": ("Activations",
                    "Saturated activations per layer; the selected one's mean and std"),
    "training": ("Training", "Loss and accuracy curves, train and validation"),
    "findings": ("Findings", "The diagnosis and the fixes it recommends"),
}
# The panels that draw the run (some appear twice: a tall terminal shows an overview
# on the first tab), and those that draw the selected layer. The layer table is
# filled apart: only while its tab is shown.
RUN_PANELS = ("RunHeader, GradientBars, GradientHeatmap, LayerHistogramsPanel, TrainingCurves, "
              "FindingsView, DistributionMaps, UpdatesPanel, ActivationsPanel, TimeGradPlot")
LAYER_PANELS = ("GradientBars, LayerHistogramsPanel, DistributionMaps, UpdatesPanel, "
                "ActivationsPanel")


def size_classes(width: int, height: int) -> dict[str, bool]:
    """The app's size classes for a terminal of `width` x `height`."""
    return {"-wide": width >= WIDE_WIDTH, "-tall": height >= TALL_HEIGHT}


def compose_tabs() -> ComposeResult:
    """The tabs and their panels (the header and the footer are the app's)."""
    with TabbedContent(initial="gradients", id="tabs"):
        with TabPane(TABS["gradients"][0], id="gradients"), Container(id="gradients-body"):
            with Container(id="flow-row"):
                with VerticalScroll(id="bars-scroll"):
                    yield GradientBars(id="bars")
                yield GradientHeatmap(id="heatmap")
            yield TimeGradPlot(id="time-grad")  # recurrent models only
            # Shown on a tall terminal: the whole story on one screen.
            with Container(id="overview-row"):
                yield TrainingCurves(id="overview-curves")
                with VerticalScroll(id="overview-findings"):
                    yield FindingsView()
        with TabPane(TABS["layers"][0], id="layers"), Container(id="layers-body"):
            yield LayerTable(id="layer-table")
            yield LayerHistogramsPanel(id="histograms")
        with TabPane(TABS["distributions"][0], id="distributions"):
            yield DistributionMaps(id="distribution-maps")
        with TabPane(TABS["updates"][0], id="updates"):
            yield UpdatesPanel(id="updates-panel")
        with TabPane(TABS["activations"][0], id="activations"):
            yield ActivationsPanel(id="activations-panel")
        with TabPane(TABS["training"][0], id="training"):
            yield TrainingCurves(id="curves")
        with TabPane(TABS["findings"][0], id="findings"), VerticalScroll(id="findings-scroll"):
            yield FindingsView(id="findings-view")
