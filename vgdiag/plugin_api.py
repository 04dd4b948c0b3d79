"""Mitigation plugins: the base class, option parsing and the entry-point registry.

A plugin turns one Experiment into another (model surgery, a different optimizer,
a staged schedule) and says beforehand whether it applies. Plugins are found through
the entry-point group `vgdiag.plugins`; the built-ins in vgdiag_plugins are
registered there exactly like a third-party package's, and a broken entry point is
reported and skipped instead of taking the tool down.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import typing
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import torch
from torch import nn

from vgdiag.engine.experiment import Experiment
from vgdiag.engine.records import Finding, LayerInfo, StepRecord
from vgdiag.errors import UserError

ENTRY_POINT_GROUP = "vgdiag.plugins"
THIRD_PARTY_RANK = 100  # listed after the built-ins (ranks 10-70), then by name


@dataclass(frozen=True)
class NoOptions:
    """The options of a plugin that takes none."""


def option(default: Any, help: str, *, parse: Callable[[str], Any] | None = None,
           choices: tuple[str, ...] = ()) -> Any:
    """A plugin option: a dataclass field with its help line and, optionally, a parser.

    Without `parse` the field's type decides: float (finite, > 0), int (>= 1),
    tuple[int, ...] (comma-separated, each >= 1), str (one of `choices` when given).
    `parse` turns the text into the value and raises ValueError with what to write.
    """
    return field(default=default, metadata={"help": help, "parse": parse, "choices": choices})


def _positive_float(text: str) -> float:
    value = float(text) if text.strip() else math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError("give a positive number")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError("give an integer >= 1")
    return value


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ValueError("give positive integers separated by commas")
    return values


_PARSERS: dict[str, Callable[[str], Any]] = {
    "float": _positive_float,
    "int": _positive_int,
    "tuple[int, ...]": _int_list,
}


def _parser(name: str, hint: str, meta: Mapping[str, Any]) -> Callable[[str], Any]:
    if meta.get("parse") is not None:
        return meta["parse"]  # type: ignore[no-any-return]
    choices: tuple[str, ...] = meta.get("choices", ())
    if choices:
        def choose(text: str) -> str:
            value = text.strip().lower()
            if value not in choices:
                raise ValueError(f"choose one of {', '.join(choices)}")
            return value

        return choose
    base = hint.replace(" | None", "").replace("None | ", "").strip()
    return _PARSERS.get(base, str)


class Plugin:
    """Base class of a mitigation: subclass it, set the class attributes, implement
    `applies` and `transform`, and register the class under `vgdiag.plugins`.

    Attributes:
        name: the name users type (`--plugins relu`); discovery sets it to the
            entry-point name.
        summary: one line for `vgdiag plugins`.
        addresses: the finding ids (vgdiag.engine.diagnosis) this plugin fixes; the
            diagnosis recommends it for those, built-in or not.
        rank: listing and recommendation order (built-ins 10-70, others 100).
        Options: a frozen dataclass of typed options made with `option(...)`; text
            from the command line is parsed into it once, by `parse_options`.
        origin: where the plugin came from ("vgdiag 0.1.0 (built-in)"); set by discovery.
        relative_cost: about how long its variant trains against the baseline's with
            default options; `compare --jobs N` starts the costliest first, so that no
            long variant runs alone at the end while the other jobs idle.
    """

    name: str = ""
    summary: str = ""
    addresses: tuple[str, ...] = ()
    rank: int = THIRD_PARTY_RANK
    Options: type = NoOptions
    origin: str = ""
    relative_cost: float = 1.0

    @property
    def options(self) -> dict[str, str]:
        """Option name (as typed: `batch-size`) -> its help line."""
        return {f.name.replace("_", "-"): f.metadata.get("help", "")
                for f in dataclasses.fields(self.Options)}

    def parse_options(self, given: Mapping[str, str] | Any = None) -> Any:
        """The Options instance for `given` text options (an instance passes through).

        Raises:
            UserError: an option is unknown or has a bad value.
        """
        if isinstance(given, self.Options):
            return given
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            valid = ", ".join(self.options) or "none"
            raise UserError(
                f"plugin {self.name!r} has no option {', '.join(map(repr, unknown))}; "
                f"valid options: {valid}"
            )
        hints = typing.get_type_hints(self.Options)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(self.Options):
            key = f.name.replace("_", "-")
            if key not in given:
                continue
            hint = str(hints[f.name]).replace("typing.", "").replace("<class '", "")
            hint = hint.replace("'>", "")
            try:
                values[f.name] = _parser(f.name, hint, f.metadata)(str(given[key]))
            except ValueError as exc:
                raise UserError(
                    f"plugin option {self.name}.{key}={given[key]!r} is invalid: {exc}"
                ) from None
        try:
            return self.Options(**values)
        except ValueError as exc:  # a check across options (__post_init__)
            raise UserError(f"plugin {self.name!r}: {exc}") from None

    def applies(self, experiment: Experiment, options: Any) -> str | None:
        """None if the plugin applies to `experiment` with `options`, else a short reason."""
        return None

    def in_place(self, records: Sequence[StepRecord], layers: Sequence[LayerInfo]) -> bool:
        """True where the measured run shows the model already has this fix (every
        activation non-saturating, a norm after every hidden layer): the diagnosis
        then leaves it out of its advice. Override it; by default a plugin is advised."""
        return False

    def transform(self, experiment: Experiment, options: Any) -> Experiment:
        """Return the transformed copy; called by `apply` once `applies` said yes."""
        raise NotImplementedError

    def why_not(self, experiment: Experiment, options: Mapping[str, str] | Any = None
                ) -> str | None:
        """None if the plugin applies, otherwise a short reason (UserError: bad options)."""
        return self.applies(experiment, self.parse_options(options))

    def apply(self, experiment: Experiment, options: Mapping[str, str] | Any = None
              ) -> Experiment:
        """A NEW experiment with this mitigation applied; `experiment` is left unchanged.

        Raises:
            UserError: unknown option, bad option value, or the plugin does not apply.
        """
        parsed = self.parse_options(options)
        reason = self.applies(experiment, parsed)
        if reason is not None:
            raise UserError(f"plugin {self.name!r} does not apply to {experiment.name!r}: {reason}")
        return self.transform(experiment, parsed)

    def check_options(self, options: Mapping[str, str]) -> None:
        """UserError for any option this plugin does not declare or cannot parse."""
        self.parse_options(options)

    # -- helpers for subclasses -------------------------------------------------------

    def record(self, experiment: Experiment, note: dict[str, Any], **changes: Any) -> Experiment:
        """Copy of `experiment` with `changes`, this plugin's name and its note appended."""
        notes = dict(experiment.notes)
        notes[self.name] = note
        plugins = [*experiment.plugins, self.name]
        return experiment.replace(plugins=plugins, notes=notes, **changes)

    def with_model_transform(
        self,
        experiment: Experiment,
        transform: Callable[[nn.Module], nn.Module],
        note: dict[str, Any],
    ) -> Experiment:
        """Copy of `experiment` that runs `transform` on every model it builds."""
        transforms = [*experiment.model_transforms, transform]
        return self.record(experiment, note, model_transforms=transforms)


