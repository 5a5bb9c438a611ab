"""Errors that name the file and the problem, and a report for batch work."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class CohortError(Exception):
    """Bad input data. ``str()`` reads "<path>: <problem>"."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


#: joins the reasons of one case in :attr:`BatchReport.failed`
REASON_SEPARATOR = " | "


@dataclass
class BatchReport:
    """What a batch job did with each case: done, skipped (already there) or failed.

    Batch commands finish the good cases, collect every failure here, print the
    summary and exit non-zero when :attr:`ok` is false. A case can fail for
    several reasons (its ground truth is unreadable and its prediction is an
    orphan): ``reasons`` keeps each one, in the order found; ``failed`` holds
    them joined into one line per case (:data:`REASON_SEPARATOR`).
    """

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def fail(self, case_id: str, error: BaseException | str) -> None:
        """Record a problem of ``case_id``; earlier problems of the same case are kept."""
        # a ``failed`` entry set directly (without fail()) is the case's first reason
        reasons = self.reasons.setdefault(case_id, [self.failed[case_id]] if case_id in self.failed else [])
        why = str(error)
        if why not in reasons:
            reasons.append(why)
        self.failed[case_id] = REASON_SEPARATOR.join(reasons)

    def problems(self, case_id: str) -> list[str]:
        """Every recorded problem of one case (empty when it did not fail)."""
        if case_id in self.reasons:
            return list(self.reasons[case_id])
        return [self.failed[case_id]] if case_id in self.failed else []

    def merge(self, other: BatchReport) -> BatchReport:
        self.done += other.done
        self.skipped += other.skipped
        for cid in other.failed:
            for why in other.problems(cid):
                self.fail(cid, why)
        return self

    def summary(self) -> str:
        lines = [f"{len(self.done)} done, {len(self.skipped)} skipped (already done), {len(self.failed)} failed"]
        lines += [f"  FAILED {cid}: {why}" for cid in sorted(self.failed) for why in self.problems(cid)]
        return "\n".join(lines)
