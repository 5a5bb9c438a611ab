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


def machine_line() -> str:
    """The hardware every benchmark number is measured on: device, CPU capability and whether bf16
    is native (what ``mixed_precision: auto`` picks), threads, load, versions."""
    import os
    import platform

    import torch

    from cohort.hardware import cpu_kind, cpu_model, resolve_precision

    if torch.cuda.is_available():
        dev = f"{torch.cuda.get_device_name(0)} (auto precision {resolve_precision('auto', 'cuda').label})"
    else:
        dev = f"{cpu_model()}, {os.cpu_count()} cores"
    load = os.getloadavg()[0]
    return (f"{dev}; CPU {cpu_kind()} (auto precision on CPU: {resolve_precision('auto', 'cpu').label}); "
            f"{torch.get_num_threads()} torch threads, load average {load:.1f}; torch {torch.__version__}, "
            f"python {platform.python_version()}")
