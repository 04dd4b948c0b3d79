"""Text every layer shows the same way: numbers, one-line messages.

Importable from the engine up (no torch, no UI), so a number in a finding, a table, a
report or the dashboard is written by the same function.
"""

from __future__ import annotations

import math

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
