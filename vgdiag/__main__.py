"""`python -m vgdiag` is the `vgdiag` command."""

import sys

from vgdiag.cli import main

sys.exit(main())
