"""The canonical label vocabulary (AbdomenAtlas 2.0 order) and mappings onto it.

Every reader maps its dataset's labels onto this vocabulary; every writer
writes it. Index 0 is background. Lesion classes are the six tumor types of
AbdomenAtlas 2.0 (Bassi et al., "Scaling Tumor Segmentation: Best Lessons
from Real and Synthetic Data").
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: index -> canonical name. Index 0 is background.
VOCABULARY: tuple[str, ...] = (
    "background",
    "aorta",  # 1
    "gall_bladder",
    "kidney_left",
    "kidney_right",
    "liver",  # 5
    "pancreas",
    "postcava",
    "spleen",
    "stomach",
    # 10-25: the AbdomenAtlas 1.1 additions, in that dataset's order
    "adrenal_gland_left",  # 10
    "adrenal_gland_right",
    "bladder",
    "celiac_trunk",
    "colon",
    "duodenum",  # 15
    "esophagus",
    "femur_left",
    "femur_right",
    "hepatic_vessel",
    "intestine",  # 20
    "lung_left",
    "lung_right",
    "portal_vein_and_splenic_vein",
    "prostate",
    "rectum",  # 25
    "uterus",
    # 27-32: the six tumor types of AbdomenAtlas 2.0
    "liver_lesion",
    "pancreatic_lesion",
    "kidney_lesion",
    "colon_lesion",  # 30
    "uterine_lesion",
    "esophagus_tumor",
)

NAME_TO_INDEX: dict[str, int] = {n: i for i, n in enumerate(VOCABULARY)}
INDEX_TO_NAME: dict[int, str] = dict(enumerate(VOCABULARY))
NUM_CLASSES = len(VOCABULARY)  # including background

LESION_NAMES: tuple[str, ...] = VOCABULARY[27:]
LESION_LABELS: tuple[int, ...] = tuple(range(27, 33))
ORGAN_NAMES: tuple[str, ...] = VOCABULARY[1:27]

#: organ -> the lesion class that grows in it
ORGAN_TO_LESION: dict[str, str] = {
    "liver": "liver_lesion",
    "pancreas": "pancreatic_lesion",
    "kidney_left": "kidney_lesion",
    "kidney_right": "kidney_lesion",
    "colon": "colon_lesion",
    "uterus": "uterine_lesion",
    "esophagus": "esophagus_tumor",
}
#: lesion -> the organs it grows in
LESION_TO_ORGANS: dict[str, tuple[str, ...]] = {}
for _organ, _lesion in ORGAN_TO_LESION.items():
    LESION_TO_ORGANS.setdefault(_lesion, ())
    LESION_TO_ORGANS[_lesion] += (_organ,)

#: Short organ-type names used in specs and reports ("kidney" means both sides).
ORGAN_TYPES: dict[str, tuple[str, ...]] = {
    "liver": ("liver",),
    "pancreas": ("pancreas",),
    "kidney": ("kidney_left", "kidney_right"),
    "colon": ("colon",),
    "uterus": ("uterus",),
    "esophagus": ("esophagus",),
}
ORGAN_TYPE_TO_LESION: dict[str, str] = {t: ORGAN_TO_LESION[o[0]] for t, o in ORGAN_TYPES.items()}
LESION_TO_ORGAN_TYPE: dict[str, str] = {v: k for k, v in ORGAN_TYPE_TO_LESION.items()}

#: Other spellings found in public datasets (file names, dataset.json labels).
ALIASES: dict[str, str] = {
    "gallbladder": "gall_bladder",
    "inferior_vena_cava": "postcava",
    "ivc": "postcava",
    "urinary_bladder": "bladder",
    "small_bowel": "intestine",
    "portal_vein": "portal_vein_and_splenic_vein",
    "hepatic_vessels": "hepatic_vessel",
    "liver_tumor": "liver_lesion",
    "liver_tumour": "liver_lesion",
    "hepatic_tumor": "liver_lesion",
    "pancreas_tumor": "pancreatic_lesion",
    "pancreatic_tumor": "pancreatic_lesion",
    "pancreas_lesion": "pancreatic_lesion",
    "kidney_tumor": "kidney_lesion",
    "kidney_tumour": "kidney_lesion",
    "colon_tumor": "colon_lesion",
    "colon_cancer": "colon_lesion",
    "endometrioma_tumor": "uterine_lesion",
    "uterus_lesion": "uterine_lesion",
    "esophagus_lesion": "esophagus_tumor",
    "esophageal_tumor": "esophagus_tumor",
}

#: Where AbdomenAtlas 2.0 names a class differently from this vocabulary (its per-organ mask file
#: names, ``segmentations/<name>.nii.gz``): the writer uses these, the reader maps them back (ALIASES).
ABDOMENATLAS_NAMES: dict[str, str] = {"uterine_lesion": "endometrioma_tumor"}


def abdomenatlas_name(index: int) -> str:
    """The AbdomenAtlas 2.0 file name of vocabulary class ``index`` (its mask is ``<name>.nii.gz``)."""
    name = INDEX_TO_NAME[int(index)]
    return ABDOMENATLAS_NAMES.get(name, name)


#: TotalSegmentator v2 "total" task, the abdominal classes (Wasserthal et al.,
#: TotalSegmentator, class map of v2). Unlisted classes map to background.
TOTALSEGMENTATOR_V2: dict[int, str] = {
    1: "spleen",
    2: "kidney_right",
    3: "kidney_left",
    4: "gall_bladder",
    5: "liver",
    6: "stomach",
    7: "pancreas",
    8: "adrenal_gland_right",
    9: "adrenal_gland_left",
    10: "lung_left",  # upper lobe left
    11: "lung_left",  # lower lobe left
    12: "lung_right",  # upper lobe right
    13: "lung_right",  # middle lobe right
    14: "lung_right",  # lower lobe right
    15: "esophagus",
    18: "intestine",  # small bowel
    19: "duodenum",
    20: "colon",
    21: "bladder",
    22: "prostate",
    52: "aorta",
    63: "postcava",  # inferior vena cava
    64: "portal_vein_and_splenic_vein",
    75: "femur_left",
    76: "femur_right",
}


class UnknownLabelError(ValueError):
    """A label name or value that is not in (and not mappable to) the vocabulary."""


def canonical_name(name: str) -> str:
    """Return the vocabulary name for ``name`` (case-insensitive, aliases resolved).

    Raises :class:`UnknownLabelError` naming the label when it cannot be mapped.
    """
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    for suffix in (".nii.gz", ".nii"):
        if key.endswith(suffix):
            key = key[: -len(suffix)]
    key = ALIASES.get(key, key)
    if key not in NAME_TO_INDEX:
        raise UnknownLabelError(f"unknown label name {name!r}: not in the AbdomenAtlas 2.0 vocabulary or its aliases")
    return key


def label_index(name: str) -> int:
    """Vocabulary index of a name or alias."""
    return NAME_TO_INDEX[canonical_name(name)]


def organ_indices(organ_type: str) -> tuple[int, ...]:
    """Indices of an organ type ("kidney" -> both kidneys) or a single organ name."""
    if organ_type in ORGAN_TYPES:
        return tuple(NAME_TO_INDEX[o] for o in ORGAN_TYPES[organ_type])
    return (label_index(organ_type),)


def lesion_index_for(organ: str) -> int:
    """Vocabulary index of the lesion class that grows in ``organ`` (a name or type)."""
    if organ in ORGAN_TYPE_TO_LESION:
        return NAME_TO_INDEX[ORGAN_TYPE_TO_LESION[organ]]
    name = canonical_name(organ)
    if name not in ORGAN_TO_LESION:
        raise UnknownLabelError(f"organ {organ!r} has no lesion class in the vocabulary")
    return NAME_TO_INDEX[ORGAN_TO_LESION[name]]


def build_lut(mapping: Mapping[int, int | str], max_value: int | None = None) -> np.ndarray:
    """A lookup table source value -> vocabulary index from ``{value: name or index}``.

    Values missing from ``mapping`` map to -1 so that :func:`apply_mapping` can
    report them as unknown instead of silently dropping them.
    """
    top = max([int(k) for k in mapping] + [0] + ([max_value] if max_value is not None else []))
    lut = np.full(top + 1, -1, dtype=np.int16)
    lut[0] = 0
    for src, dst in mapping.items():
        lut[int(src)] = dst if isinstance(dst, (int, np.integer)) else (0 if dst == "background" else label_index(dst))
    return lut


def apply_mapping(label: np.ndarray, mapping: Mapping[int, int | str], *, where: str = "label map",
                  unmapped: str = "error") -> np.ndarray:
    """Map a source label map onto vocabulary indices.

    ``unmapped``: "error" raises :class:`UnknownLabelError` listing the values with
    no mapping; "background" sets them to 0 (for datasets with many classes the
    product does not use, e.g. TotalSegmentator's bones).
    """
    values = np.unique(label)
    if values.size and (values.min() < 0):
        raise UnknownLabelError(f"{where}: negative label values {values[values < 0].tolist()}")
    lut = build_lut(mapping, int(values.max()) if values.size else 0)
    out = lut[label.astype(np.int64, copy=False)]
    bad = sorted(int(v) for v in values if lut[int(v)] < 0)
    if bad:
        if unmapped == "error":
            raise UnknownLabelError(f"{where}: label values {bad} have no mapping onto the vocabulary")
        out[out < 0] = 0
    return out.astype(np.uint8)