def inspect_model(experiment: Experiment) -> nn.Module:
    """Build the experiment's model to look at it, leaving the global RNG as it was.

    The trainer seeds once and then builds; building here must not shift the random
    stream that the baseline and every variant share.
    """
    cached = _INSPECTING.get(id(experiment))
    if cached is not None:
        return cached
    with torch.random.fork_rng(devices=[]):
        return experiment.build_model()


# Inside not_applicable(): the one model every plugin's check looks at, by experiment
# (a user's factory may load pretrained weights: once, not once per plugin).
_INSPECTING: dict[int, nn.Module] = {}


# -- registry -------------------------------------------------------------------------


def _origin(entry_point: metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "unknown distribution"
    name = dist.metadata["Name"] or "unknown"
    label = f"{name} {dist.version}"
    return f"{label} (built-in)" if name.lower() == "vgdiag" else label


def _instantiate(loaded: object) -> Plugin | None:
    if isinstance(loaded, type) and issubclass(loaded, Plugin):
        return loaded()
    if isinstance(loaded, Plugin):
        return loaded
    return None


def discover_plugins(
    entry_points: Iterable[metadata.EntryPoint] | None = None,
) -> tuple[dict[str, Plugin], list[str]]:
    """Load every plugin registered under `vgdiag.plugins`.

    Args:
        entry_points: the entry points to load; None reads the installed ones.

    Returns:
        (plugins by name, built-ins first in the reference order; one line per entry
        point that failed to import, is not a Plugin, or repeats a name: skipped).
    """
    if entry_points is None:
        entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    found: dict[str, Plugin] = {}
    errors: list[str] = []
    for ep in entry_points:
        where = f"plugin {ep.name!r} ({ep.value}, from {_origin(ep)})"
        if ep.name in found:
            errors.append(f"{where} skipped: the name is already taken by {found[ep.name].origin}")
            continue
        try:
            loaded = ep.load()
            plugin = _instantiate(loaded)
        except Exception as exc:  # a third-party import can raise anything
            errors.append(f"{where} failed to load: {type(exc).__name__}: {exc}")
            continue
        if plugin is None:
            errors.append(f"{where} skipped: it is not a vgdiag.plugin_api.Plugin")
            continue
        # The entry-point name is what users type, so it wins over the class attribute.
        plugin.name = ep.name
        plugin.origin = _origin(ep)
        found[ep.name] = plugin
    return {name: found[name] for name in sorted(found, key=lambda n: (found[n].rank, n))}, errors


def get_plugin(name: str, plugins: dict[str, Plugin] | None = None) -> Plugin:
    """The plugin called `name`; UserError listing the available ones if there is none."""
    if plugins is None:
        plugins, _ = discover_plugins()
    if name not in plugins:
        raise UserError(
            f"unknown plugin {name!r}: available plugins are {', '.join(plugins) or 'none'}"
        )
    return plugins[name]


def resolve_plugin_names(spec: str, available: Iterable[str] | None = None) -> list[str]:
    """'all' or 'a,b,c' -> plugin names, checked against `available`, duplicates dropped.

    Args:
        spec: "all" or a comma-separated list.
        available: known names in display order; None discovers the installed plugins.
    """
    if available is None:
        available = discover_plugins()[0]
    known = list(available)
    if spec.strip().lower() == "all":
        return known
    names: list[str] = []
    for part in spec.split(","):
        name = part.strip()
        if not name:
            continue
        if name not in known:
            raise UserError(
                f"unknown plugin {name!r}: available plugins are {', '.join(known) or 'none'}"
            )
        if name not in names:
            names.append(name)
    if not names:
        raise UserError(f"no plugin named in {spec!r}: give 'all' or names such as relu,adam")
    return names


def parse_plugin_opts(items: Iterable[str]) -> dict[str, dict[str, str]]:
    """["weight-init.std=1.0", "adam.lr=3e-4"] -> {"weight-init": {"std": "1.0"}, ...}.

    Values stay strings; each plugin parses and checks its own. A later item with the
    same key wins.
    """
    parsed: dict[str, dict[str, str]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        plugin, dot, option = key.strip().partition(".")
        if not eq or not dot or not plugin or not option.strip() or not value.strip():
            raise UserError(
                f"malformed plugin option {item!r}: write PLUGIN.OPTION=VALUE, "
                "e.g. weight-init.std=1.0"
            )
        parsed.setdefault(plugin, {})[option.strip()] = value.strip()
    return parsed


def check_plugin_opts_used(plugin_opts: dict[str, dict[str, str]], applied: Iterable[str],
                           how: str) -> None:
    """UserError for options of a plugin that is not applied: they would do nothing.
    `how` says how to apply it, with `{name}` for the plugin's name."""
    used = set(applied)
    unused = [name for name in plugin_opts if name not in used]
    if unused:
        name = unused[0]
        raise UserError(f"--plugin-opt {name}.* sets options of {name}, which is not "
                        f"applied: {how.format(name=name)}")


def validate_plugin_opts(
    plugin_opts: dict[str, dict[str, str]], plugins: dict[str, Plugin] | None = None
) -> None:
    """UserError if an option names an unknown plugin or an option that plugin lacks."""
    if plugins is None:
        plugins, _ = discover_plugins()
    for name, options in plugin_opts.items():
        get_plugin(name, plugins).check_options(options)


def apply_plugins(
    experiment: Experiment,
    names: Iterable[str],
    plugin_opts: dict[str, dict[str, str]] | None = None,
    plugins: dict[str, Plugin] | None = None,
) -> Experiment:
    """Apply the named plugins in order; UserError if one does not apply."""
    if plugins is None:
        plugins, _ = discover_plugins()
    plugin_opts = plugin_opts or {}
    for name in names:
        experiment = get_plugin(name, plugins).apply(experiment, plugin_opts.get(name, {}))
    return experiment


# -- recommendations ------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _installed() -> tuple[Plugin, ...]:
    return tuple(discover_plugins()[0].values())


def not_applicable(experiment: Experiment) -> dict[str, str]:
    """{plugin: why not} for the installed plugins that cannot apply to `experiment`
    with their defaults (a ResNet has no saturating activation module to replace, an
    RNN no hidden Linear to normalise): the diagnosis does not advise them. The
    model is built once for all the checks (they only look at it); a plugin whose
    check fails stays advised (its own run will say why)."""
    out: dict[str, str] = {}
    with _random_states_kept():
        return _not_applicable(experiment, out)


@contextlib.contextmanager
def _random_states_kept() -> Iterator[None]:
    """Every random stream a model factory may draw from, as it was: called mid-run,
    building the model once more must not shift the training's draws (torch's CPU and
    CUDA generators, numpy's and Python's)."""
    import random

    import numpy as np

    py, npy = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)


def _not_applicable(experiment: Experiment, out: dict[str, str]) -> dict[str, str]:
    # The user's code runs here (the factory, a dry forward): sys.exit() in it is no
    # more than a check that cannot tell.
    try:
        _INSPECTING[id(experiment)] = inspect_model(experiment)
    except (Exception, SystemExit):  # the model did not build: nothing can be ruled out
        return out
    try:
        for plugin in _installed():
            try:
                reason = plugin.why_not(experiment)
            except (Exception, SystemExit):  # a check that cannot tell keeps its advice
                continue
            if reason is not None:
                out[plugin.name] = reason
    finally:
        del _INSPECTING[id(experiment)]
    return out


def _in_place(plugin: Plugin, records: Sequence[StepRecord], layers: Sequence[LayerInfo]
              ) -> bool:
    """`plugin.in_place`, where a plugin's own failure means "advise it": a third
    party's bug must not end the user's run at the first epoch's diagnosis."""
    try:
        return bool(plugin.in_place(records, layers))
    except Exception:  # noqa: BLE001
        return False


def recommend(findings: list[Finding], plugins: Iterable[Plugin] | None = None, *,
              records: Sequence[StepRecord] = (), layers: Sequence[LayerInfo] = (),
              exclude: Collection[str] = ()) -> list[Finding]:
    """`findings` with each one's `recommend` set to the plugins that address its id,
    less those the measured run shows in place already (`Plugin.in_place`) and those
    in `exclude` (see `not_applicable`).

    The installed plugins (read once per process) decide, in their rank order, so a
    third-party plugin that declares `addresses` is recommended like a built-in.
    """
    chosen = sorted(_installed() if plugins is None else plugins, key=lambda p: (p.rank, p.name))
    chosen = [p for p in chosen if p.name not in exclude]
    if records:
        chosen = [p for p in chosen if not _in_place(p, records, layers)]
    return [
        dataclasses.replace(f, recommend=[p.name for p in chosen if f.id in p.addresses])
        for f in findings
    ]
