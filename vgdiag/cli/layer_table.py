"""The per-layer gradient table of `vgdiag run --headless` and `vgdiag inspect`, laid
out for the width it is drawn in: numbers whole, layer names never cut mid-name."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from vgdiag.engine.gradflow import grad_ratios, health
from vgdiag.engine.records import LayerInfo, StepRecord
from vgdiag.textfmt import fmt_num as fmt
from vgdiag.textfmt import pack, printable

_HEALTH_STYLE = {"bad": "red", "weak": "yellow", "ok": "", "none": ""}


def layer_table(
    layers: Sequence[LayerInfo], first: StepRecord | None, last: StepRecord | None
) -> LayerTable:
    """Per-layer gradient table, input side first; the ratio column is what vanishes."""
    table = LayerTable(title="Gradient flow per layer (input side first)",
                       title_justify="left")
    # Short headers and unwrapped numbers keep the table inside 80 columns; the
    # README explains each column. The layer column is laid out when drawn (LayerTable).
    table.add_column("layer", no_wrap=True, overflow="ellipsis")
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
        table.add_layer(
            info.name, f"{info.kind_label}{frozen}",
            *grads,
            f"[{style}]{fmt(rel, 2)}[/]" if style else fmt(rel, 2),
            *updates,
            fmt(s1.act_saturated if s1 else None, 2),
            fmt(s1.act_dead if s1 else None, 2),
        )
    return table


NAME_MIN = 8  # cells the layer column keeps on the narrowest terminal


class LayerTable(Table):
    """The per-layer table; its layer column is laid out for the width it is drawn in.

    A layer name is never cut in the middle: a fragment of `features.10` reads as
    `features.1`, another layer. The numbers keep their width (they are the data), and
    the layer column takes what is left, in the first of these layouts that fits:

    1. "name kind" on one line;
    2. the name whole on its line, the kind (words whole) below it;
    3. the name folded after a '.' only: a line that ends in '.' goes on below.

    Where it takes that to fit, headers wider than their numbers go on two lines
    ("grad" over "@init"), one at a time; then, on a narrow terminal, the same three
    without cell padding. Where not even each dotted part of a name fits, the parts
    too long are cut; the numbers give up width only to leave the layer column
    NAME_MIN cells. Drawn, a table that would need such cuts becomes one block per
    layer instead (name, kind, then `header value` fields); measured, the cut layout
    stands, its cut pieces ending in an ellipsis.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.names: list[tuple[str, str]] = []  # (name, kind) per row, printable
        self._headers: list[Any] = []

    def add_layer(self, name: str, kind: str, *cells: str) -> None:
        """A row: the layer's name, its kind (and flags) and the numeric cells."""
        name, kind = printable(name or "<root>"), printable(kind)
        self.names.append((name, kind))
        self.add_row(name_cell(name, kind, 1 << 30), *cells)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width if self.width is None else self.width
        try:
            if self._fit(width):
                yield from super().__rich_console__(console, options)
            else:  # a table would cut a name or a number: one block per layer instead
                yield from self._blocks(width)
        finally:
            self._unfit()

    def _blocks(self, width: int) -> list[Text]:
        """Each layer as a block: its name (whole, or folded after a '.'), its kind, then
        `header value` fields packed whole into lines, as compare's narrow table does."""
        out = [Text(str(self.title), style="italic")] if self.title else []
        headers = [str(h).replace("\n", "") for h in self._headers]
        columns = [[Text.from_markup(str(c)) for c in col._cells] for col in self.columns[1:]]
        for row, (name, kind) in enumerate(self.names):
            block = Text(no_wrap=True, overflow="ellipsis")
            block.append("\n".join(fold_name(name, width)), style="bold")
            block.append(f"\n  {kind}", style="dim")
            fields = [Text(f"{header} ").append_text(col[row])
                      for header, col in zip(headers, columns)]
            for line in pack(fields, width - 2, 3, lambda t: t.cell_len):
                block.append("\n  ").append_text(Text(" · ").join(line))
            out.append(block)
        return out

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        self._fit(options.max_width if self.width is None else self.width)
        try:
            return super().__rich_measure__(console, options)
        finally:
            self._unfit()

    def _unfit(self) -> None:
        """The headers as built (`_fit` may have put some on two lines)."""
        for column, header in zip(self.columns[1:], self._headers):
            column.header = header

    def _fit(self, max_width: int) -> bool:
        """Lay the table out for `max_width` cells (see the class's docstring); False
        where only cutting a name part or a number would make it fit."""
        name_column, *numbers = self.columns
        if not self._headers:
            self._headers = [column.header for column in numbers]
        values = [max([cell_len(Text.from_markup(str(c)).plain) for c in column.cells] + [1])
                  for column in numbers]
        tall = [_two_line(str(h)) for h in self._headers]
        wide = [max(v, cell_len(str(h))) for v, h in zip(values, self._headers)]
        narrow = [max(v, *map(cell_len, t.split("\n"))) for v, t in zip(values, tall)]
        # Headers go on two lines one at a time, the one that gives most room first.
        order = sorted((i for i in range(len(numbers)) if narrow[i] < wide[i]),
                       key=lambda i: wide[i] - narrow[i], reverse=True)
        header = cell_len(str(name_column.header))
        needs = {
            "line": max([cell_len(f"{n} {k}") for n, k in self.names] + [header]),
            "whole": max([cell_len(n) for n, _ in self.names] + [header]),
            "fold": max([cell_len(p) for n, _ in self.names for p in _dotted(n)] + [header]),
        }

        def room(pad: int, split: int) -> int:  # the layer column's, `split` headers tall
            widths = [narrow[i] if i in order[:split] else wide[i] for i in range(len(wide))]
            return max_width - self._extra_width - 2 * pad * len(self.columns) - sum(widths)

        chosen = None
        for pad, mode in ((1, "line"), (1, "whole"), (1, "fold"),
                          (0, "line"), (0, "whole"), (0, "fold")):
            splits = [len(order)] if mode == "fold" else range(len(order) + 1)
            split = next((k for k in splits if room(pad, k) >= needs[mode]), None)
            if split is not None:
                chosen = (pad, split, room(pad, split))
                break
        shrink = 0
        if chosen is None:  # a part too long is cut; below NAME_MIN the numbers are too
            left = room(0, len(order))
            chosen = (0, len(order), max(left, min(needs["fold"], NAME_MIN)))
            shrink = chosen[2] - left
        squeezed = shrink > 0
        pad, split, width = chosen
        self.padding = (0, pad)
        cut = [narrow[i] if i in order[:split] else wide[i] for i in range(len(wide))]
        while shrink > 0 and max(cut) > 1:  # cut cells show an ellipsis
            cut[cut.index(max(cut))] -= 1
            shrink -= 1
        for i, column in enumerate(numbers):
            column.header = tall[i] if i in order[:split] else self._headers[i]
            column.width = cut[i] if squeezed else None
        cells = [name_cell(n, k, width) for n, k in self.names]
        name_column._cells = [*cells]
        longest = max([cell_len(line) for c in cells for line in c.plain.split("\n")]
                      + [header])
        name_column.width = min(width, longest)  # a kind longer than that: cut, marked
        return width >= needs["fold"] and not squeezed


