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
import json
import shutil
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
    """Every finished cell's ``cell.json``, with ``train_fit`` (:mod:`segmentation.health`) read from
    ``train_fit.json`` (a published copy) or ``seg/train_fit.json`` where the cell record lacks it (cells made before the check, checked
    afterwards with ``tumorgen segment fit``)."""
    from segmentation.health import FIT_NAME

    results = []
    for p in sorted(Path(out).glob("cells/*/cell.json")):
        r = read_json(p)
        fit = next((f for f in (p.parent / FIT_NAME, p.parent / "seg" / FIT_NAME) if f.is_file()), None)
        if "train_fit" not in r and fit is not None:
            r["train_fit"] = read_json(fit)
        results.append(r)
    return results


def collapsed(r: dict[str, Any]) -> bool:
    """Whether a cell's model ended with a collapsed lesion output (never predicts its own training tumors)."""
    from segmentation.health import collapsed_classes

    return bool(collapsed_classes(r.get("train_fit")))


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
        row: dict[str, Any] = {"n_real": n, "source": src, "ratio": ratio, "seeds": len(rs),
                               "collapsed": sum(collapsed(r) for r in rs)}
        label = f"{n} real, {'real only' if src == 'none' else f'{src} x{ratio:g}'}"
        for split, _ in SPLITS:
            for key, _ in HEADLINE:
                vals = np.array([r[split].get(key) for r in rs if r.get(split) and r[split].get(key) is not None], float)
                vals = vals[np.isfinite(vals)]
                row[f"{split}_{key}"] = float(vals.mean()) if vals.size else None
                row[f"{split}_{key}_sd"] = float(vals.std(ddof=1)) if vals.size > 1 else None
                if len(rs) == 1:
                    ci = rs[0].get(split, {}).get(key + "_ci")
                    row[f"{split}_{key}_ci"] = ci
            row[f"{split}_warnings"] = detection_warnings(f"{label}, {split.upper()}", {k: row[f"{split}_{k}"] for k, _ in HEADLINE},
                                                         *_limits(rs, split))
        if row["collapsed"]:
            row["id_warnings"] = [*row["id_warnings"], (
                f"{label}: the lesion output collapsed in {row['collapsed']} of {len(rs)} seeds (it never "
                "predicts a lesion, not even on its own training tumors; `tumorgen segment fit`): those cells "
                "measure a failed training, not the source")]
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
        if r.get("collapsed"):
            flagged.append(f"collapsed {r['collapsed']}/{r['seeds']}")
        cells.append(("⚠ " + ", ".join(flagged)) if flagged else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def warnings_markdown(rows: list[dict[str, Any]]) -> str:
    """The warning lines under the table ("" when none)."""
    ws = warnings(rows)
    return ("\n" + "".join(f"**{w}**\n\n" for w in ws)) if ws else ""


def table_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    # every row's keys: a row of one seed carries its cell's CIs (``*_ci``), a row of several does not
    keys = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: (r.get(k) if not isinstance(r.get(k), list) else ";".join(map(str, r[k]))) for k in keys})
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


def _ci(r: dict[str, Any] | None) -> str:
    if r is None or r.get("value") is None:
        return "n/a"
    if r.get("ci_low") is None:
        return f"{r['value']:.3f}"
    return f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


