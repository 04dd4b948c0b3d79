"""Training a fixed variant beside the run: the plugins on offer, and the variant's session.

No Textual here: the dashboard's fix picker shows `fix_choices` and trains what
`start_variant` returns in a worker of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from vgdiag.engine.records import Finding
from vgdiag.runs.folder import free_path
from vgdiag.runs.store import RunStore
from vgdiag.tui.screens.fix_picker import FixChoice
from vgdiag.tui.session import TrainingSession


def variant_folder(run_dir: Path, plugin: str) -> Path:
    """`<run dir>-<plugin>`, numbered when that is taken already."""
    return free_path(run_dir.parent, f"{run_dir.name}-{plugin}",
                     taken=lambda path: path.exists() and any(path.iterdir()))


def load_plugins(given: Mapping[str, Any] | None) -> tuple[Mapping[str, Any], list[str]]:
    """The installed mitigations (or `given`), and one line per plugin that failed to load."""
    if given is not None:
        return given, []
    try:
        from vgdiag.plugin_api import discover_plugins
    except ImportError:
        return {}, ["the plugin system is not part of this installation"]
    plugins, errors = discover_plugins()
    return plugins, list(errors)


def why_not(plugin: Any, base: TrainingSession) -> str | None:
    """Why `plugin` does not apply to the run (None: it does)."""
    try:
        reason = plugin.why_not(base.experiment, {})
    except Exception as exc:  # a plugin's check can raise anything: show it, go on
        return f"{type(exc).__name__}: {exc}"
    return None if reason is None else str(reason)


def fix_choices(plugins: Mapping[str, Any], base: TrainingSession,
                findings: Iterable[Finding]) -> list[FixChoice]:
    """Every plugin as the picker lists it; those the findings recommend are marked."""
    recommended = {n for f in findings for n in f.recommend}
    return [FixChoice(name, str(getattr(p, "summary", "")), why_not(p, base), name in recommended)
            for name, p in plugins.items()]


def start_variant(base: TrainingSession, name: str, plugin: Any) -> TrainingSession:
    """The session that trains `base`'s recipe with `plugin` applied, into a sibling folder.

    Raises:
        UserError: the plugin refused the recipe or the folder cannot be made.
        Exception: whatever a plugin's transform raises.
    """
    experiment = plugin.apply(base.experiment, {})
    experiment = experiment.replace(name=f"{base.experiment.name}-{name}")
    store = RunStore(variant_folder(Path(base.store.path), name), name=experiment.name,
                     num_classes=base.data.num_classes)
    return TrainingSession(experiment, base.data, store, label=name)
