"""Every option of the command line, declared once as dataclass fields.

A field carries its type, default and help (`opt(...)`); the CLI writes each command's
signature from the fields it takes (vgdiag.cli.options_typer), a TOML recipe is
RunOptions read from a file, and `compare --jobs` workers rebuild the run from the
picklable RunOptions. Choices are Enums, so a bad value is refused by its type. This
module imports no torch: `vgdiag --help` is built from it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, cast

import tomllib

from vgdiag.engine.defaults import DEFAULT_EVERY, DEFAULT_HIST_EVERY, Activation, Optimizer
from vgdiag.errors import UserError

BUILTIN_MLP = "builtin:mlp"
MAX_SEED = 2**32 - 1  # the range every seeded library accepts (numpy's is the narrowest)
# The largest --lr: far past any useful step size (1e4 already diverges at once), and
# far inside float32 (3.4e38): optimizers scale lr (Adam's first step by 10) in float32.
MAX_LR = 1e6  # the message says 1e6 (":g" would write 1e+06)
# report --baseline: an order of magnitude; seeds and hardware move the ratio less
DEFAULT_TOLERANCE = 10.0


class FailOn(StrEnum):
    """--fail-on: the lowest finding severity that makes the exit code 1."""

    none = "none"
    info = "info"  # the severities are engine.records.SEVERITIES, in order
    warning = "warning"
    error = "error"


class ReportFormat(StrEnum):
    md = "md"
    html = "html"
    json = "json"


def opt(default: Any = None, help: str = "", *, flags: tuple[str, ...] = (),
        default_text: str | None = None, argument: bool = False, factory: Any = None) -> Any:
    """A dataclass field that is also a command-line option.

    Args:
        default: the value when the option is not given.
        help: one sentence for `--help`.
        flags: the option's names when they differ from the field's (`--model`, `-m`).
        default_text: what `--help` shows as the default when the value alone does not
            say it (a default that depends on other options).
        argument: a positional argument instead of an option.
        factory: a default factory (lists).
    """
    metadata = {"help": help, "flags": flags, "default_text": default_text,
                "argument": argument}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class RunOptions:
    """Everything that describes one training run, with the CLI's defaults."""

    model: str = opt(BUILTIN_MLP, "builtin:mlp, path/to/file.py:Name, package.module:Name, "
                     "or a TorchScript .pt/.ts.", flags=("--model", "-m"))
    model_args: list[str] = opt(help="key=value passed to the model's class or factory "
                                "(repeatable).", flags=("--model-arg",), factory=list,
                                default_text="none")
    weights: Path | None = opt(None, "A state dict to load onto the model (read with "
                               "weights_only=True).", default_text="none")
    trust_pickle: bool = opt(False, "Allow loading a fully pickled model. Unpickling runs "
                             "arbitrary code from the file: use it only for files you trust.")
    depth: int = opt(7, "Hidden layers of the built-in MLP.")
    width: int = opt(128, "Units per hidden layer of the built-in MLP.")
    activation: Activation = opt(Activation.sigmoid, "Built-in MLP activation.")
    init: str = opt("default", "default | normal:STD | xavier | he.")
    data: str = opt("digits", "digits | fashion-mnist | mnist | cifar10 | synthetic, or "
                    "file.py:factory.")
    data_dir: Path | None = opt(None, "Folder with the MNIST-family IDX files or the CIFAR-10 "
                                "batches (downloaded there if absent).",
                                default_text="the cache folder")
    synthetic_size: int = opt(6000, "Samples of the synthetic dataset.")
    loss: str = opt("cross-entropy", "cross-entropy | mse | l1 | bce-with-logits | file.py:fn.")
    output_key: str | None = opt(None, "For models returning a dict or tuple: the key or "
                                 "index of the prediction.", default_text="the output itself")
    optimizer: Optimizer = opt(Optimizer.sgd, "Optimizer.")
    lr: float | None = opt(None, "Learning rate.",
                           default_text="adam 1e-3; sgd 0.01 as in the reference, 0.1 on digits")
    epochs: int | None = opt(None, "Epochs.",
                             default_text="synthetic 10, else 100")
    batch_size: int | None = opt(None, "Batch size.",
                                 default_text="digits 16, synthetic 64, else 512")
    seed: int = opt(42, "Seeds model init, data split and data order.")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N.")
    every: int = opt(DEFAULT_EVERY, "Sample statistics every N-th step (step 0 always).")
    hist_every: int = opt(DEFAULT_HIST_EVERY, "Histograms on every N-th sampled step "
                          "(0 turns them off).")
    keep_going: bool = opt(False, "Go on training after a NaN/inf loss or gradient instead "
                           "of stopping.")
    threads: int = opt(0, "PyTorch CPU threads; 0 = automatic: 1 for models under 10M "
                       "parameters, whose kernels are too small to gain from more, else "
                       "PyTorch's default.")

    def __post_init__(self) -> None:
        coerce_choices(self, strict=False)  # validate() refuses what is left a plain string

    def validate(self) -> None:
        """UserError for values that make no sense, before anything is loaded."""
        self.check_values()
        from vgdiag.inputs.recipe import check_model_and_data  # torch: only when running

        check_model_and_data(self)

    def check_values(self) -> None:
        """validate()'s checks of the values alone, which every process given the same
        command line finds alike (torchrun's ranks: vgdiag.torchrun_env)."""
        checks: list[tuple[bool, str]] = [
            (self.depth >= 1, f"--depth must be at least 1, got {self.depth}"),
            (self.width >= 1, f"--width must be at least 1, got {self.width}"),
            (self.every >= 1, f"--every must be a positive integer, got {self.every}"),
            (0 <= self.seed <= MAX_SEED,
             f"--seed must be between 0 and {MAX_SEED} (2**32 - 1), got {self.seed}"),
            (self.hist_every >= 0, f"--hist-every must be 0 (off) or more, got {self.hist_every}"),
            (self.epochs is None or self.epochs >= 1,
             f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size is None or self.batch_size >= 1,
             f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.lr is None or (math.isfinite(self.lr) and 0 < self.lr <= MAX_LR),
             f"--lr must be a positive number no larger than 1e6, got {self.lr}"),
            (self.threads >= 0,
             f"--threads must be 0 (automatic) or more, got {self.threads}"),
            (self.synthetic_size >= 10,
             f"--synthetic-size must be at least 10, got {self.synthetic_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        self._refuse_ignored()
        coerce_choices(self)  # fields may have been assigned after construction

    def _refuse_ignored(self) -> None:
        """An option set to something it would silently not do is a mistake to report."""
        default = type(self)()
        if not self.is_builtin:
            advice = {
                "depth": "pass your model's own arguments with --model-arg",
                "width": "pass your model's own arguments with --model-arg",
                "activation": "--plugin relu swaps your model's activations",
                "init": "--plugin weight-init re-initialises your model "
                        "(--plugin-opt weight-init.scheme=...)",
            }
            for name, what in advice.items():
                if getattr(self, name) != getattr(default, name):
                    raise UserError(f"--{name} applies to the built-in MLP only, not to "
                                    f"--model {self.model}: {what}")
        elif self.model_args:  # the built-in MLP has flags of its own, which say so
            key, _, value = (part.strip() for part in self.model_args[0].partition("="))
            flag = f"--{key.replace('_', '-')} {value}"
            hint = (f"give {flag} instead" if key in ("depth", "width", "activation", "init")
                    else "its options are --depth, --width, --activation and --init")
            raise UserError(f"--model-arg {self.model_args[0]} applies to a model of your own "
                            f"(--model FILE.py:NAME), not the built-in MLP: {hint}")
        if self.data_dir is not None and self.data_dir.exists() and not self.data_dir.is_dir():
            raise UserError(f"--data-dir {self.data_dir} is a file: give the folder that "
                            "holds the dataset's files")
        if self.data_dir is not None and self.data not in ("mnist", "fashion-mnist", "cifar10"):
            raise UserError(f"--data-dir applies to --data mnist, fashion-mnist and cifar10, "
                            f"not {self.data}: drop it, or choose one of those")
        if self.synthetic_size != default.synthetic_size and self.data != "synthetic":
            raise UserError(f"--synthetic-size applies to --data synthetic, not {self.data}")

    @property
    def is_builtin(self) -> bool:
        return self.model == BUILTIN_MLP

    def as_recipe(self) -> dict[str, Any]:
        """Every option as a recipe's keys (the flags' names), for config.json: that file
        given to `--recipe` runs the same thing again. Files are written absolute, so
        the recipe works from any folder; options left unset (None) are left out."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, Path):
                value = str(value.expanduser().resolve())
            elif f.name in ("model", "data", "loss"):
                value = _absolute_spec(value)
            out[flag_name(f).lstrip("-")] = list(value) if isinstance(value, list) else value
        return out

    def name(self) -> str:
        if self.is_builtin:
            return f"mlp-{self.activation}-d{self.depth}"
        return Path(self.model.split(":")[-1]).stem or "model"


# A --model that names a saved model (TorchScript or a pickled nn.Module), any case.
SAVED_MODEL_SUFFIXES = (".pt", ".pth", ".ts")


def _absolute_spec(spec: str) -> str:
    """`file.py:Name` with the file made absolute; any other spec as it is."""
    file, colon, name = spec.rpartition(":")
    if colon and file.endswith(".py") and Path(file).expanduser().exists():
        return f"{Path(file).expanduser().resolve()}:{name}"
    if spec.lower().endswith(SAVED_MODEL_SUFFIXES) and Path(spec).expanduser().exists():
        return str(Path(spec).expanduser().resolve())
    return spec


# Training options `inspect` has no use for: it runs one batch at initialisation.
TRAINING_ONLY = ("optimizer", "lr", "epochs", "every", "hist_every", "keep_going", "threads")


def _fail_on() -> Any:
    return opt(FailOn.none, "Exit 1 when a finding is at or above this severity.")


def _run_dir() -> Any:
    return opt(dataclasses.MISSING, "A run folder written by `vgdiag run`.", argument=True)


def _plugin_opt() -> Any:
    return opt(help="PLUGIN.OPTION=VALUE, e.g. weight-init.std=1.0 (repeatable; see "
               "`vgdiag plugins`).", flags=("--plugin-opt",), factory=list, default_text="none")


@dataclass
class RunCommandOptions:
    """What `vgdiag run` takes besides RunOptions."""

    out: Path | None = opt(None, "Run folder.",
                           default_text="runs/<timestamp>-<name> (a new folder)")
    headless: bool = opt(False, "No dashboard: progress bar and tables (the default off a "
                         "terminal).")
    fail_on: FailOn = _fail_on()
    plugin: list[str] = opt(help="Apply a mitigation plugin before training (repeatable, "
                            "applied in order; see `vgdiag plugins`).", flags=("--plugin", "-p"),
                            factory=list, default_text="none")
    plugin_opt: list[str] = _plugin_opt()
    fsdp: bool = opt(False, "Under torchrun: shard the parameters with FSDP2 (fully_shard) "
                     "instead of replicating them with DDP.", default_text="off")

    def __post_init__(self) -> None:
        coerce_choices(self)


@dataclass
class InspectOptions:
    """What `vgdiag inspect` takes besides RunOptions."""

    json_out: bool = opt(False, "Print the result as JSON.", flags=("--json",),
                         default_text="off")
    fail_on: FailOn = _fail_on()

    def __post_init__(self) -> None:
        coerce_choices(self)


@dataclass
class CompareOptions:
    """What `vgdiag compare` takes besides RunOptions."""

    plugins: str = opt("all", "'all' or a comma-separated list of plugin names.",
                       flags=("--plugins",))
    plugin_opt: list[str] = _plugin_opt()
    jobs: int = opt(1, "Variants trained in parallel processes (they share the GPU if any).")
    target_acc: float = opt(0.8, "Validation accuracy whose first epoch the table reports.")
    out: Path | None = opt(None, "Folder for compare.json/md/html and one run folder per "
                           "variant.", default_text="runs/<timestamp>-compare (a new folder)")
    tui: bool = opt(False, "Watch the variants train in the dashboard and open each against "
                    "the baseline.")
    fail_on: FailOn = _fail_on()
    preset: str | None = opt(None, "A named bundle of options and variants: reference (the "
                             "experiment in the docs, REFERENCE_RESULTS.md); options given here "
                             "override it.", default_text="none")
    seeds: int = opt(1, "Seeds per variant (init and data order; the split stays): mean ± "
                     "std, a gain is clear only beyond the spread.")

    def __post_init__(self) -> None:
        coerce_choices(self)


@dataclass
class ReportOptions:
    """What `vgdiag report` takes."""

    run_dir: Path = _run_dir()
    format: ReportFormat = opt(ReportFormat.md, "Output format.", flags=("--format", "-f"))
    out: Path | None = opt(None, "Write here instead of stdout.", default_text="stdout")
    fail_on: FailOn = _fail_on()
    baseline: Path | None = opt(
        None, "A baseline run folder (e.g. the main branch's): exit 1 only on what got "
        "worse since it (failed or diverged; a new finding at or above --fail-on, or "
        "warning; the gradient ratio moved past --tolerance).", default_text="none")
    tolerance: float = opt(DEFAULT_TOLERANCE, "With --baseline: how many times the "
                           "first/last layer gradient ratio may move before it is a regression.")

    def __post_init__(self) -> None:
        coerce_choices(self)
        if not (math.isfinite(self.tolerance) and self.tolerance >= 1):
            raise UserError(f"--tolerance must be a number of at least 1, got {self.tolerance}")


def field_types(cls: type) -> dict[str, Any]:
    """The fields' resolved types (this module uses postponed annotations)."""
    return typing.get_type_hints(cls)


def choice_type(annotation: Any) -> type[Enum] | None:
    """The Enum inside `E` or `E | None`, else None."""
    candidates = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (
        annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, Enum):
            return candidate
    return None


def flag_name(f: dataclasses.Field[Any]) -> str:
    """The option's long name as the user types it."""
    flags = [x for x in f.metadata.get("flags", ()) if x.startswith("--")]
    return flags[0] if flags else "--" + f.name.replace("_", "-")


def coerce_choices(options: Any, strict: bool = True) -> None:
    """Plain strings for Enum fields become members; an unknown one is a UserError.

    With `strict=False` an unknown string is left as it is, for validate() to refuse.
    """
    hints = field_types(type(options))
    for f in dataclasses.fields(options):
        enum = choice_type(hints[f.name])
        value = getattr(options, f.name)
        if enum is None or value is None or isinstance(value, enum):
            continue
        try:
            setattr(options, f.name, enum(value))
        except ValueError:
            if not strict:
                continue
            names = " | ".join(str(m.value) for m in enum)  # type: ignore[attr-defined]
            raise UserError(f"unknown {flag_name(f)} {value!r}: choose one of {names}") from None


# The commands' own flags (--out, --fail-on, --plugin...): not what to train.
_COMMAND_FIELDS = {f.name for cls in (RunCommandOptions, InspectOptions, CompareOptions)
                   for f in dataclasses.fields(cls)}


def load_recipe(path: Path) -> dict[str, Any]:
    """RunOptions fields from a TOML file (keys as field names or flags, - or _), or
    from a run folder's config.json (the recipe it recorded: the same run again)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        raw = _recorded_recipe(path, text) if Path(path).suffix == ".json" else \
            tomllib.loads(text)
    except OSError as exc:
        raise UserError(f"cannot read --recipe {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"--recipe {path} is not valid TOML: {exc}") from None
    known = {f.name: f for f in dataclasses.fields(RunOptions)}
    aliases = {flag_name(f).lstrip("-").replace("-", "_"): name for name, f in known.items()}
    hints = field_types(RunOptions)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        name = name if name in known else aliases.get(name, name)
        if name in _COMMAND_FIELDS and name not in known:
            raise UserError(f"--recipe {path}: {key!r} is a flag of the command, not an "
                            f"option of what it trains: give --{name.replace('_', '-')} on "
                            "the command line")
        if name not in known:
            raise UserError(f"--recipe {path}: unknown option {key!r}; a recipe holds the "
                            "model, data and training options of `vgdiag run --help`, "
                            "e.g. depth = 7")
        values[name] = _recipe_value(path, key, value, hints[name])
    return values


def _recorded_recipe(path: Path, text: str) -> dict[str, Any]:
    """The options a run folder's config.json recorded (experiment.recipe)."""
    import json

    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise UserError(f"--recipe {path} is not valid JSON: {exc}") from None
    experiment = doc.get("experiment") if isinstance(doc, dict) else None
    recipe = experiment.get("recipe") if isinstance(experiment, dict) else None
    if not isinstance(experiment, dict) or not isinstance(recipe, dict):
        raise UserError(f"--recipe {path}: a .json recipe is a run folder's config.json "
                        "written by `vgdiag run`, with the options it ran with")
    plugins = experiment.get("plugins") or []
    if plugins:  # plugins are options of the command, which a recipe does not hold
        raise UserError(f"--recipe {path}: that run applied plugins ({', '.join(plugins)}), "
                        "which a recipe does not hold: write its experiment.recipe to a "
                        "TOML file and give that with "
                        + " ".join(f"--plugin {p}" for p in plugins))
    return recipe


def read_recipe(path: Path) -> RunOptions:
    """RunOptions from a TOML file; fields it does not set keep their defaults."""
    return RunOptions(**load_recipe(path))


def _recipe_value(path: Path, key: str, value: Any, annotation: Any) -> Any:
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    base = next((a for a in args if a is not type(None)), annotation)
    origin = typing.get_origin(base)
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"--recipe {path}: {key} must be a list of strings")
        return list(value)
    if base is Path:
        if not isinstance(value, str):
            raise UserError(f"--recipe {path}: {key} must be a path (a string)")
        return Path(value)
    expected: tuple[type, ...] = (base,)
    if base is float:
        expected = (int, float)
    elif isinstance(base, type) and issubclass(base, Enum):
        expected = (str,)
    if isinstance(value, bool) and base is not bool or not isinstance(value, expected):
        raise UserError(f"--recipe {path}: {key} must be {getattr(base, '__name__', base)}, "
                        f"got {value!r}")
    return float(cast(float, value)) if base is float else value