def table5_tables(values: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Table 5, one (title, Markdown table) a split: rows real sizes, columns sources, DSC with its 95 % CI
    (bootstrap over test cases and seeds)."""
    arms = list(dict.fromkeys(r["source"] for r in values))
    sizes = sorted({r["n_real"] for r in values})
    by = {(r["source"], r["n_real"], r["split"]): r for r in values}
    out = []
    for split, title in SPLITS:
        head = ["#real"] + ["real only" if a == "none" else f"real + {a}" for a in arms]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join([str(n)] + [_ci(by.get((a, n, split))) for a in arms]) + " |" for n in sizes]
        out.append((f"Lesion DSC, {title} (95 % CI)", "\n".join(lines) + "\n"))
    return out


def table5_markdown(values: list[dict[str, Any]]) -> str:
    return "\n".join(f"**{title}**\n\n{md}" for title, md in table5_tables(values))


def differences_markdown(diffs: list[dict[str, Any]]) -> str:
    """Every source minus real only, per metric, size and split, with paired 95 % CIs; * marks an interval
    that excludes 0."""
    from evaluation.scaling_stats import PAIRED

    labels = dict(PAIRED)
    keys = list(dict.fromkeys((d["source"], d["n_real"]) for d in diffs))
    by = {(d["metric"], d["split"], d["source"], d["n_real"]): d for d in diffs}
    cols = [(m, s) for m, _ in PAIRED for s, _ in SPLITS]
    head = ["source", "#real"] + [f"Δ {labels[m]} ({s.upper()})" for m, s in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for src, n in keys:
        cells = [src, str(n)]
        for m, s in cols:
            d = by.get((m, s, src, n))
            cells.append(_ci(d) + (" *" if d is not None and d.get("verdict") != "unclear" else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def lessons_markdown(les: dict[str, dict[str, Any]]) -> str:
    lines = ["| lesson | claim | reproduced | numbers (95 % CI) |", "|---|---|---|---|"]
    for key, v in les.items():
        nums = "; ".join(f"{k}: {_ci(c)}" for k, c in v["numbers"].items()) or v.get("missing", "")
        if v.get("caveat"):
            nums += f" ⚠ {v['caveat']}"
        lines.append(f"| {key} | {v['claim']} | {v['reproduced']} | {nums} |")
    return "\n".join(lines) + "\n"


def plot_figure8(values: list[dict[str, Any]], path: Path) -> Path:
    """Figure 8: DSC vs real size, ID and OOD panels, one curve per source with its 95 % CI band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    arms = list(dict.fromkeys(r["source"] for r in values))
    for ax, (split, title) in zip(axes, SPLITS):
        for arm in arms:
            rs = sorted((r for r in values if r["source"] == arm and r["split"] == split), key=lambda r: r["n_real"])
            if not rs:
                continue
            x = np.array([r["n_real"] for r in rs], float)
            nan = float("nan")
            y = np.array([nan if r["value"] is None else r["value"] for r in rs], float)
            lo = np.array([nan if r["ci_low"] is None else r["ci_low"] for r in rs], float)
            hi = np.array([nan if r["ci_high"] is None else r["ci_high"] for r in rs], float)
            (line,) = ax.plot(x, y, marker="o", label="real only" if arm == "none" else f"real + {arm}")
            ax.fill_between(x, lo, hi, alpha=0.15, color=line.get_color())
        ax.set_title(f"DSC, {title}")
        ax.set_xlabel("# real tumor CTs in training")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("lesion DSC (95 % CI over test cases and seeds)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def paired_statistics(out: Path, results: list[dict[str, Any]], rdir: Path) -> dict[str, Any] | None:
    """differences.csv/.json, table5.md/.csv, figure8.png and lessons.json (None: no cell has per-case numbers)."""
    from evaluation.scaling_stats import (
        StudyCases,
        arm_name,
        arm_values,
        differences,
        lessons,
        report_config,
        study_sources,
    )

    rcfg = report_config(out)
    sc = StudyCases.load(out, results, rcfg)
    if not sc:
        return None
    sources, ratio = study_sources(out, results)
    sc.order = [arm_name(s, r) for s in sources for r in sorted({float(c["ratio"]) for c in results
                                                                 if c["source"] == s})]
    diffs = differences(sc)
    values = arm_values(sc, "dsc")
    les = lessons(sc, rcfg, sources, ratio, collapsed=_collapsed_by_arm(results, arm_name))
    flat = [{k: (json.dumps(v, sort_keys=True) if isinstance(v, dict) else v) for k, v in d.items()} for d in diffs]
    write_text(rdir / "differences.csv", _rows_csv(flat))
    write_text(rdir / "table5.csv", _rows_csv([{k: (json.dumps(v, sort_keys=True) if isinstance(v, dict) else v)
                                                for k, v in r.items()} for r in values]))
    write_json(rdir / "lessons.json", les)
    md = {"table5": table5_markdown(values), "table5_tables": table5_tables(values), "differences": differences_markdown(diffs),
          "lessons": lessons_markdown(les)}
    write_text(rdir / "table5.md", md["table5"] + "\n" + md["differences"] + "\n" + md["lessons"])
    png = plot_figure8(values, rdir / "figure8.png")
    return {"differences": diffs, "values": values, "lessons": les, "markdown": md, "png": png,
            "bootstrap": {"n_boot": rcfg.n_boot, "seed": rcfg.seed, "ci_level": rcfg.ci_level}}


def _collapsed_by_arm(results: list[dict[str, Any]], arm_name) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in results:
        if collapsed(r):
            out.setdefault(arm_name(r["source"], float(r["ratio"])), []).append(r["cell"])
    return out


def _rows_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in keys})
    return buf.getvalue()


