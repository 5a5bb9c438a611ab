"""HTML report pages: one stylesheet, one page skeleton, tables from rows or from Markdown.

The filter audit (:mod:`generative.quality.audit`), the scaling report
(:mod:`evaluation.scaling_report`) and the demo report (:mod:`tumorgen.demo`) are
written with these helpers; ``cohort`` is the package every one of them imports.
Cell and title text is HTML-escaped here; ``body`` parts are HTML already.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from typing import Any

#: the stylesheet of every report page
CSS = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:0.6em 0}td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px}
th{background:#eee}img{max-width:100%;border:1px solid #ddd;margin:4px 0}.key{font-size:15px}
.note{color:#555;font-size:13px}.warn{background:#fff3cd;padding:8px}
table.numbers td,table.numbers th{text-align:right;font-size:12px}"""


def html_page(title: str, body: str | Iterable[str], css: str = "") -> str:
    """A whole HTML page: ``<!doctype html>``, ``title`` (escaped), :data:`CSS` plus ``css``, then
    ``body`` (HTML; several parts are joined with newlines)."""
    parts = [body] if isinstance(body, str) else list(body)
    head = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}{css}</style></head><body>")
    return "\n".join([head, *parts, "</body></html>"])


def format_cell(value: Any) -> str:
    """A table cell's text: ``n/a`` for None, floats with 3 decimals, anything else as ``str``; escaped."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def html_table(header: Sequence[Any], rows: Iterable[Sequence[Any]], cls: str | None = None,
               cell: Callable[[Any], str] = format_cell) -> str:
    """``<table>`` with one header row and ``rows``; each cell through ``cell`` (escapes the text).
    ``cls``: the table's CSS class (``"numbers"``: right-aligned, for tables of numbers)."""
    attr = f" class='{html.escape(cls)}'" if cls else ""
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    b = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table{attr}><tr>{h}</tr>{b}</table>"


def markdown_table_html(md: str, cls: str | None = "numbers") -> str:
    """A Markdown pipe table (``| a | b |`` lines, a ``|---|`` separator) as an HTML table; the first
    line is the header. Text outside the table's lines is not expected. Cells are escaped."""
    lines = [ln for ln in md.strip().splitlines() if ln.strip() and not ln.lstrip().startswith("|---")]
    if not lines:
        return ""
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    return html_table(rows[0], rows[1:], cls, cell=lambda c: html.escape(str(c)))
