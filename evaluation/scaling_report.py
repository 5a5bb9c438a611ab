"""`tumorgen scaling report`: Table-5-style tables and Figure-8-style curves from finished cells.

Each metric against the number of real CTs, one curve per synthetic source, ID
and OOD panels. With several seeds the band is the spread over seeds (mean +/- 1
SD); with one seed it is the cell's own bootstrap 95 % interval over test cases.

Every sensitivity stands beside the false positives of the same cells (FP/case,
lesion precision); a row whose sensitivities come with many false positives
(:func:`evaluation.metrics.detection_warnings`, with the limits the cells were
evaluated with) is marked in the table and gets a warning line in table.md and
report.html.
"""

from __future__ import annotations

import csv
import html
import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from cohort.io import read_json, write_json, write_text
from cohort.report import html_page, markdown_table_html
from evaluation.metrics import MetricsConfig, detection_warnings
from evaluation.scaling import HEADLINE

SPLITS = (("id", "in-distribution"), ("ood", "out-of-distribution"))


def collect(out: str | Path) -> list[dict[str, Any]]:
    cells = sorted(Path(out).glob("cells/*/cell.json"))
    return [read_json(p) for p in cells]


def _limits(rs: list[dict[str, Any]], split: str) -> tuple[float, float]:
    """The warning limits the cells of a row were evaluated with (the strictest when they differ)."""
    d = MetricsConfig()
    fp = [r[split].get("warn_fp_per_case") for r in rs if r.get(split)]
    prec = [r[split].get("warn_lesion_precision") for r in rs if r.get(split)]
    fp = [v for v in fp if v is not None] or [d.warn_fp_per_case]
    prec = [v for v in prec if v is not None] or [d.warn_lesion_precision]
    return float(min(fp)), float(max(prec))


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (n_real, source, ratio): mean, SD and count over seeds, for every metric and split,
    and ``<split>_warnings``: the false-positive warnings on those means."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["n_real"], r["source"], r["ratio"])].append(r)
    rows = []
    for (n, src, ratio), rs in sorted(groups.items(), key=lambda kv: (kv[0][1] != "none", kv[0][1], kv[0][0], kv[0][2])):
        row: dict[str, Any] = {"n_real": n, "source": src, "ratio": ratio, "seeds": len(rs)}
        for split, _ in SPLITS:
            for key, _ in HEADLINE:
                vals = np.array([r[split].get(key) for r in rs if r.get(split) and r[split].get(key) is not None], float)
                vals = vals[np.isfinite(vals)]
                row[f"{split}_{key}"] = float(vals.mean()) if vals.size else None
                row[f"{split}_{key}_sd"] = float(vals.std(ddof=1)) if vals.size > 1 else None
                if len(rs) == 1:
                    ci = rs[0].get(split, {}).get(key + "_ci")
                    row[f"{split}_{key}_ci"] = ci
            name = f"{n} real, {'real only' if src == 'none' else f'{src} x{ratio:g}'}, {split.upper()}"
            row[f"{split}_warnings"] = detection_warnings(name, {k: row[f"{split}_{k}"] for k, _ in HEADLINE},
                                                         *_limits(rs, split))
        rows.append(row)
    return rows


def _fmt(v: Any, sd: Any = None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def warnings(rows: list[dict[str, Any]]) -> list[str]:
    """Every row's false-positive warnings, ID then OOD."""
    return [w for r in rows for s, _ in SPLITS for w in r.get(f"{s}_warnings", [])]


def table_markdown(rows: list[dict[str, Any]]) -> str:
    head = (["#real", "source", "ratio", "seeds"] + [f"{lab} ({split.upper()})" for split, _ in SPLITS for _, lab in HEADLINE]
            + ["warning"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["n_real"]), r["source"], f"{r['ratio']:g}", str(r["seeds"])]
        cells += [_fmt(r[f"{s}_{k}"], r.get(f"{s}_{k}_sd")) for s, _ in SPLITS for k, _ in HEADLINE]
        flagged = [s.upper() for s, _ in SPLITS if r.get(f"{s}_warnings")]
        cells.append(("⚠ " + ", ".join(flagged)) if flagged else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def warnings_markdown(rows: list[dict[str, Any]]) -> str:
    """The warning lines under the table ("" when none)."""
    ws = warnings(rows)
    return ("\n" + "".join(f"**{w}**\n\n" for w in ws)) if ws else ""


def table_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    keys = list(rows[0].keys()) if rows else []
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: (r[k] if not isinstance(r[k], list) else ";".join(map(str, r[k]))) for k in keys})
    return buf.getvalue()


