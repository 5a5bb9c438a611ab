"""The phantom world: procedural abdominal CT with known ground truth.

The embedded default data of the product (every command runs with no
downloaded data) and the controlled benchmark: organs, vessels, bones, bowel
gas, tumors of chosen size and appearance, and scanner sites that differ in
contrast phase, noise, blur and spacing.

    >>> from cohort.phantom import make_phantom, TumorRequest
    >>> case = make_phantom("A", seed=3, tumors=[TumorRequest("liver", 15.0, "hypo")], spacing=1.5)
    >>> case.shape
    (96, 96, 64)

Cost: about 0.4 CPU-seconds a case at 1.5 mm (96 x 96 x 64 voxels), 0.4-0.7 s at the
sites' native grids (site A 180 x 180 x 38 at 0.8 x 0.8 x 2.5 mm).

Modules: ``sites`` (scanner profiles, contrast phases), ``fields`` (grid, smooth random
fields), ``anatomy`` (organ geometry -> tissue and label maps), ``tumors`` (placement,
shape, appearance, size records), ``render`` (HU, blur, slice averaging, noise),
``core`` (``make_phantom``, ``make_pair``), ``generate`` (``generate_cohort``).
"""

from cohort.phantom.core import DEFAULT_TUMOR_ORGANS, PhantomPair, make_pair, make_phantom, phantom_grid
from cohort.phantom.fields import Grid
from cohort.phantom.generate import case_id_for, case_seed, generate_cohort, has_tumors
from cohort.phantom.sites import BASE_HU, PHASE_SHIFT_HU, SITES, SiteProfile, get_site, load_sites
from cohort.phantom.tumors import APPEARANCES, FOOTPRINT, TumorRequest, random_requests

__all__ = [
    "APPEARANCES", "BASE_HU", "DEFAULT_TUMOR_ORGANS", "FOOTPRINT", "Grid", "PHASE_SHIFT_HU", "PhantomPair", "SITES",
    "SiteProfile", "TumorRequest", "case_id_for", "case_seed", "generate_cohort", "get_site", "has_tumors", "load_sites",
    "make_pair", "make_phantom", "phantom_grid", "random_requests",
]
