"""The `vgdiag` command line."""