def write_report(out: str | Path, note: str | None = None) -> Path:
    """Write table.csv, table.md, summary.json, PNG curves and report.html under ``out/report``; with
    per-case numbers (cells' ``eval_<split>/cases.csv``) also the paired statistics: differences.csv,
    table5.md/.csv, figure8.png and lessons.json (:mod:`evaluation.scaling_stats`)."""
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
    paired = paired_statistics(out, results, rdir)
    summary: dict[str, Any] = {"rows": rows, "warnings": warnings(rows), "cells": results}
    if paired is not None:
        summary.update(differences=paired["differences"], table5=paired["values"], lessons=paired["lessons"],
                       bootstrap=paired["bootstrap"])
    write_json(rdir / "summary.json", summary)
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
    if paired is not None:
        b = paired["bootstrap"]
        parts.append("<h2>Lessons</h2><p>Reproduced: true only when every interval the lesson rests on excludes "
                     "the opposite, false when one shows the opposite, else unclear. Intervals: paired percentile "
                     f"bootstrap over test cases and seeds jointly ({b['n_boot']} resamples, seed {b['seed']}, "
                     f"level {b['ci_level']:g}).</p>" + markdown_table_html(paired["markdown"]["lessons"]))
        parts.append("<h2>Table 5: lesion DSC by real size and source</h2>"
                     + "".join(f"<h3>{html.escape(title)}</h3>" + markdown_table_html(tmd)
                               for title, tmd in paired["markdown"]["table5_tables"]))
        parts.append(f"<h3>Figure 8</h3><img src='{paired['png'].name}' width='1000'>")
        parts.append("<h2>Each source minus real only (paired 95 % CI; * excludes 0)</h2>"
                     + markdown_table_html(paired["markdown"]["differences"]))
    parts.append("<h2>Table (mean over seeds ± SD)</h2>" + markdown_table_html(md))
    for p in pngs:
        parts.append(f"<h3>{html.escape(p.stem.replace('scaling_', ''))}</h3><img src='{p.name}' width='1000'>")
    return write_text(rdir / "report.html", html_page("Scaling study", parts))


#: what `publish` copies: the study's small results, enough for `tumorgen scaling report` to regenerate
#: every table, figure and lessons.json in the copy (globs relative to the study folder)
PUBLISHED = ("scaling.yaml", "stages/*.json", "cells/*/cell.json", "cells/*/eval_id/cases.csv",
             "cells/*/eval_ood/cases.csv", "cells/*/eval_id/summary.json", "cells/*/eval_ood/summary.json",
             "report/*.json", "report/*.csv", "report/*.md", "report/*.png", "report/*.html")


def publish(out: str | Path, dest: str | Path) -> list[Path]:
    """Copy the small results of study ``out`` (:data:`PUBLISHED`) to ``dest`` (e.g.
    benchmarks/results/study_phantom/), each file atomically; returns the copies."""
    from cohort.io import atomic_path
    from segmentation.health import FIT_NAME

    out, dest = Path(out), Path(dest)
    if out.resolve() == dest.resolve():
        return []
    copied = []
    pairs = [(src, dest / src.relative_to(out)) for pattern in PUBLISHED for src in sorted(out.glob(pattern))]
    # the training-fit check of each cell's model, beside its cell.json (the copy holds no run folders)
    pairs += [(src, dest / src.parent.parent.relative_to(out) / src.name)
              for src in sorted(out.glob(f"cells/*/seg/{FIT_NAME}"))]
    for src, target in pairs:
        with atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
        copied.append(target)
    return copied


def run_and_report(cfg, out: str | Path, only: list[str] | None = None, show: bool = True,
                   publish_to: str | Path | None = None, note: str | None = None):
    """`tumorgen scaling run`: every stage and cell (:func:`evaluation.scaling.run_study`), then the report,
    then (``publish_to`` or the config's ``report.publish``) the copy of the small results."""
    from evaluation.scaling import run_study

    rep = run_study(cfg, out, only=only, show=show)
    page = None
    if any(Path(out).glob("cells/*/cell.json")):
        page = write_report(out, note=note or f"study {cfg.name}")
        dest = publish_to or cfg.report.publish
        if dest:
            publish(out, dest)
    return rep, page
