"""The engine never imports Textual: only the dashboard (vgdiag.tui) does.

Each check runs in a fresh interpreter, so nothing imported by other tests can hide
an import (or fake one).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# The engine modules every front end relies on; anything else found in the package
# (except the dashboard) is checked too, so a new module is covered without a change here.
REQUIRED = [
    "vgdiag",
    "vgdiag.engine.probe",
    "vgdiag.engine.trainer",
    "vgdiag.inputs.datasets",
    "vgdiag.engine.models",
    "vgdiag.engine.diagnosis",
    "vgdiag.runs.store",
    "vgdiag.runs.report",
    "vgdiag.inputs.recipe",
    "vgdiag.cli.headless",
    "vgdiag.cli.app",
    "vgdiag.engine.watch",
    "vgdiag.plugin_api",
    "vgdiag.runs.compare",
]

PROGRAM = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys

    import vgdiag

    required = json.loads(sys.argv[1])
    # A walk by hand, not walk_packages: walking would import the vgdiag.tui packages.
    found, todo = [], [(vgdiag.__path__, "vgdiag.")]
    while todo:
        path, prefix = todo.pop()
        for m in pkgutil.iter_modules(path, prefix):
            if m.name in ("vgdiag.tui", "vgdiag.__main__"):  # __main__ runs the CLI
                continue
            found.append(m.name)
            if m.ispkg:
                todo.append((importlib.import_module(m.name).__path__, m.name + "."))
    names = sorted(set(required) | set(found))
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            # An integration whose optional library (an extra) is absent says so on import;
            # anything else failing to import is a real error.
            if not name.startswith("vgdiag.integrations.") or "pip install" not in str(exc):
                raise
    import vgdiag_plugins
    for m in pkgutil.iter_modules(vgdiag_plugins.__path__, "vgdiag_plugins."):
        importlib.import_module(m.name)
        names.append(m.name)
    from vgdiag.plugin_api import discover_plugins
    discover_plugins()
    print(json.dumps({"imported": names,
                      "textual": sorted(m for m in sys.modules if m.split(".")[0] == "textual")}))
    """
)


def run_program(program: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", program, *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_engine_modules_do_not_import_textual() -> None:
    result = run_program(PROGRAM, json.dumps(REQUIRED))
    assert set(REQUIRED) <= set(result["imported"])
    assert any(name.startswith("vgdiag_plugins.") for name in result["imported"])
    assert result["textual"] == [], f"the engine imported {result['textual']}"


def test_cli_help_does_not_import_textual() -> None:
    program = textwrap.dedent(
        """
        import json, sys
        from vgdiag.cli.app import main
        for args in (["--help"], ["run", "--help"], ["view", "--help"]):
            try:
                main(args)
            except SystemExit:
                pass
        print(json.dumps({"textual": sorted(m for m in sys.modules
                                            if m.split(".")[0] == "textual")}))
        """
    )
    assert run_program(program)["textual"] == []


def test_the_check_can_fail() -> None:
    # The same probe sees Textual once the dashboard is imported.
    program = textwrap.dedent(
        """
        import json, sys
        import vgdiag.tui.app
        print(json.dumps({"textual": sorted(m for m in sys.modules
                                            if m.split(".")[0] == "textual")}))
        """
    )
    assert "textual" in run_program(program)["textual"]
