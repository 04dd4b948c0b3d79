"""One module a command; `vgdiag.cli.app` registers them."""
