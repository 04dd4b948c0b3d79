"""The dashboard's panels; each draws from an immutable RunView snapshot."""

from vgdiag.tui.widgets.findings import FindingsView
from vgdiag.tui.widgets.gradient_bars import GradientBars
from vgdiag.tui.widgets.header import RunHeader
from vgdiag.tui.widgets.heatmap import GradientHeatmap
from vgdiag.tui.widgets.histograms import LayerHistogramsPanel
from vgdiag.tui.widgets.layer_table import LayerTable
from vgdiag.tui.widgets.over_time import (
    ActivationsPanel,
    DistributionMaps,
    TimeGradPlot,
    UpdatesPanel,
)
from vgdiag.tui.widgets.plot import LinePlot, Series
from vgdiag.tui.widgets.training_curves import TrainingCurves

__all__ = [
    "ActivationsPanel",
    "DistributionMaps",
    "FindingsView",
    "GradientBars",
    "GradientHeatmap",
    "LayerHistogramsPanel",
    "LayerTable",
    "LinePlot",
    "RunHeader",
    "Series",
    "TimeGradPlot",
    "TrainingCurves",
    "UpdatesPanel",
]
