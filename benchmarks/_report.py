"""Shared by the benchmark scripts: replace one marked section of RESULTS.md, keep the rest."""

from __future__ import annotations

from pathlib import Path

HEADER = ("# Benchmark results\n\nEach section: what was measured, on which machine, and the ratio against a "
          "reference in the same run. Re-run the script named in the section to refresh it.\n")


def write_section(md: Path, begin: str, end: str, section: str) -> None:
    """Put ``section`` (which starts with ``begin`` and ends with ``end``) in place of the text
    between those markers in ``md``, or append it; written atomically."""
    from cohort.io import write_text

    text = md.read_text() if md.exists() else HEADER
    if begin in text and end in text:
        text = text[: text.index(begin)] + section.rstrip("\n") + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    write_text(md, text)
    print(f"wrote {md}")
