"""`vgdiag plugins`: the installed mitigations."""

from __future__ import annotations

import sys

from rich.console import Console


def plugins_command() -> None:
    """List the mitigation plugins, their options and where each comes from."""
    from rich.table import Table

    from vgdiag.plugin_api import discover_plugins

    found, errors = discover_plugins()
    table = Table(title="Mitigation plugins", title_justify="left")
    for column in ("name", "summary", "options", "from"):
        table.add_column(column, overflow="fold")
    for name, plugin in found.items():
        options = "\n".join(f"{k}: {v}" for k, v in plugin.options.items()) or "-"
        table.add_row(name, plugin.summary, options, plugin.origin)
    console = Console()
    console.print(table)
    for error in errors:
        print(f"warning: {error}", file=sys.stderr)
