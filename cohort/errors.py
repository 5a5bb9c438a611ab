"""Errors that name the file and the problem, and a report for batch work."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


class CohortError(Exception):
    """Bad input data. ``str()`` reads "<path>: <problem>"."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


@dataclass
class BatchReport:
    """What a batch job did with each case: done, skipped (already there) or failed.

    Batch commands finish the good cases, collect every failure here, print the
    summary and exit non-zero when :attr:`ok` is false.
    """

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def fail(self, case_id: str, error: BaseException | str) -> None:
        self.failed[case_id] = str(error)

    def merge(self, other: BatchReport) -> BatchReport:
        self.done += other.done
        self.skipped += other.skipped
        self.failed.update(other.failed)
        return self

    def summary(self) -> str:
        lines = [f"{len(self.done)} done, {len(self.skipped)} skipped (already done), {len(self.failed)} failed"]
        lines += [f"  FAILED {cid}: {why}" for cid, why in sorted(self.failed.items())]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"done": self.done, "skipped": self.skipped, "failed": self.failed}, indent=2)
