"""The package as users install it: the built wheel holds every subpackage."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def source_packages() -> set[str]:
    """Import names of every folder of vgdiag/ (and plugins/) with Python files."""
    found = set()
    for top, name in ((ROOT / "vgdiag", "vgdiag"), (ROOT / "plugins", "vgdiag_plugins")):
        for folder in [top, *(p for p in top.rglob("*") if p.is_dir())]:
            if folder.name == "__pycache__" or not any(folder.glob("*.py")):
                continue
            rel = folder.relative_to(top).parts
            found.add(".".join((name, *rel)))
    return found


def test_every_source_folder_is_a_package():
    # A folder of modules without __init__.py is a namespace package: package
    # discovery skips it and the wheel ships without it.
    missing = [p for p in source_packages()
               if not (ROOT / p.replace("vgdiag_plugins", "plugins").replace(".", "/")
                       / "__init__.py").exists()]
    assert not missing, f"no __init__.py in {missing}"


@pytest.mark.slow
def test_the_wheel_lists_every_package(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path),
         str(ROOT)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    if build.returncode != 0 and "bdist_wheel" not in build.stderr:
        pytest.skip(f"cannot build a wheel here (no package index?): {build.stderr[-300:]}")
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("vgdiag-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packaged = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert packaged == source_packages()
    assert "vgdiag/tui/vgdiag.tcss" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    assert "vgdiag = vgdiag.cli.launch:entry" in text and "[vgdiag.plugins]" in text
