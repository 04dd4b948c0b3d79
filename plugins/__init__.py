"""vgdiag's built-in mitigations, one module per plugin.

Each is registered in pyproject.toml under the entry-point group `vgdiag.plugins`,
exactly as a third-party package registers its own; see docs/PLUGINS.md.
"""
