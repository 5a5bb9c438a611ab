"""The HTML helpers every report page is written with."""

from cohort.report import CSS, format_cell, html_page, html_table, markdown_table_html


def test_markdown_table_becomes_an_escaped_html_table():
    md = "| #real | source | DSC (ID) |\n|---|---|---|\n| 4 | real + <ca> | 0.512 ± 0.010 |\n\n"
    out = markdown_table_html(md)
    assert out.startswith("<table class='numbers'><tr><th>#real</th><th>source</th><th>DSC (ID)</th></tr>")
    assert "<td>real + &lt;ca&gt;</td><td>0.512 ± 0.010</td>" in out and "---" not in out
    assert out.count("<tr>") == 2
    assert markdown_table_html("") == "" and "class" not in markdown_table_html(md, cls=None)


def test_rows_table_formats_cells_and_page_has_the_shared_css():
    t = html_table(["case", "score", "why"], [["a&b", 0.12345, None]])
    assert t == "<table><tr><th>case</th><th>score</th><th>why</th></tr><tr><td>a&amp;b</td><td>0.123</td><td>n/a</td></tr></table>"
    assert format_cell(3) == "3"
    page = html_page("A <title>", ["<h1>x</h1>", t], css="h1{color:red}")
    assert page.startswith("<!doctype html><html><head><meta charset='utf-8'><title>A &lt;title&gt;</title>")
    assert f"<style>{CSS}h1{{color:red}}</style>" in page and page.endswith("</body></html>")
    assert "<h1>x</h1>\n" + t in page
