"""Plain records that flow from the engine to every front end.

They carry numbers (floats, numpy arrays), never live tensors, so a record can be
posted to another thread, pickled to another process or written as JSON.
The stat keys below are an interface for CI users: keep them stable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Per-layer statistics recorded on sampled steps. NaN means "not measured here"
# (e.g. no activation module follows the layer, or no optimizer step was seen).
LAYER_STAT_KEYS: tuple[str, ...] = (
    "grad_norm",  # L2 norm of all the layer's own parameter gradients, concatenated
    "grad_mean_abs",  # mean |g| over those gradient elements
    "weight_norm",  # L2 norm of the layer's own parameters
    "weight_change",  # ||W - W0|| / ||W0||, W0 = parameters when the probe attached
    "update_ratio",  # ||dW|| / ||W|| of the last optimizer step
    "grad_output_norm",  # L2 norm of dLoss/dOutput of the layer (gradient flowing out)
    "act_mean",  # mean of the activation that follows the layer
    "act_std",  # std of that activation
    "act_saturated",  # fraction of sigmoid/tanh outputs within SATURATION_EPS of a bound
    "act_dead",  # fraction of ReLU-family units that are zero for the whole batch
)


@dataclass(frozen=True)
class LayerInfo:
    """A layer: a module that owns parameters directly."""

    name: str  # qualified module name ("" is shown as "<root>")
    kind: str  # class name, e.g. "Linear"
    depth: int  # position from input (0) to loss, read from the backward graph
    num_params: int  # trainable and frozen parameter elements owned directly
    param_names: tuple[str, ...]  # own parameter names, e.g. ("weight", "bias")
    activation: str | None = None  # name of the activation module that follows, if seen
    fan_in: int = 0  # inputs per output unit of the weight (0: no weight matrix)
    trainable: bool = True  # False when every parameter is frozen
    used: bool = True  # False when trainable but no gradient reached it (not on the loss path)
    role: str = ""  # "embedding", "norm", "recurrent" or "" (findings treat these apart)
    normalized_after: bool = False  # a normalisation layer runs later: its scale is reset
    # Modules that apply this layer's weight too (a language model's head tied to its
    # embedding); where one runs last the layer is the output layer, at the last depth.
    tied: tuple[str, ...] = ()

    @property
    def kind_label(self) -> str:
        """The kind as the tables show it: with the modules its weight is tied to."""
        return f"{self.kind}, tied to {', '.join(self.tied)}" if self.tied else self.kind

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["param_names"] = list(self.param_names)
        out["tied"] = list(self.tied)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerInfo:
        return cls(
            name=str(data["name"]),
            kind=str(data.get("kind", "")),
            depth=int(data.get("depth", 0)),
            num_params=int(data.get("num_params", 0)),
            param_names=tuple(data.get("param_names", ())),
            activation=data.get("activation"),
            fan_in=int(data.get("fan_in", 0)),
            trainable=bool(data.get("trainable", True)),
            used=bool(data.get("used", True)),
            role=str(data.get("role", "")),
            normalized_after=bool(data.get("normalized_after", False)),
            tied=tuple(data.get("tied", ())),
        )


@dataclass
class LayerStats:
    """One layer's numbers at one sampled step (see LAYER_STAT_KEYS)."""

    grad_norm: float = math.nan
    grad_mean_abs: float = math.nan
    weight_norm: float = math.nan
    weight_change: float = math.nan
    update_ratio: float = math.nan
    grad_output_norm: float = math.nan
    act_mean: float = math.nan
    act_std: float = math.nan
    act_saturated: float = math.nan
    act_dead: float = math.nan
    # "weight" -> norm; empty when the layer did not run at that step (not measured)
    param_grad_norms: dict[str, float] = field(default_factory=dict)

    @property
    def grad_non_finite(self) -> bool:
        """The gradient was measured and is NaN or inf (a layer that did not run is NaN too)."""
        return bool(self.param_grad_norms) and not math.isfinite(self.grad_norm)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: _finite_or_none(getattr(self, k)) for k in LAYER_STAT_KEYS}
        out["param_grad_norms"] = {k: _finite_or_none(v) for k, v in self.param_grad_norms.items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerStats:
        values = {k: _none_to_nan(data.get(k)) for k in LAYER_STAT_KEYS}
        pgn = {k: _none_to_nan(v) for k, v in (data.get("param_grad_norms") or {}).items()}
        return cls(**values, param_grad_norms=pgn)


@dataclass
class Histogram:
    """Counts over equal-width bins between lo and hi (values outside are clamped in)."""

    lo: float
    hi: float
    counts: np.ndarray  # int64, one per bin

    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, len(self.counts) + 1)

    def to_json(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi, "counts": [int(c) for c in self.counts]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        return cls(float(data["lo"]), float(data["hi"]), np.asarray(data["counts"], np.int64))


HIST_KINDS = ("weight", "grad")  # StepRecord.hists(kind): weights, log10|grad|


@dataclass
class StepRecord:
    """Everything the probe measured on one sampled optimizer step."""

    step: int  # global optimizer step, 0-based
    epoch: int  # 1-based epoch the step belongs to (0 when outside a trainer)
    loss: float  # training loss of that step's batch (NaN when not given to the probe)
    layers: dict[str, LayerStats]  # in depth order
    weight_hist: dict[str, Histogram] = field(default_factory=dict)  # on histogram steps
    grad_hist: dict[str, Histogram] = field(default_factory=dict)  # log10|grad| histograms
    # ||dLoss/dx_t|| per time step t at each recurrent module's input, earliest first
    time_grad: dict[str, list[float]] = field(default_factory=dict)

    def series(self, key: str) -> np.ndarray:
        """One stat across layers, in depth order."""
        return np.array([getattr(s, key) for s in self.layers.values()], dtype=np.float64)

    def hists(self, kind: str) -> dict[str, Histogram]:
        """The histograms of one of HIST_KINDS by layer: "weight" (weights) or "grad"
        (log10|grad|); the record's own dict, so adding to it adds to the record."""
        if kind == "weight":
            return self.weight_hist
        if kind == "grad":
            return self.grad_hist
        raise ValueError(f"unknown histogram kind {kind!r}: use one of {', '.join(HIST_KINDS)}")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "step",
            "step": self.step,
            "epoch": self.epoch,
            "loss": _finite_or_none(self.loss),
            "layers": {n: s.to_json() for n, s in self.layers.items()},
        }
        if self.weight_hist:
            out["weight_hist"] = {n: h.to_json() for n, h in self.weight_hist.items()}
        if self.grad_hist:
            out["grad_hist"] = {n: h.to_json() for n, h in self.grad_hist.items()}
        if self.time_grad:
            out["time_grad"] = {n: [_finite_or_none(v) for v in vs]
                                for n, vs in self.time_grad.items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRecord:
        return cls(
            step=int(data["step"]),
            epoch=int(data.get("epoch", 0)),
            loss=_none_to_nan(data.get("loss")),
            layers={n: LayerStats.from_json(s) for n, s in data["layers"].items()},
            weight_hist={
                n: Histogram.from_json(h) for n, h in (data.get("weight_hist") or {}).items()
            },
            grad_hist={n: Histogram.from_json(h) for n, h in (data.get("grad_hist") or {}).items()},
            time_grad={n: [_none_to_nan(v) for v in vs]
                       for n, vs in (data.get("time_grad") or {}).items()},
        )


@dataclass
class EpochRecord:
    """Loss and accuracy after one epoch; losses and accuracies are per-sample means."""

    epoch: int  # 1-based, counted across stages
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float  # wall time of the epoch (training and validation)
    steps: int  # global optimizer steps done by the end of the epoch
    stage: str = ""  # stage name for staged schedules (layer-wise training)

    def to_json(self) -> dict[str, Any]:
        out = {
            k: (_finite_or_none(v) if isinstance(v, float) else v)
            for k, v in asdict(self).items()
        }
        out["type"] = "epoch"
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EpochRecord:
        return cls(
            epoch=int(data["epoch"]),
            train_loss=_none_to_nan(data.get("train_loss")),
            train_acc=_none_to_nan(data.get("train_acc")),
            val_loss=_none_to_nan(data.get("val_loss")),
            val_acc=_none_to_nan(data.get("val_acc")),
            seconds=_none_to_nan(data.get("seconds")),
            steps=int(data.get("steps", 0)),
            stage=str(data.get("stage", "")),
        )


SEVERITIES = ("info", "warning", "error")


@dataclass
class Finding:
    """One diagnosis: what is wrong, where, the numbers behind it, and what fixes it."""

    id: str  # stable identifier, e.g. "vanishing_gradient"
    severity: str  # "error" | "warning" | "info"
    layers: list[str]  # layers involved, depth order
    evidence: dict[str, Any]  # the numbers the finding rests on
    message: str  # one sentence for a person
    recommend: list[str] = field(default_factory=list)  # plugin names that address it

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity,
            "layers": list(self.layers),
            "evidence": jsonable(self.evidence),
            "message": self.message,
            "recommend": list(self.recommend),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        return cls(
            id=str(data["id"]),
            severity=str(data["severity"]),
            layers=list(data.get("layers", [])),
            evidence=dict(data.get("evidence", {})),
            message=str(data.get("message", "")),
            recommend=list(data.get("recommend", [])),
        )


def severity_rank(severity: str) -> int:
    """0 for info, 1 warning, 2 error; unknown severities rank as info."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


def _finite_or_none(x: float) -> float | None:
    # JSON has no NaN: null stands for it ("not measured" or NaN). +-inf stay floats,
    # which runs.folder.dumps writes as +-1e999 (strict JSON, read back as inf);
    # non-finite values are also reported as findings, so nothing is lost by the NaN
    # mapping.
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _none_to_nan(x: Any) -> float:
    return math.nan if x is None else float(x)


def jsonable(value: Any) -> Any:
    """`value` as JSON can hold it: numpy numbers as floats, NaN as null, paths as text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return None if math.isnan(f) else f
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


_jsonable = jsonable  # the name older modules import
