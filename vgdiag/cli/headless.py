"""The headless front end: a rich progress bar while training, tables at the end."""

from __future__ import annotations

import math
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
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

from vgdiag.engine.events import (
    EpochEnded,
    Event,
    RunFailed,
    RunFinished,
    RunStarted,
    StepProgress,
    StepSampled,
)
from vgdiag.engine.gradflow import grad_ratios, health
from vgdiag.engine.records import Finding, LayerInfo, StepRecord
from vgdiag.engine.status import RunStatus
from vgdiag.engine.summary import RunSummary
from vgdiag.textfmt import fmt_num as fmt

_HEALTH_STYLE = {"bad": "red", "weak": "yellow", "ok": "", "none": ""}

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def safe(text: object) -> str:
    """`text` for a terminal: markup escaped, control characters shown as escapes.

    Names come from the user (layer names, file paths): a stray escape sequence in
    one must not repaint the terminal.
    """
    return escape(printable(text))


def printable(text: object) -> str:
    """`text` with control characters shown as escapes (plain text, no markup)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


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


def layer_table(
    layers: Sequence[LayerInfo], first: StepRecord | None, last: StepRecord | None
) -> Table:
    """Per-layer gradient table, input side first; the ratio column is what vanishes."""
    table = Table(title="Gradient flow per layer (input side first)", title_justify="left")
    # Short headers and unwrapped numbers keep the table inside 80 columns; the
    # README explains each column. Only the layer column folds.
    table.add_column("layer", overflow="fold", ratio=1)
    # One record (inspect: before any step) has one gradient and no update to show.
    at_init = first is None or last is None or first.step == last.step
    columns = (("grad", "÷ out", "sat", "dead") if at_init else
               ("grad@init", "grad now", "÷ out", "upd/W", "ΔW/W0", "sat", "dead"))
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    ordered = sorted(layers, key=lambda i: i.depth)
    last_rec = last or first
    ratios = grad_ratios(last_rec, layers) if last_rec is not None else {}
    for info in ordered:
        s0 = first.layers.get(info.name) if first else None
        s1 = last_rec.layers.get(info.name) if last_rec else None
        g1 = s1.grad_norm if s1 else math.nan
        rel = ratios.get(info.name, math.nan)
        style = _HEALTH_STYLE[health(rel)]
        frozen = "" if info.trainable else ", frozen"
        frozen += "" if info.used else ", unused"
        grads = [fmt(g1, 2)] if at_init else [fmt(s0.grad_norm if s0 else None, 2), fmt(g1, 2)]
        updates = [] if at_init else [fmt(s1.update_ratio if s1 else None, 2),
                                      fmt(s1.weight_change if s1 else None, 2)]
        table.add_row(
            f"{safe(info.name)} [dim]{safe(info.kind)}{frozen}[/]",
            *grads,
            f"[{style}]{fmt(rel, 2)}[/]" if style else fmt(rel, 2),
            *updates,
            fmt(s1.act_saturated if s1 else None, 2),
            fmt(s1.act_dead if s1 else None, 2),
        )
    return table


TITLE_VERDICT = 60  # characters of verdict a panel title holds at 80 columns


def findings_panel(findings: Sequence[Finding], verdict: str) -> Panel:
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
    # A title longer than the terminal is cut mid-word: past this length it keeps the
    # verdict's head ("unhealthy"), and the findings below name every id.
    shown = verdict
    if len(verdict) > TITLE_VERDICT and verdict.startswith("unhealthy:"):
        shown = "unhealthy"
    elif len(verdict) > TITLE_VERDICT:  # a failed run: its error whole on stderr, here cut
        shown = verdict[:TITLE_VERDICT].rsplit(" ", 1)[0] + " ..."  # at a word
    return Panel(body, title=f"Diagnosis: [{color}]{safe(shown)}[/]", title_align="left")


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
