"""The headless front end: a rich progress bar while training, tables at the end."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from vgdiag.cli.layer_table import layer_table
from vgdiag.cli.state import STATE
from vgdiag.engine.events import (
    EpochEnded,
    Event,
    RunFailed,
    RunFinished,
    RunStarted,
    StepProgress,
    StepSampled,
)
from vgdiag.engine.records import Finding
from vgdiag.engine.status import RunStatus
from vgdiag.engine.summary import RunSummary
from vgdiag.textfmt import fmt_num as fmt
from vgdiag.textfmt import printable

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def safe(text: object) -> str:
    """`text` for a terminal: markup escaped, control characters shown as escapes.

    Names come from the user (layer names, file paths): a stray escape sequence in
    one must not repaint the terminal.
    """
    return escape(printable(text))


def silence_stdout() -> None:
    """After a broken pipe (`vgdiag ... | head`): send the rest of stdout nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


class TerminalConsole(Console):
    """A rich Console that a closed stdout silences instead of exiting.

    Rich's default answer to a broken pipe is SystemExit(1), which would end a run
    in the middle and claim an exit code the run did not earn.
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True
        silence_stdout()


class HeadlessSink:
    """Consumes the event stream and shows a progress bar on `console`.

    It folds the stream into its own `RunSummary` (`self.run`), so the tables at the
    end show what the trainer reported even when the run folder could not be
    written. A closed stdout (a broken pipe) silences the output, never the training.
    """

    def __init__(self, console: Console, name: str = "", num_classes: int = 0) -> None:
        self.console = console
        self.run = RunSummary(name=name, num_classes=num_classes)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task: Any = None
        self.steps_per_epoch = 1
        self.quiet = False  # stdout went away: keep folding, stop drawing

    def __enter__(self) -> HeadlessSink:
        self._draw(self.progress.start)
        return self

    def __exit__(self, *exc: object) -> None:
        self._draw(self.progress.stop)

    def _draw(self, action: Any) -> None:
        if self.quiet:
            return
        try:
            action()
        except BrokenPipeError:
            self.quiet = True
            silence_stdout()

    def handle(self, event: Event) -> None:
        self.run.apply(event)
        self._draw(lambda: self._show(event))

    def _show(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.steps_per_epoch = max(event.steps_per_epoch, 1)
            self.task = self.progress.add_task(
                "epochs", total=event.total_epochs, status="starting"
            )
        elif self.task is None:
            return
        elif isinstance(event, (StepProgress, StepSampled)):
            done = event.steps_done / self.steps_per_epoch
            self.progress.update(self.task, completed=min(done, self.progress.tasks[0].total or 0))
        elif isinstance(event, EpochEnded):
            r = event.record
            self.progress.update(
                self.task,
                completed=r.epoch,
                status=f"loss {fmt(r.train_loss, 4)}  val acc {fmt(r.val_acc, 3)}",
            )
        elif isinstance(event, (RunFinished, RunFailed)):
            self.progress.update(self.task, status=str(self.run.status))
        if isinstance(event, RunFailed):
            # The error goes to stderr, where a CI log or a user piping the tables looks
            # for it. On a terminal Rich's live display swaps sys.stderr for a proxy onto
            # its own console (stdout), so the process's real stderr is written.
            stderr = sys.__stderr__ or sys.stderr
            print(f"vgdiag: training failed: {printable(self.run.error)}", file=stderr,
                  flush=True)
            if STATE.debug and event.traceback:
                print(event.traceback.rstrip(), file=stderr, flush=True)

    def print_outcome(self, path: Path) -> None:
        """The epoch, layer and findings tables and how the run ended."""
        self._draw(lambda: print_outcome(self.console, self.run, path))


def print_outcome(console: Console, run: RunSummary, path: Path) -> None:
    """The tables at the end of a headless run, from the fold of its events."""
    console.print(epochs_table(run.epochs, run.test))
    console.print(layer_table(run.layers, run.first, run.last))
    console.print(findings_panel(run.findings, run.verdict))
    print_ending(console, run, path)


def print_ending(console: Console, run: RunSummary, path: Path, verdict: bool = False) -> None:
    """How the run ended and where its folder is (with its verdict after the dashboard,
    which leaves nothing else on the terminal)."""
    color = "green" if run.status == RunStatus.COMPLETED else (
        "red" if run.status == RunStatus.FAILED else "yellow")
    hint = f"vgdiag report {shlex.quote(str(path))} --format html"
    said = f"; {safe(run.verdict)}" if verdict else ""
    console.print(f"[{color}]{run.status}[/] in {run.seconds:.1f} s{said}; run folder: "
                  f"{safe(path)}  (report: {safe(hint)})")


TITLE_HEAD = "Diagnosis: "
TITLE_FRAME = 6  # a panel title's cells besides its text: "╭─ " and " ─╮"


def title_verdict(verdict: str, room: int) -> str:
    """`verdict` in at most `room` cells, for a panel title (the findings below it and
    stderr say it whole): whole where it fits, else cut after a finding id
    ("unhealthy: a, b, ...", down to "unhealthy") or, for a failed run, after a word
    ("failed: RuntimeError: ...", down to "failed"); rich cuts mid-word only what is
    left over."""
    verdict = printable(verdict)
    if cell_len(verdict) <= room:
        return verdict
    head, sep, rest = verdict.partition(": ")
    if not sep:
        return verdict
    pieces, glue = (rest.split(", "), ", ") if head == "unhealthy" else (rest.split(" "), " ")
    shown = head + sep
    for i, piece in enumerate(pieces):
        longer = shown + (glue if i else "") + piece
        if cell_len(longer + glue.rstrip() + " ...") > room:
            break
        shown = longer
    if shown == head + sep:  # not one whole id, or word, after the head
        return head
    return shown + glue.rstrip() + " ..."


class DiagnosisPanel(Panel):
    """The findings panel, titled with as much of the verdict as its width holds."""

    def __init__(self, body: Any, verdict: str, color: str) -> None:
        super().__init__(body, title=self._titled(verdict, color, None), title_align="left")
        self.verdict = verdict
        self.color = color

    @staticmethod
    def _titled(verdict: str, color: str, width: int | None) -> str:
        room = (1 << 30) if width is None else width - TITLE_FRAME - len(TITLE_HEAD)
        return f"{TITLE_HEAD}[{color}]{escape(title_verdict(verdict, room))}[/]"

    def _fit(self, options: ConsoleOptions) -> None:
        width = options.max_width if self.width is None else min(options.max_width, self.width)
        self.title = self._titled(self.verdict, self.color, width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        self._fit(options)
        yield from super().__rich_console__(console, options)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        self._fit(options)
        return super().__rich_measure__(console, options)


def findings_panel(findings: Sequence[Finding], verdict: str) -> DiagnosisPanel:
    if not findings and verdict != "healthy":
        body: Any = "No findings in what was measured before the run ended."
    elif not findings:
        body = "[green]No findings: gradients flow to every layer.[/]"
    else:
        rows = []
        for f in findings:
            style = SEVERITY_STYLE.get(f.severity, "")
            where = f" [dim]layers: {safe(', '.join(f.layers[:8]))}" + (
                " ..." if len(f.layers) > 8 else "") + "[/]" if f.layers else ""
            fixes = f"\n    [dim]try: {', '.join(f.recommend)}[/]" if f.recommend else ""
            rows.append(f"[{style}]{f.severity.upper():7}[/] [bold]{f.id}[/]  "
                        f"{safe(f.message)}{where}{fixes}")
        body = Group(*rows)
    color = "green" if verdict == "healthy" else "red"
    # The title is fitted to the width the panel is drawn in (DiagnosisPanel): a title
    # longer than that would be cut mid-word.
    return DiagnosisPanel(body, verdict, color)


def epochs_table(epochs: Sequence[Any], test: dict[str, float] | None) -> Table:
    table = Table(title="Training", title_justify="left")
    for column in ("epoch", "train loss", "train acc", "val loss", "val acc", "seconds"):
        table.add_column(column, justify="right")
    shown = list(epochs)
    if len(shown) > 12:  # first few and last few epochs say what happened
        shown = shown[:4] + [None] + shown[-7:]
    for e in shown:
        if e is None:
            table.add_row("...", "", "", "", "", "")
            continue
        table.add_row(str(e.epoch), fmt(e.train_loss, 4), fmt(e.train_acc, 3),
                      fmt(e.val_loss, 4), fmt(e.val_acc, 3), fmt(e.seconds, 2))
    if test:
        table.caption = f"test loss {fmt(test.get('loss'), 4)}  test acc {fmt(test.get('acc'), 3)}"
    return table
