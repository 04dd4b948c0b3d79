"""`vgdiag report`: a run folder as Markdown, JSON or one self-contained HTML file.

    run = read_run(path)
    text = render_report(run, "md")   # or "html", "json"

The renderers work from a RunData alone (no torch), so a report can be made for any
folder `vgdiag run` left behind, including interrupted, failed and cut-off runs. What
they all show is prepared once (`report_data.py`); each format is a module of its own
(`report_md.py`, `report_html.py`, `report_json.py`).
"""

from __future__ import annotations

from vgdiag.errors import UserError
from vgdiag.runs.reader import RunData
from vgdiag.runs.report_html import render_html
from vgdiag.runs.report_json import render_json
from vgdiag.runs.report_md import render_markdown

FORMATS = ("md", "html", "json")
_RENDERERS = {"md": render_markdown, "html": render_html, "json": render_json}


def render_report(run: RunData, fmt: str) -> str:
    """The report of `run` in `fmt`: "md" (GitHub Markdown), "html" (one file) or "json".

    Raises:
        UserError: for any other format.
    """
    render = _RENDERERS.get(fmt.strip().lower())
    if render is None:
        raise UserError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
    return render(run)
