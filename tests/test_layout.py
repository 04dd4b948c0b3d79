"""The package's shape: one-way layers, no import cycles, and start-up without torch.

engine/ is the core every front end shares, so it imports nothing from the layers
built on it (inputs/, runs/, cli/, tui/). Module-level import cycles make start-up order
fragile; the check reads the source, so it sees every module, imported or not.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vgdiag"
ABOVE_ENGINE = ("vgdiag.inputs", "vgdiag.runs", "vgdiag.cli", "vgdiag.tui")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "vgdiag" or name.startswith("vgdiag.")}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_engine_imports_nothing_above_it() -> None:
    offenders = {
        name: sorted(i for i in imports(path, top_level_only=False) if i.startswith(ABOVE_ENGINE))
        for name, path in MODULES.items()
        if name.startswith("vgdiag.engine")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_module_level_import_cycles() -> None:
    graph = {name: {i for i in imports(path, top_level_only=True) if i in MODULES and i != name}
             for name, path in MODULES.items()}
    # A package's __init__ importing its own children is not a cycle of modules.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt):], nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_cycle_check_can_fail(tmp_path: Path) -> None:
    a = tmp_path / "a.py"
    a.write_text("from vgdiag.b import x\nimport vgdiag.c\n")
    assert imports(a, top_level_only=True) == {"vgdiag.b", "vgdiag.c"}


def test_start_up_does_not_import_torch() -> None:
    program = textwrap.dedent(
        """
        import json, sys
        from vgdiag.cli.app import main
        seen = {}
        for args in (["--version"], ["--help"], ["run", "--help"], ["compare", "--help"],
                     ["inspect", "--help"], ["report", "--help"]):
            try:
                main(args)
            except SystemExit:
                pass
            seen[" ".join(args)] = [m for m in ("torch", "numpy", "textual") if m in sys.modules]
        print(json.dumps(seen))
        """
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {k: [] for k in seen}, seen