def _two_line(header: str) -> str:
    """A header on two lines: "grad now" as "grad" over "now", "grad@init" at its '@'."""
    if " " in header:
        return header.replace(" ", "\n", 1)
    head, at, tail = header.partition("@")
    return f"{head}\n@{tail}" if at and head else header


def _dotted(name: str) -> list[str]:
    """A name's parts, each with its '.': "features.10" is "features." and "10"."""
    return re.findall(r"[^.]*\.|[^.]+$", name) or [name]


def fold_name(name: str, width: int) -> list[str]:
    """`name` on lines of at most `width` cells, broken only after a '.'.

    A part longer than `width` keeps a line of its own (drawn with an ellipsis where
    cut), so no line ever holds a piece of a part: "features.1" never stands for
    "features.10".
    """
    return ["".join(line) for line in pack(_dotted(name), width, 0, cell_len)]


def name_cell(name: str, kind: str, width: int) -> Text:
    """The layer cell: "name kind" on a line where that fits, else the name (whole, or
    folded at '.') and the kind below it, words kept whole."""
    cell = Text(no_wrap=True, overflow="ellipsis")
    if cell_len(f"{name} {kind}") <= width:
        return cell.append(name).append(f" {kind}", style="dim")
    cell.append("\n".join(fold_name(name, width)))
    lines = [" ".join(line) for line in pack(kind.split(" "), width, 1, cell_len)]
    return cell.append("\n" + "\n".join(lines), style="dim")
