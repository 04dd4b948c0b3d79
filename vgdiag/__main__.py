"""`python -m vgdiag` is the `vgdiag` command."""

import sys

from vgdiag.cli.app import main

sys.exit(main())
