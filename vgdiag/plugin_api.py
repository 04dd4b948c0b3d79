"""Mitigation plugins: the base class, option parsing and the entry-point registry.

A plugin turns one Experiment into another (model surgery, a different optimizer,
a staged schedule) and says beforehand whether it applies. Plugins are found through
the entry-point group `vgdiag.plugins`; the built-ins in vgdiag_plugins are
registered there exactly like a third-party package's, and a broken entry point is
reported and skipped instead of taking the tool down.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any

import torch
from torch import nn

from vgdiag.engine.experiment import Experiment
from vgdiag.errors import UserError

ENTRY_POINT_GROUP = "vgdiag.plugins"

# The reference experiment's order; "all" and `vgdiag plugins` list built-ins this way,
# then third-party plugins by name.
BUILTIN_ORDER = ("weight-init", "relu", "adam", "batchnorm", "skip", "layerwise", "gradnorm")


class Plugin:
    """Base class of a mitigation: subclass it, set the class attributes, implement
    `why_not` and `transform`, and register the class under `vgdiag.plugins`.

    Attributes:
        name: the name users type (`--plugins relu`); discovery sets it to the
            entry-point name.
        summary: one line for `vgdiag plugins`.
        options: option name -> help text, including the default.
        origin: where the plugin came from ("vgdiag 0.1.0 (built-in)"); set by discovery.
    """

    name: str = ""
    summary: str = ""
    options: dict[str, str] = {}
    origin: str = ""

    def why_not(self, experiment: Experiment, options: dict[str, str]) -> str | None:
        """None if the plugin applies to `experiment`, otherwise a short reason.

        Raises:
            UserError: an option is unknown or has a bad value.
        """
        self.check_options(options)
        return None

    def transform(self, experiment: Experiment, options: dict[str, str]) -> Experiment:
        """Return the transformed copy; called by `apply` once `why_not` said yes."""
        raise NotImplementedError

    def apply(self, experiment: Experiment, options: dict[str, str]) -> Experiment:
        """A NEW experiment with this mitigation applied; `experiment` is left unchanged.

        Raises:
            UserError: unknown option, bad option value, or the plugin does not apply.
        """
        self.check_options(options)
        reason = self.why_not(experiment, options)
        if reason is not None:
            raise UserError(f"plugin {self.name!r} does not apply to {experiment.name!r}: {reason}")
        return self.transform(experiment, options)

    # -- helpers for subclasses -------------------------------------------------------

    def check_options(self, options: dict[str, str]) -> None:
        """UserError for any option key this plugin does not declare."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join(self.options) or "none"
            raise UserError(
                f"plugin {self.name!r} has no option {', '.join(map(repr, unknown))}; "
                f"valid options: {valid}"
            )

    def _bad(self, key: str, value: str, wanted: str) -> UserError:
        return UserError(f"plugin option {self.name}.{key}={value!r} is invalid: {wanted}")

    def float_option(
        self, options: dict[str, str], key: str, default: float, *, positive: bool = True
    ) -> float:
        """A finite float option (positive unless told otherwise)."""
        if key not in options:
            return default
        try:
            value = float(options[key])
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or (positive and value <= 0):
            raise self._bad(key, options[key], "give a positive number" if positive else "a number")
        return value

    def int_option(
        self, options: dict[str, str], key: str, default: int | None, *, minimum: int = 1
    ) -> int | None:
        """An integer option, at least `minimum`."""
        if key not in options:
            return default
        try:
            value = int(options[key])
        except ValueError:
            raise self._bad(key, options[key], f"give an integer >= {minimum}") from None
        if value < minimum:
            raise self._bad(key, options[key], f"give an integer >= {minimum}")
        return value

    def int_list_option(self, options: dict[str, str], key: str) -> list[int] | None:
        """A comma-separated list of positive integers ("2,2,2,1"), None when absent."""
        if key not in options:
            return None
        try:
            values = [int(part) for part in options[key].split(",")]
        except ValueError:
            values = []
        if not values or min(values) < 1:
            raise self._bad(key, options[key], "give positive integers separated by commas")
        return values

    def choice_option(
        self, options: dict[str, str], key: str, choices: Iterable[str], default: str | None
    ) -> str | None:
        """One of `choices` (case-insensitive)."""
        if key not in options:
            return default
        value = options[key].strip().lower()
        allowed = list(choices)
        if value not in allowed:
            raise self._bad(key, options[key], f"choose one of {', '.join(allowed)}")
        return value

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
    with torch.random.fork_rng(devices=[]):
        return experiment.build_model()


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


def _sort_key(name: str) -> tuple[int, str]:
    if name in BUILTIN_ORDER:
        return BUILTIN_ORDER.index(name), name
    return len(BUILTIN_ORDER), name


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
    return {name: found[name] for name in sorted(found, key=_sort_key)}, errors


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
