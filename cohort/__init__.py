"""The data contract: cases, the label vocabulary, layouts, preprocessing, the phantom world.

Every other package reads and writes data through this one, and it is the
only package that touches nibabel.
"""

from cohort.case import Case, CaseRef
from cohort.errors import BatchReport, CohortError
from cohort.layouts import Cohort, case_done, open_cohort, write_case, write_manifest

__all__ = ["Case", "CaseRef", "Cohort", "BatchReport", "CohortError", "open_cohort", "write_case",
           "case_done", "write_manifest"]
