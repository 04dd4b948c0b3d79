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
from vgdiag.inputs.options import ReportFormat
from vgdiag.runs.reader import RunData
from vgdiag.runs.regression import BaselineComparison
from vgdiag.runs.report_html import render_html
from vgdiag.runs.report_json import render_json
from vgdiag.runs.report_md import render_markdown

_RENDERERS = {ReportFormat.md: render_markdown, ReportFormat.html: render_html,
              ReportFormat.json: render_json}
FORMATS = tuple(f.value for f in ReportFormat)


def render_report(run: RunData, fmt: str, baseline: BaselineComparison | None = None) -> str:
    """The report of `run` in `fmt`: "md" (GitHub Markdown), "html" (one file) or "json";
    with `baseline`, what got worse since a baseline run (`vgdiag report --baseline`).

    Raises:
        UserError: for any other format.
    """
    try:
        kind = ReportFormat(fmt.strip().lower())
    except ValueError:
        raise UserError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}") \
            from None
    return _RENDERERS[kind](run, baseline)
