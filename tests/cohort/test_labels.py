import numpy as np
import pytest

from cohort import labels as L


def test_vocabulary_order_matches_abdomenatlas_2():
    assert L.VOCABULARY[1] == "aorta" and L.VOCABULARY[5] == "liver" and L.VOCABULARY[9] == "stomach"
    assert L.VOCABULARY[10] == "adrenal_gland_left" and L.VOCABULARY[25] == "rectum" and L.VOCABULARY[26] == "uterus"
    assert L.LESION_NAMES == ("liver_lesion", "pancreatic_lesion", "kidney_lesion", "colon_lesion",
                              "uterine_lesion", "esophagus_tumor")
    assert L.NUM_CLASSES == 33
    assert all(L.NAME_TO_INDEX[L.INDEX_TO_NAME[i]] == i for i in range(L.NUM_CLASSES))


def test_organ_lesion_pairs_and_aliases():
    assert L.lesion_index_for("liver") == 27
    assert L.lesion_index_for("kidney") == 29 and L.lesion_index_for("kidney_right") == 29
    assert L.organ_indices("kidney") == (3, 4)
    assert L.canonical_name("endometrioma_tumor") == "uterine_lesion"
    assert L.canonical_name("Inferior Vena Cava") == "postcava"
    assert L.canonical_name("liver_tumor.nii.gz") == "liver_lesion"
    with pytest.raises(L.UnknownLabelError, match="unknown label name 'brain'"):
        L.canonical_name("brain")


def test_apply_mapping_reports_unmapped_values():
    src = np.array([[0, 1, 2, 7]])
    with pytest.raises(L.UnknownLabelError, match=r"label values \[7\] have no mapping"):
        L.apply_mapping(src, {1: "liver", 2: "liver_lesion"}, where="x.nii.gz")
    out = L.apply_mapping(src, {1: "liver", 2: "liver_lesion"}, unmapped="background")
    assert out.tolist() == [[0, 5, 27, 0]]


def test_importing_the_vocabulary_does_not_import_nibabel():
    import subprocess
    import sys

    code = "import sys; from cohort import labels; print('nibabel' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    lazy = "import sys, cohort; print(cohort.Case.__module__, 'nibabel' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", lazy], capture_output=True, text=True,
                          check=True).stdout.split() == ["cohort.case", "True"]