def plot_curves(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One PNG per metric: ID and OOD panels, metric vs #real, one curve per source (and ratio)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    curves: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        name = r["source"] if r["source"] == "none" else f"{r['source']} x{r['ratio']:g}"
        curves[name].append(r)
    for key, label in HEADLINE:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for ax, (split, title) in zip(axes, SPLITS):
            for name, rs in curves.items():
                rs = sorted(rs, key=lambda r: r["n_real"])
                x = np.array([r["n_real"] for r in rs], float)
                y = np.array([np.nan if r[f"{split}_{key}"] is None else r[f"{split}_{key}"] for r in rs], float)
                if np.all(np.isnan(y)):
                    continue
                ax.plot(x, y, marker="o", label="real only" if name == "none" else f"real + {name}")
                sd = np.array([np.nan if r.get(f"{split}_{key}_sd") is None else r[f"{split}_{key}_sd"] for r in rs], float)
                if np.any(np.isfinite(sd)):
                    ax.fill_between(x, y - sd, y + sd, alpha=0.2)
                else:
                    ci = [r.get(f"{split}_{key}_ci") or [None, None] for r in rs]
                    lo = np.array([np.nan if c[0] is None else c[0] for c in ci], float)
                    hi = np.array([np.nan if c[1] is None else c[1] for c in ci], float)
                    if np.any(np.isfinite(lo)):
                        ax.fill_between(x, lo, hi, alpha=0.15)
            ax.set_title(f"{label}, {title}")
            ax.set_xlabel("# real tumor CTs in training")
            ax.set_xscale("log", base=2)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(label)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        p = out_dir / f"scaling_{key}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def write_report(out: str | Path, note: str | None = None) -> Path:
    """Write table.csv, table.md, summary.json, PNG curves and report.html under ``out/report``."""
    out = Path(out)
    rdir = out / "report"
    rdir.mkdir(parents=True, exist_ok=True)
    results = collect(out)
    if not results:
        raise FileNotFoundError(f"{out}: no finished cell (cells/*/cell.json) to report")
    rows = aggregate(results)
    write_text(rdir / "table.csv", table_csv(rows))
    md = table_markdown(rows)
    write_text(rdir / "table.md", md + warnings_markdown(rows))
    write_json(rdir / "summary.json", {"rows": rows, "warnings": warnings(rows), "cells": results})
    pngs = plot_curves(rows, rdir)
    n_test = {}
    for r in results:
        for split, _ in SPLITS:
            n = r.get(split, {}).get("dsc_n")
            if n is not None:
                n_test[split] = n
    small = max(r["n_real"] for r in results) < 20 or min(n_test.values() or [0]) < 20
    parts = ["<h1>Scaling study: segmentation vs number of real CTs</h1>"]
    if note:
        parts.append(f"<p>{html.escape(note)}</p>")
    if small:
        parts.append("<p class='warn'>Small study: few real training cases and/or few test cases per split "
                     f"(test cases with tumors: {n_test}). Differences between sources at this size are within "
                     "noise; read the bootstrap intervals before any conclusion.</p>")
    parts += [f"<p class='warn'>{html.escape(w)}</p>" for w in warnings(rows)]
    parts.append("<h2>Table (mean over seeds ± SD)</h2>" + markdown_table_html(md))
    for p in pngs:
        parts.append(f"<h3>{html.escape(p.stem.replace('scaling_', ''))}</h3><img src='{p.name}' width='1000'>")
    return write_text(rdir / "report.html", html_page("Scaling study", parts))
