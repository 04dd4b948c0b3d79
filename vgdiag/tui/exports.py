"""What the dashboard writes into a run folder: the HTML report and screenshot names.

No Textual here; each returns what the dashboard tells the user.
"""

from __future__ import annotations

import time
from pathlib import Path

from vgdiag.errors import UserError
from vgdiag.runs.store import free_path, read_run


def screenshot_name(folder: Path) -> str:
    """`screenshot-<time>.svg`, numbered when that file exists already."""
    return free_path(folder, f"screenshot-{time.strftime('%Y%m%d-%H%M%S')}", ".svg").name


def write_report(folder: Path) -> tuple[str, str]:
    """Write report.html into `folder`; returns (message, severity) for a notification."""
    try:
        from vgdiag.runs.report import render_report  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "the HTML report is not part of this installation", "warning"
    try:
        content = render_report(read_run(folder), "html")
        target = folder / "report.html"
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(str(content), encoding="utf-8")
    except UserError as exc:
        return str(exc), "error"
    except OSError as exc:
        return f"cannot write the report: {exc.strerror or exc}", "error"
    except Exception as exc:  # the report must never take the dashboard down
        return f"the report failed: {type(exc).__name__}: {exc}", "error"
    return f"saved {target}", "information"
