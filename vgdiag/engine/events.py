"""The one event stream: the trainer yields these, every front end consumes them.

Sinks (run store, headless progress, the dashboard, compare) see the same sequence:
RunStarted, then any number of StageStarted / StepSampled / EpochEnded, then exactly
one of RunFinished or RunFailed (RunFinished also covers an interrupted run). Once
RunStarted was sent, anything the user's code raises ends the stream with RunFailed.
`vgdiag.engine.summary.RunSummary` is the one fold of this stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vgdiag.engine.records import EpochRecord, Finding, LayerInfo, StepRecord
from vgdiag.engine.status import RunStatus


@dataclass
class RunStarted:
    config: dict[str, Any]  # JSON-able description of what is being run (config.json)
    steps_per_epoch: int
    total_epochs: int  # over all stages


@dataclass
class StageStarted:
    index: int  # 0-based
    name: str
    epochs: int
    trainable: list[str]  # names of the layers whose parameters this stage trains


@dataclass
class StepSampled:
    record: StepRecord
    layers: list[LayerInfo]  # layers known so far, depth order
    steps_done: int  # optimizer steps done so far (for progress and throughput)
    seconds: float  # wall time since training started


@dataclass
class StepProgress:
    """Sent at most a few times a second between samples, for progress bars."""

    epoch: int
    steps_done: int
    seconds: float


@dataclass
class EpochEnded:
    record: EpochRecord
    findings: list[Finding]  # diagnosis of the history so far
    # plugins that cannot apply to the model (not advised); kept in summary.json so a
    # folder diagnosed again (cut off, followed) advises the same
    not_applicable: list[str] = field(default_factory=list)


@dataclass
class RunFinished:
    status: RunStatus  # COMPLETED, or INTERRUPTED (a signal or the user stopped it)
    layers: list[LayerInfo]
    test: dict[str, float] | None  # {"loss": .., "acc": ..}; None when interrupted early
    findings: list[Finding]
    seconds: float
    steps_done: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunFailed:
    error: str  # one line: exception type and message, and where in the user's code
    traceback: str
    layers: list[LayerInfo]
    findings: list[Finding]
    seconds: float
    steps_done: int


Event = (
    RunStarted | StageStarted | StepSampled | StepProgress | EpochEnded | RunFinished | RunFailed
)
