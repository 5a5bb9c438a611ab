"""The one patch-synthesis path (training and RandTumorSynthesisd call it)."""

import numpy as np
import pytest

from cohort import labels as L
from segmentation.synthesis import Synthesis, synthesize_patch

LIVER, LESION = L.NAME_TO_INDEX["liver"], L.NAME_TO_INDEX["liver_lesion"]


class Result:
    def __init__(self, ct, label, records=None):
        self.ct, self.label = ct, label
        if records is not None:
            self.records = records


def patch():
    ct = np.full((8, 8, 8), 100.0, np.float32)
    lab = np.zeros((8, 8, 8), np.uint8)
    lab[2:6, 2:6, 2:6] = LIVER
    return ct, lab


def paint(ct_hu, label, spacing, spec, rng):
    ct, lab = ct_hu.copy(), label.copy()
    lab[3:5, 3:5, 3:5] = LESION
    ct[lab == LESION] = float(rng.uniform(0, 10))
    return Result(ct.astype(np.float64), lab.astype(np.int64), [{"organ": "liver", "label": LESION}])


class Spec:
    organ = "liver"


def test_tumor_added_with_dtypes_records_and_organ():
    ct, lab = patch()
    new_ct, new_lab, syn = synthesize_patch(paint, ct, lab, (1.5, 1.5, 1.5), Spec(), np.random.default_rng(0))
    assert new_ct.dtype == np.float32 and new_lab.dtype == np.uint8
    assert (new_lab == LESION).sum() == 8 and (lab == LESION).sum() == 0  # the input is untouched
    assert syn.applied and syn.organ == "liver" and syn.seconds >= 0 and syn.records[0]["label"] == LESION
    again = synthesize_patch(paint, ct, lab, (1.5, 1.5, 1.5), "liver", np.random.default_rng(0))
    assert np.array_equal(again[0], new_ct) and again[2].organ == "liver"  # same rng state, same tumor


def test_a_skipped_failure_returns_the_healthy_patch_and_others_raise():
    ct, lab = patch()

    def too_small(*args):
        raise ValueError("organ too small")

    out_ct, out_lab, syn = synthesize_patch(too_small, ct, lab, (1, 1, 1), "liver", np.random.default_rng(0))
    assert out_ct is ct and out_lab is lab and syn == Synthesis(False, "liver", syn.seconds)

    class NotThis(ValueError):
        pass

    with pytest.raises(ValueError, match="too small"):  # only the named error is a skip
        synthesize_patch(too_small, ct, lab, (1, 1, 1), "liver", np.random.default_rng(0), skip=NotThis)


def test_a_result_on_another_grid_is_an_error():
    ct, lab = patch()

    def crop(ct_hu, label, spacing, spec, rng):
        return Result(ct_hu[:4], label[:4])

    with pytest.raises(ValueError, match="synthesizer returned shapes"):
        synthesize_patch(crop, ct, lab, (1, 1, 1), "liver", np.random.default_rng(0))
    _, _, syn = synthesize_patch(lambda *a: Result(ct, lab), ct, lab, (1, 1, 1), "liver", np.random.default_rng(0))
    assert syn.records == []  # a result without records
