"""`python -m vgdiag` is the `vgdiag` command."""

from vgdiag.cli.launch import entry

entry()
