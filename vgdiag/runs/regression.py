"""`vgdiag report RUN --baseline BASE`: what got worse since a baseline run (a CI gate).

A build's run is held against the run of the branch it merges into (kept as a CI
artifact): problems the baseline already had do not fail the build, what is new or
worse does. Three kinds of regression:

- status: the run did not complete (failed, interrupted, cut off) where the baseline did,
  or diverged (non_finite) where the baseline did not;
- finding: a finding at or above the severity gate that the baseline lacks, or has at
  a lower severity;
- gradient: the first/last layer gradient ratio at the end of training (the median
  over the last sampled steps, as vanishing_gradient reads it) moved more than
  `tolerance` times toward vanishing (or, past exploding_warning, toward exploding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vgdiag.engine.records import severity_rank
from vgdiag.engine.status import RunStatus
from vgdiag.engine.thresholds import DEFAULT_THRESHOLDS
from vgdiag.inputs.options import DEFAULT_TOLERANCE
from vgdiag.runs.reader import RunData, config_value
from vgdiag.textfmt import fmt_num


@dataclass(frozen=True)
class Regression:
    kind: str  # "status" | "finding" | "gradient"
    message: str  # one line, for stderr and the report


@dataclass(frozen=True)
class BaselineComparison:
    """The run against its baseline: the regressions found and the figures compared."""

    baseline: str  # the baseline's folder
    gate: str  # the least severity a new finding must have to count
    tolerance: float
    ratio: float  # first/last layer gradient ratio at the end: the run's
    baseline_ratio: float  # ... and the baseline's
    regressions: list[Regression] = field(default_factory=list)
    # How the baseline differs from the run (data, model, layers): a wrong artifact,
    # or the change under review; said, never failed on
    differences: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "gate": self.gate, "tolerance": self.tolerance,
                "ratio_first_last": self.ratio, "baseline_ratio_first_last": self.baseline_ratio,
                "regressions": [{"kind": r.kind, "message": r.message}
                                for r in self.regressions],
                "differences": self.differences}

    def lines(self) -> list[str]:
        """What the report says: the figures, how the baseline differs, then each
        regression (or that there is none)."""
        head = (f"Against the baseline {self.baseline}: first/last layer gradient ratio "
                f"{fmt_num(self.ratio)} (baseline {fmt_num(self.baseline_ratio)}).")
        notes = [f"Note: the baseline differs: {d}." for d in self.differences]
        if not self.regressions:
            return [head, *notes, "No regression: nothing new at or above "
                    f"{self.gate}, and the ratio within {fmt_num(self.tolerance)}x."]
        return [head, *notes, *(f"Regression: {r.message}" for r in self.regressions)]


def _named(spec: Any) -> str:
    """A model or data spec without its folder: a baseline built in another checkout
    names the same file:Name under another path."""
    if not isinstance(spec, str) or not spec:
        return ""
    file, colon, name = spec.rpartition(":")
    if colon and file.endswith(".py"):
        return f"{Path(file).name}:{name}"
    return Path(spec).name if "/" in spec or "\\" in spec else spec


def differences(run: RunData, base: RunData) -> list[str]:
    """What the two runs do not share: the data, the model, the layers."""
    out = []
    for what, keys in (("data", ("data", "name")), ("model", ("experiment", "model"))):
        mine, theirs = (_named(config_value(r.config, *keys)) for r in (run, base))
        if mine and theirs and mine != theirs:
            out.append(f"{what} {theirs} there, {mine} here")
    here = {i.name: i.kind for i in run.layers}
    there = {i.name: i.kind for i in base.layers}
    # A layer is in common where its name and its kind are ("3" a Conv2d here and a
    # Linear there is not the same layer).
    common = {n for n in here.keys() & there.keys()
              if here[n] == there[n] or not (here[n] and there[n])}
    if here and there and (here.keys() != there.keys() or len(common) < len(here)):
        out.append(f"{len(common)} layers in common (name and kind) of {len(there)} there "
                   f"and {len(here)} here")
    return out


def end_ratio(run: RunData) -> float:
    """The first/last layer gradient ratio over the run's last sampled steps."""
    from vgdiag.engine.diagnosis_common import recent_ratio  # numpy, not for --help

    return recent_ratio(run.records, run.layers, DEFAULT_THRESHOLDS)


def compare_to_baseline(run: RunData, base: RunData, gate: str,
                        tolerance: float = DEFAULT_TOLERANCE) -> BaselineComparison:
    """The regressions of `run` against `base`; `gate` is the least severity of a new
    finding that counts (info, warning or error)."""
    out: list[Regression] = []
    if run.status != RunStatus.COMPLETED and base.status == RunStatus.COMPLETED:
        # failed, and also interrupted (a CI timeout), cut off (killed, out of memory)
        # or still running: a build whose run did not finish has not shown its health
        why = f": {run.error}" if run.status == RunStatus.FAILED and run.error else ""
        out.append(Regression("status", f"the run is {run.status}{why} where the baseline "
                              "completed"))
    limit = severity_rank(gate)
    before: dict[str, str] = {}  # id -> the baseline's most severe severity of it
    for b in base.findings:
        if severity_rank(b.severity) > severity_rank(before.get(b.id, b.severity)) \
                or b.id not in before:
            before[b.id] = b.severity
    for f in run.findings:
        rank = severity_rank(f.severity)
        was = before.get(f.id)
        if rank < limit or (was is not None and rank <= severity_rank(was)):
            continue
        change = f"new {f.severity}" if was is None else f"{was} became {f.severity}"
        out.append(Regression("status" if f.id == "non_finite" else "finding",
                              f"{f.id} ({change}): {f.message}"))
    ratio, base_ratio = end_ratio(run), end_ratio(base)
    if math.isfinite(ratio) and math.isfinite(base_ratio) and base_ratio > 0:
        if ratio * tolerance < base_ratio:
            out.append(Regression(
                "gradient", f"the gradient reaching the first layer fell to {fmt_num(ratio)} "
                f"of the output layer's, from {fmt_num(base_ratio)} in the baseline (more "
                f"than {fmt_num(tolerance)}x toward vanishing)"))
        elif ratio > base_ratio * tolerance and ratio > DEFAULT_THRESHOLDS.exploding_warning:
            out.append(Regression(
                "gradient", f"the gradient reaching the first layer grew to {fmt_num(ratio)}x "
                f"the output layer's, from {fmt_num(base_ratio)}x in the baseline (more than "
                f"{fmt_num(tolerance)}x toward exploding)"))
    return BaselineComparison(str(base.path), gate, tolerance, ratio, base_ratio, out,
                              differences(run, base))
