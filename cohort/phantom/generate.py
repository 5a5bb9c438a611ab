"""``generate_cohort``: a folder of phantom cases in the AbdomenAtlas layout plus a manifest."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cohort.errors import BatchReport
from cohort.phantom.core import DEFAULT_TUMOR_ORGANS, make_phantom
from cohort.phantom.sites import SiteProfile, get_site


def case_id_for(site: str | SiteProfile, index: int, seed: int = 0) -> str:
    """``PHANTOM_<site>s<seed>_<index:04d>``: unique across cohorts of different seeds, so
    cohorts can be mixed (training sources, filter splits) without id collisions."""
    return f"PHANTOM_{get_site(site).name}s{int(seed)}_{int(index):04d}"


def case_seed(seed: int, site: str | SiteProfile, index: int) -> int:
    """The patient seed of case ``index``: a hash of (cohort seed, site, index).

    Different sites get different patients, and case i is the same whatever n.
    """
    ss = np.random.SeedSequence([int(seed), zlib.crc32(get_site(site).name.encode()), int(index)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def has_tumors(index: int, tumor_fraction: float, seed: int = 0) -> bool:
    """Whether case ``index`` bears tumors.

    A shifted Beatty sequence: every prefix of the cohort holds the asked
    fraction (within one case), and the answer for case i never depends on n.
    """
    if not 0.0 <= tumor_fraction <= 1.0:
        raise ValueError(f"tumor_fraction must be in [0, 1], got {tumor_fraction}")
    phase = (int(seed) * 0.6180339887) % 1.0
    return math.floor((index + 1) * tumor_fraction + phase) - math.floor(index * tumor_fraction + phase) >= 1


def generate_cohort(out_dir: str | Path, site: str | SiteProfile = "A", n: int = 40, tumor_fraction: float = 0.5,
                    seed: int = 0, spacing: float | Sequence[float] | None = None,
                    shape: Sequence[int] | None = None, organs: Sequence[str] = DEFAULT_TUMOR_ORGANS,
                    fov_mm: float | Sequence[float] | None = None, scale: float = 1.0,
                    progress: bool = True, anatomy: str | None = None, sex: str | None = None) -> BatchReport:
    """Write ``n`` phantom cases to ``out_dir`` (AbdomenAtlas layout) and its ``manifest.jsonl``.

    Case i is ``PHANTOM_<site>s<seed>_<i:04d>``, deterministic in (seed, site, i).
    Tumor-bearing cases (``tumor_fraction`` of them) get 1-3 random lesions in
    ``organs``; healthy controls get none. ``anatomy`` / ``sex``: see
    :func:`~cohort.phantom.core.make_phantom` (by default the anatomy follows ``organs``, so
    controls and tumor cases of one cohort share it, and the sex is drawn per case). Cases already on disk are skipped,
    so an interrupted run resumes where it stopped. Failures are collected in
    the returned report, not raised.
    """
    from cohort.io import clean_stale_temps
    from cohort.layouts import case_done, write_case, write_manifest

    prof = get_site(site)
    out = Path(out_dir)
    if n < 0:  # before the folder exists: a refused argument leaves nothing behind
        raise ValueError(f"n must be >= 0, got {n}")
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out)  # case folders of a run killed mid-write
    report = BatchReport()
    columns = (TextColumn(f"phantoms site {prof.name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("cases", total=n)
        for i in range(n):
            cid = case_id_for(prof, i, seed)
            try:
                if case_done(out, cid):
                    report.skipped.append(cid)
                else:
                    tumors = "random" if has_tumors(i, tumor_fraction, seed) else None
                    case = make_phantom(prof, case_seed(seed, prof, i), tumors, spacing=spacing, shape=shape,
                                        fov_mm=fov_mm, scale=scale, organs=tuple(organs), case_id=cid,
                                        anatomy=anatomy, sex=sex)
                    case.meta["cohort"] = {"seed": int(seed), "index": i, "tumor_fraction": tumor_fraction}
                    write_case(case, out)
                    report.done.append(cid)
            except Exception as e:  # one bad case must not stop the cohort; it is reported
                report.fail(cid, f"{type(e).__name__}: {e}")
            bar.advance(task)
    write_manifest(out)
    return report
