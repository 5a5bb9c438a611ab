"""Tumor crops (fixed size at fixed spacing, centred, two channels) and the known-bad probes."""

import numpy as np
import pytest

from cohort.case import Case
from generative.quality.crops import CropConfig, extract_crops, find_tumors, sample_crop, size_bin
from generative.quality.probes import PROBE_KINDS, WRONG_HU, make_probe, make_probes
from tests.toys import LIVER, LIVER_LESION, toy_lesion_case


def _sphere_case(spacing: float, shape: int, radius_mm: float = 6.0) -> Case:
    g = np.stack(np.meshgrid(*[np.arange(shape) * spacing] * 3, indexing="ij"))
    c = (shape - 1) * spacing / 2
    d = np.sqrt(((g - c) ** 2).sum(0))
    label = np.where(d <= radius_mm, LIVER_LESION, LIVER).astype(np.uint8)
    ct = np.where(d <= radius_mm, 40.0, 140.0).astype(np.float32)
    return Case("s", ct, label, np.diag([spacing] * 3 + [1.0]), {})


def test_crop_is_fixed_size_centred_and_scaled():
    cfg = CropConfig(size=16, spacing_mm=1.5)
    case = toy_lesion_case("a", np.random.default_rng(0), "real")
    crops = extract_crops(case, cfg)
    assert len(crops) == 1
    img = crops[0].image
    assert img.shape == (2, 16, 16, 16) and img.dtype == np.float32
    assert 0.0 <= img[0].min() and img[0].max() <= 1.0
    assert set(np.unique(img[1])) <= {0.0, 1.0}
    com = np.array(np.nonzero(img[1])).mean(1)
    assert np.allclose(com, 7.5, atol=1.0)  # the tumor sits in the middle of the crop
    info = crops[0].info
    assert info.lesion == "liver_lesion" and info.organ == "liver" and info.size_bin == size_bin(info.diameter_mm, [20, 50])


def test_crop_does_not_depend_on_the_scan_spacing():
    cfg = CropConfig(size=16, spacing_mm=1.5)
    a = extract_crops(_sphere_case(1.0, 40), cfg)[0].image
    b = extract_crops(_sphere_case(2.0, 20), cfg)[0].image
    # same physical sphere, same crop grid: masks agree on nearly every voxel
    assert np.mean(a[1] != b[1]) < 0.05
    assert abs(a[1].sum() * 1.5**3 / 1000 - 4 / 3 * np.pi * 6.0**3 / 1000) < 0.35  # ml


def test_crop_outside_the_scan_reads_as_air():
    cfg = CropConfig(size=8)
    img = sample_crop(np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 4), bool), (100.0, 100.0, 100.0), (1, 1, 1), cfg)
    assert np.all(img[0] == 0.0) and np.all(img[1] == 0.0)


def test_size_bins():
    assert [size_bin(d, [20, 50]) for d in (5, 20, 20.1, 50, 51)] == ["early", "early", "medium", "medium", "large"]


def test_specks_are_not_tumors():
    case = toy_lesion_case("h", np.random.default_rng(0), None)
    case.label[3, 3, 3] = LIVER_LESION
    assert find_tumors(case, CropConfig(min_voxels=8)) == []


@pytest.fixture(scope="module")
def source():
    return toy_lesion_case("src", np.random.default_rng(3), "real")


def test_probes_break_the_tumor_as_named(source):
    info, mask = find_tumors(source, CropConfig())[0]
    rng = np.random.default_rng(0)
    noise = make_probe(source, "noise", rng).case
    assert noise.ct[mask].std() > 100 and source.ct[mask].std() < 40
    wrong = make_probe(source, "wrong_hu", rng).case
    assert abs(np.median(wrong.ct[mask]) - WRONG_HU) < 5
    blocky = make_probe(source, "blocky", rng).case
    (lo, hi) = info.bbox
    box = blocky.label[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    assert np.all(box == LIVER_LESION) and blocky.ct[blocky.label == LIVER_LESION].std() < 1e-3
    outside = make_probe(source, "outside", rng).case
    t_mask = outside.label == LIVER_LESION
    assert t_mask.sum() == mask.sum()
    from scipy import ndimage
    near = ndimage.binary_dilation(t_mask, iterations=1) & ~t_mask
    assert not np.any(outside.label[near] == LIVER)  # no longer touches its organ
    # the source case is never modified
    assert np.array_equal(source.label[mask], np.full(mask.sum(), LIVER_LESION))


def test_make_probes_is_deterministic_and_reports_what_it_could_not_build(source):
    healthy = toy_lesion_case("h", np.random.default_rng(0), None)
    p1, notes = make_probes([source, healthy], PROBE_KINDS, seed=1)
    p2, _ = make_probes([source, healthy], PROBE_KINDS, seed=1)
    assert [p.kind for p in p1] == list(PROBE_KINDS)
    assert all(np.array_equal(a.case.ct, b.case.ct) for a, b in zip(p1, p2))
    assert len(notes) == len(PROBE_KINDS) and "h" in notes[0]
    with pytest.raises(ValueError, match="unknown probe kind"):
        make_probe(source, "bogus", np.random.default_rng(0))


def test_a_wide_tumor_is_seen_coarser_so_its_surroundings_stay_in_the_crop():
    """A 30 mm sphere in a 24 mm view: the spacing grows until it spans max_fill of the crop."""
    case = _sphere_case(1.0, 80, radius_mm=15.0)
    fixed = extract_crops(case, CropConfig(size=16, spacing_mm=1.5, max_fill=0.0))[0].image
    assert fixed[1].mean() > 0.8  # the tumor fills the fixed 24 mm view: no boundary, no surroundings
    fit = extract_crops(case, CropConfig(size=16, spacing_mm=1.5, max_fill=0.5))[0].image
    idx = np.argwhere(fit[1] > 0)
    span = idx.max(0) - idx.min(0) + 1
    assert np.all(np.abs(span - 8) <= 1)  # half of the 16 voxels
    assert fit[1].sum() * (31.0 / 8) ** 3 == pytest.approx(4 / 3 * np.pi * 15.0 ** 3, rel=0.25)  # 31 mm box / 8 voxels
    # a small tumor keeps the fixed spacing: the same crop with or without the setting
    small = _sphere_case(1.0, 40, radius_mm=4.0)
    assert np.array_equal(extract_crops(small, CropConfig(size=16, max_fill=0.5))[0].image,
                          extract_crops(small, CropConfig(size=16, max_fill=0.0))[0].image)


def test_a_discriminator_saved_before_max_fill_keeps_fixed_crops(tmp_path):
    from generative.quality.discriminator import TumorDiscriminator, crop_config_of

    net = TumorDiscriminator(channels=[4])
    crop = CropConfig(size=16)
    net.save_pretrained(tmp_path / "new", crop=crop)
    assert crop_config_of(tmp_path / "new").max_fill == 0.5
    old = {k: v for k, v in vars(crop).items() if k != "max_fill"}
    net.save_pretrained(tmp_path / "old", crop=CropConfig(**old, max_fill=0.5))
    import json

    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    cfg["crop"].pop("max_fill")
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    assert crop_config_of(tmp_path / "old").max_fill == 0.0
