"""Rows -> text: the stdout table (nccl-tests' columns), markdown for REPORT.md."""
from __future__ import annotations

from .units import format_size

COLUMNS = [("size", 8), ("count", 11), ("type", 8), ("op", 4), ("algo", 14), ("time_us", 11),
           ("algbw", 9), ("busbw", 9), ("ratio", 6), ("roof", 6), ("#wrong", 7)]


def label(row: dict) -> str:
    """The algorithm's name, with what it chose where it chooses (auto>blocked)."""
    return row["algo"] + (f">{row['chosen']}" if row.get("chosen") else "")


def _cells(row: dict) -> list[str]:
    ratio = row.get("ratio")
    algo = label(row)
    return [format_size(row["bytes"]), str(row["count"]), row["dtype"], row["op"] or "-", algo, f"{row['time_us']:.1f}", f"{row['algbw']:.3f}", f"{row['busbw']:.3f}",
            "-" if ratio is None else f"{ratio:.2f}",
            f"{row['roofline']:.2f}" if row.get("roofline") else "-",
            "n/a" if row["wrong"] < 0 else str(row["wrong"])]


def header(title: str) -> str:
    names = "".join(name.rjust(width) for name, width in COLUMNS)
    return (f"# {title}\n# algbw, busbw in GB/s (1e9); ratio = busbw / mpi busbw at the same size;"
            f"\n# roof = the memory roofline's time for the schedule's traffic (bench/membw.py) "
            f"over the time measured\n#{names[1:]}")


def line(row: dict) -> str:
    """Cells right-aligned in their columns; one too wide for its column (ring[LAYOUT])
    still gets a space before it."""
    return "".join(cell.rjust(width) if len(cell) <= width else " " + cell
                   for cell, (_, width) in zip(_cells(row), COLUMNS))


def markdown(rows: list[dict], columns=None) -> str:
    names = [name for name, _ in COLUMNS]
    out = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    out += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(out)


def markdown_table(headers: list[str], body: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(out)


def text_table(headers: list[str], body: list[list]) -> str:
    """Left-aligned plain-text columns for stdout."""
    cells = [headers] + [[str(c) for c in row] for row in body]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
