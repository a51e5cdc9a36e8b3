"""Fixed-width text tables for the console."""

from __future__ import annotations


def text_table(header: list[str], rows: list[list[str]], left: int) -> str:
    """The first `left` columns align left (names), the rest right (numbers)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
