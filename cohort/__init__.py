"""The data contract: cases, the label vocabulary, layouts, preprocessing, the phantom world.

Every other package reads and writes data through this one, and it is the
only package that touches nibabel.

The names below are imported on first use (PEP 562), so ``from cohort import labels``
(the vocabulary, needed by code that never reads a file) does not import nibabel.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it
_EXPORTS = {
    "Case": "cohort.case", "CaseRef": "cohort.case",
    "BatchReport": "cohort.errors", "CohortError": "cohort.errors",
    "Cohort": "cohort.layouts", "open_cohort": "cohort.layouts", "write_case": "cohort.layouts",
    "case_done": "cohort.layouts", "write_manifest": "cohort.layouts",
}

__all__ = ["Case", "CaseRef", "Cohort", "BatchReport", "CohortError", "open_cohort", "write_case",
           "case_done", "write_manifest"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'cohort' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
