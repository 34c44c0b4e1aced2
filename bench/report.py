"""BENCHMARKS.md: markdown tables, and replacing only this harness's own sections.

Each section this harness writes sits between two HTML comments,

    <!-- bench:NAME -->
    ...
    <!-- /bench:NAME -->

and only those are replaced on the next run. Everything else in the file (say
a "Failover" section another script wrote) is kept where it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; columns after the first are right-aligned."""
    align = ["---", *["---:" for _ in headers[1:]]]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _marker(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def wrap(name: str, body: str) -> str:
    begin, end = _marker(name)
    return f"{begin}\n{body.strip()}\n{end}"


def owned_headings(text: str) -> set[str]:
    """'## ' headings that appear outside this harness's marked sections."""
    outside = re.sub(r"<!-- bench:(\S+) -->.*?<!-- /bench:\1 -->", "", text, flags=re.S)
    return {line[3:].strip() for line in outside.splitlines() if line.startswith("## ")}


def merge(path: Path, sections: list[tuple[str, str | None]], title: str) -> None:
    """Replace (or append, in order) each named section; keep everything else. A
    body of None keeps that section as it is: an anchor for the ones after it."""
    text = path.read_text() if path.exists() else f"{title}\n"
    previous_end = None
    for name, body in sections:
        begin, end = _marker(name)
        if body is None:
            previous_end = end if begin in text else previous_end
            continue
        block = wrap(name, body)
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _m, b=block: b, text, count=1)
        elif previous_end is not None and previous_end in text:
            # Keep this harness's sections together, in the order given.
            at = text.index(previous_end) + len(previous_end)
            text = text[:at] + "\n\n" + block + text[at:]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        previous_end = end
    path.write_text(text.rstrip("\n") + "\n")


def section_rows(text: str, name: str) -> list[list[str]]:
    """The body rows of the first table inside the marked section `name` of `text`."""
    begin, end = _marker(name)
    found = re.search(re.escape(begin) + r"(.*?)" + re.escape(end), text, re.S)
    if found is None:
        return []
    rows = []
    for line in found.group(1).splitlines():
        if not line.startswith("| ") or set(line) <= set("|-: "):
            continue
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows[1:]  # without the header
