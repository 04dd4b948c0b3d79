"""Package discovery: every subpackage of vgdiag, plus the built-in plugins.

pyproject.toml holds everything else. `packages.find` there cannot also map plugins/
to the import name vgdiag_plugins, so the one list is computed here.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["vgdiag", "vgdiag.*"]), "vgdiag_plugins"])
