"""Text every layer shows the same way: numbers, one-line messages.

Importable from the engine up (no torch, no UI), so a number in a finding, a table, a
report or the dashboard is written by the same function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

# Long messages from user code are cut so an error stays one readable line.
MAX_DETAIL = 240


def fmt_num(x: float | None, digits: int = 3, missing: str = "-") -> str:
    """`x` in `digits` significant digits ('inf' for infinity); `missing` for None or NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return missing
    return f"{x:.{digits}g}"


def one_line(text: object, limit: int | None = None) -> str:
    """Whitespace (newlines included) collapsed; cut to `limit` characters when given."""
    flat = " ".join(str(text).split())
    if limit is None or len(flat) <= limit:
        return flat
    return flat[: limit - 3] + "..."


def printable(text: object) -> str:
    """`text` with control characters shown as escapes (plain text, no markup): a name
    from the user must not repaint the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def pack(items: Sequence[T], width: int, sep: int,
         measure: Callable[[T], int]) -> list[list[T]]:
    """`items` in lines of at most `width` (each `measure`d, `sep` cells between two),
    filled in order and never breaking an item: one longer than `width` has its own
    line. The one way a layer name, a kind or a row of fields is laid into lines."""
    lines: list[list[T]] = []
    used = 0
    for item in items:
        size = measure(item)
        if lines and used + sep + size <= width:
            lines[-1].append(item)
            used += sep + size
        else:
            lines.append([item])
            used = size
    return lines


def plural(n: int, word: str) -> str:
    """'1 epoch', '2 epochs', '0 epochs'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def a_type(value: object) -> str:
    """'an int', 'a list': the type of `value` named with its article."""
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"
