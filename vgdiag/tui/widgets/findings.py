"""The diagnosis: each finding's message, the numbers behind it and the fixes to try."""

from __future__ import annotations

import math
import time
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.reactive import reactive

from vgdiag.engine.diagnosis import verdict
from vgdiag.tui.charts import fmt
from vgdiag.tui.state import RunView
from vgdiag.tui.widgets.chart import Chart

SEVERITY_CLASS = {"error": "health--bad", "warning": "health--weak", "info": "chart--title"}
TRACEBACK_LINES = 6  # the end of a traceback says where; the full one is in metrics.jsonl
LAYOUT_INTERVAL_S = 5.0


def _structure(view: RunView | None) -> object:
    """What decides the findings' layout: which findings, where, and how the run stands."""
    if view is None:
        return None
    return ([(f.id, f.severity, tuple(f.layers), tuple(f.recommend)) for f in view.findings],
            view.error, view.finished, bool(view.epochs))


def _numbers(view: RunView | None) -> object:
    return None if view is None else [(f.message, f.evidence) for f in view.findings]


def format_evidence(value: Any, limit: int = 4) -> str:
    """Evidence as short text: numbers to 2-3 digits, long per-layer maps cut in the middle."""
    if isinstance(value, dict):
        items = list(value.items())
        if len(items) > limit:
            shown = items[: limit // 2] + [("…", None)] + items[-(limit // 2):]
        else:
            shown = items
        return "{" + ", ".join(
            "…" if k == "…" else f"{k}: {format_evidence(v, limit)}" for k, v in shown
        ) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_evidence(v, limit) for v in value[:limit]) + (
            ", …]" if len(value) > limit else "]")
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "-"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return fmt(value, 4) if math.isfinite(value) else str(value)
    return str(value)


class FindingsView(Chart):
    """Findings, most severe first; a failed run's error on top."""

    DEFAULT_CSS = "FindingsView { height: auto; }"

    view: reactive[RunView | None] = reactive(None, repaint=False)
    """The run shown."""
    can_fix: reactive[bool] = reactive(False)
    """Whether the fix picker is available (a live run, not a saved one)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._last_layout = -math.inf
        self._layout_pending = False

    def watch_view(self, old: RunView | None, new: RunView | None) -> None:
        # A new height means a relayout of the whole screen, the dearest thing to draw.
        # A finding that comes or goes relayouts now; new numbers in the same findings
        # (every epoch) repaint now and relayout at most every LAYOUT_INTERVAL_S.
        if _structure(old) != _structure(new):
            self._relayout()
        elif _numbers(old) != _numbers(new):
            wait = self._last_layout + LAYOUT_INTERVAL_S - time.monotonic()
            if wait <= 0:
                self._relayout()
            else:
                self.refresh()
                if not self._layout_pending:
                    self._layout_pending = True
                    self.set_timer(wait, self._relayout)

    def _relayout(self) -> None:
        self._layout_pending = False
        self._last_layout = time.monotonic()
        self.refresh(layout=True)

    def render(self) -> Group:
        view = self.view
        muted = self.style_of("chart--muted")
        if view is None:
            return Group(Text("no findings yet", style=muted))
        parts: list[RenderableType] = []
        if view.error:
            parts.append(Text.assemble(("training failed: ", self.style_of("health--bad")),
                                       view.error))
            if view.traceback:
                tail = view.traceback.rstrip().splitlines()[-TRACEBACK_LINES:]
                parts.append(Text("\n".join(tail), style=muted))
            parts.append(Text(""))
        findings = list(view.findings)
        if not findings and not view.records and not view.epochs and view.finished:
            parts.append(Text("nothing was recorded, so there is nothing to diagnose",
                              style=muted))
            return Group(*parts)
        if not findings:
            waiting = not view.finished and not view.epochs
            parts.append(Text(
                "no findings yet: the diagnosis runs after the first samples and every epoch"
                if waiting else "No findings: the gradient reaches every layer.",
                style=muted if waiting else self.style_of("health--ok"),
            ))
            return Group(*parts)
        parts.append(Text(f"verdict: {verdict(findings)}", style=self.style_of("chart--title")))
        for f in findings:
            style = self.style_of(SEVERITY_CLASS.get(f.severity, "chart--muted"))
            parts.append(Text(""))
            parts.append(Text.assemble((f"● {f.severity.upper()} ", style), (f.id, "bold")))
            # An indented block whose lines wrap under themselves, not under the bullet.
            body = Table.grid(padding=0, expand=True)
            body.add_column(width=2)
            body.add_column(ratio=1)
            body.add_row("", f.message)
            if f.layers:
                shown = ", ".join(n or "<root>" for n in f.layers[:8])
                more = f" (+{len(f.layers) - 8})" if len(f.layers) > 8 else ""
                body.add_row("", Text.assemble(("layers ", muted), shown + more))
            if f.evidence:
                evidence = Text()
                for i, (key, value) in enumerate(f.evidence.items()):
                    evidence.append(" · " if i else "", style=muted)
                    evidence.append(f"{key} ", style=muted)
                    evidence.append(format_evidence(value))
                body.add_row("", evidence)
            if f.recommend:
                hint = "  (press f to try one)" if self.can_fix else ""
                body.add_row("", Text.assemble(("fixes ", muted),
                                               (", ".join(f.recommend), self.style_of("series--0")),
                                               (hint, muted)))
            parts.append(body)
        return Group(*parts)
