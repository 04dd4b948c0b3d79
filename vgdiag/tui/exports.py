"""What the dashboard writes into a run folder: the HTML report and screenshot names.

No Textual here; each returns what the dashboard tells the user.
"""

from __future__ import annotations

import time
from pathlib import Path

from vgdiag.errors import UserError
from vgdiag.runs.folder import free_path, write_text_atomic
from vgdiag.runs.reader import read_run


def screenshot_name(folder: Path) -> str:
    """`screenshot-<time>.svg`, numbered when that file exists already."""
    return free_path(folder, f"screenshot-{time.strftime('%Y%m%d-%H%M%S')}", ".svg").name


def write_report(folder: Path) -> tuple[str, str]:
    """Write report.html into `folder`; returns (message, severity) for a notification."""
    from vgdiag.runs.report import render_report

    target = folder / "report.html"
    try:
        write_text_atomic(target, render_report(read_run(folder), "html"))
    except UserError as exc:
        return str(exc), "error"
    except OSError as exc:
        return f"cannot write the report: {exc.strerror or exc}", "error"
    except Exception as exc:  # the report must never take the dashboard down
        return f"the report failed: {type(exc).__name__}: {exc}", "error"
    return f"saved {target}", "information"
