import numpy as np
import pytest

from cohort import labels as L
from cohort.layouts import write_rows
from segmentation.config import SourceConfig
from segmentation.data import ClassMap, MixingSampler, PatchDataset, build_cache, collate, crop_patch, open_source
from tests.segmentation.helpers import make_case, tiny_config

LIVER, LES, KL, KR = (L.NAME_TO_INDEX[n] for n in ("liver", "liver_lesion", "kidney_left", "kidney_right"))


def test_class_map_round_trip_and_kidney_split():
    case = make_case("c", 0)
    cm = ClassMap(("liver", "liver_lesion", "kidney"))
    ch = cm.to_channels(case.label)
    assert set(np.unique(ch)) == {0, 1, 2, 3}
    assert cm.lesion_channels == [2]
    back = cm.to_vocabulary(ch, case.ct, case.affine)
    # kidneys come back split by body side: patient's left = smaller world x in RAS+
    np.testing.assert_array_equal(back, case.label)
    assert cm.to_vocabulary(ch)[case.label == KR].max() == KL  # no CT: first organ of the type


def test_single_tumor_class_drops_organs():
    case = make_case("c", 1)
    ch = ClassMap(("liver_lesion",)).to_channels(case.label)
    assert set(np.unique(ch)) == {0, 1}
    assert (ch == 1).sum() == (case.label == LES).sum()


@pytest.mark.parametrize("weights,sizes,expected", [([1.0, 3.0], [5, 2], [0.25, 0.75]),
                                                    (None, [6, 2], [0.75, 0.25]),
                                                    ([1.0, 1.0, 2.0], [1, 3, 9], [0.25, 0.25, 0.5])])
def test_mixing_sampler_honours_the_ratio(weights, sizes, expected):
    s = MixingSampler(sizes, weights, seed=3, num_draws=20000)
    draws = [s.draw(i) for i in s]
    frac = np.bincount([d[0] for d in draws], minlength=len(sizes)) / len(draws)
    np.testing.assert_allclose(frac, expected, atol=0.015)
    # cases uniform within a source
    big = int(np.argmax(expected))
    per_case = np.bincount([d[1] for d in draws if d[0] == big], minlength=sizes[big])
    assert per_case.min() > 0.8 * per_case.mean()
    # deterministic, and a resumed sampler continues the same sequence
    assert MixingSampler(sizes, weights, seed=3, num_draws=10, start=500).draw(503) == draws[503]
    assert list(MixingSampler(sizes, weights, num_draws=4, start=7)) == [7, 8, 9, 10]


def test_mixing_sampler_rejects_empty_sources():
    with pytest.raises(ValueError, match="at least one case"):
        MixingSampler([3, 0], [1, 1])


def test_crop_patch_shifts_inside_and_pads():
    a = np.arange(10 * 12 * 6).reshape(10, 12, 6)
    p = crop_patch(a, (0, 11, 3), (4, 4, 8), pad_value=-1)
    assert p.shape == (4, 4, 8)
    np.testing.assert_array_equal(p[:, :, 1:7], a[0:4, 8:12, :])
    assert (p[:, :, 0] == -1).all() and (p[:, :, 7] == -1).all()


def test_open_source_filters_accepted_and_subsets(cohorts, tmp_path):
    rows = [{"case_id": f"syn_{i:03d}", "ct": str(cohorts["synthetic"] / f"syn_{i:03d}" / "ct.nii.gz"),
             "label": str(cohorts["synthetic"] / f"syn_{i:03d}" / "combined_labels.nii.gz"),
             "accepted": i != 1} for i in range(3)]
    man = write_rows(tmp_path / "filtered.jsonl", rows)
    refs = open_source(SourceConfig(name="syn", path=str(man), kind="synthetic", accepted_only=True))
    assert [r.case_id for r in refs] == ["syn_000", "syn_002"]
    two = open_source(SourceConfig(name="real", path=str(cohorts["real"]), max_cases=2))
    three = open_source(SourceConfig(name="real", path=str(cohorts["real"]), max_cases=3))
    assert len(two) == 2 and len(three) == 3
    assert two == open_source(SourceConfig(name="real", path=str(cohorts["real"]), max_cases=2))


def _dataset(cohorts, **kw):
    cfg = tiny_config([{"name": "real", "path": str(cohorts["real"])}], **kw)
    refs = [open_source(s) for s in cfg.sources]
    cache = build_cache(refs, cfg.data, show=False)
    return cfg, cache


def test_patch_items_have_shapes_dtypes_and_foreground(cohorts):
    cfg, cache = _dataset(cohorts, data={"pos_fraction": 1.0, "augment": False})
    ds = PatchDataset(cache, MixingSampler([len(cache[0])], num_draws=8), cfg)
    items = [ds[i] for i in range(8)]
    b = collate(items)
    assert b["image"].shape == (8, 1, 16, 16, 16) and b["image"].dtype.is_floating_point
    assert b["label"].shape == (8, 1, 16, 16, 16) and int(b["label"].max()) <= 3
    assert 0.0 <= float(b["image"].min()) and float(b["image"].max()) <= 1.0
    assert all(int(it["label"].max()) > 0 for it in items)  # every crop centred on foreground
    again = ds[3]
    assert (again["image"] == items[3]["image"]).all()  # a draw is a pure function of its index


class FakeResult:
    def __init__(self, ct, label):
        self.ct, self.label, self.records = ct, label, []


class FakeSynth:
    """Paints a 2-voxel-radius lesion at the organ's first voxel; counts calls."""

    name = "fake"

    def __init__(self):
        self.calls = []

    def __call__(self, ct_hu, label, spacing, spec, rng):
        self.calls.append(spec)
        organ = np.isin(label, L.organ_indices(spec))
        lab, ct = label.copy(), ct_hu.copy()
        i, j, k = np.argwhere(organ)[0]
        lab[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2, max(k - 1, 0):k + 2] = L.lesion_index_for(spec)
        ct[lab == L.lesion_index_for(spec)] = 0.0
        return FakeResult(ct, lab)


def test_onthefly_synthesis_touches_healthy_real_cases_only(cohorts):
    cfg = tiny_config([{"name": "healthy", "path": str(cohorts["healthy"])},
                       {"name": "real", "path": str(cohorts["real"])}],
                      onthefly={"method": "fake", "prob": 1.0, "organs": ["liver"]}, data={"augment": False})
    cache = build_cache([open_source(s) for s in cfg.sources], cfg.data, show=False)
    synth = FakeSynth()
    ds = PatchDataset(cache, MixingSampler([len(c) for c in cache], [1.0, 1.0], num_draws=40), cfg, synthesizer=synth)
    items = [ds[i] for i in range(40)]
    from_healthy = [it for it in items if it["source"] == 0]
    from_tumor = [it for it in items if it["source"] == 1]
    assert from_healthy and from_tumor
    assert all(it["synth"] for it in from_healthy)  # prob 1 on healthy cases
    assert not any(it["synth"] for it in from_tumor)  # cases that already have a liver lesion are left alone
    assert all(int((it["label"] == 2).sum()) > 0 for it in from_healthy)  # the painted lesion is in the patch
    assert synth.calls and set(synth.calls) == {"liver"}


def test_cache_is_int16_hu_and_disk_cache_round_trips(cohorts, tmp_path):
    cfg = tiny_config([{"name": "real", "path": str(cohorts["real"])}], data={"cache_dir": str(tmp_path / "cache")})
    refs = [open_source(s) for s in cfg.sources]
    first = build_cache(refs, cfg.data, show=False)
    files = sorted((tmp_path / "cache").glob("*.npz"))
    assert len(files) == 4
    again = build_cache(refs, cfg.data, show=False)  # read back from the npz files
    for a, b in zip(first[0], again[0]):
        assert a.ct_hu.dtype == np.int16 and a.case_id == b.case_id
        np.testing.assert_array_equal(a.ct_hu, b.ct_hu)
        np.testing.assert_array_equal(a.label, b.label)
        assert a.by_label.keys() == b.by_label.keys()
        np.testing.assert_array_equal(a.by_label[5], b.by_label[5])
    assert first[0][0].ct_hu.min() <= -900 and first[0][0].present >= {5, 27}


def test_foreground_centres_are_class_balanced(cohorts):
    cfg, cache = _dataset(cohorts, data={"pos_fraction": 1.0, "lesion_fraction": 0.0, "augment": False})
    ds = PatchDataset(cache, MixingSampler([len(cache[0])], num_draws=1), cfg)
    c = cache[0][0]
    rng = np.random.default_rng(0)
    hits = [ClassMap(tuple(cfg.classes)).to_channels(c.label[ds._centre(c, rng)]) for _ in range(3000)]
    frac = np.bincount(hits, minlength=4) / len(hits)
    # liver, liver_lesion, kidney drawn uniformly although the kidneys are a few percent of the foreground
    np.testing.assert_allclose(frac, [0, 1 / 3, 1 / 3, 1 / 3], atol=0.04)
    cfg2, _ = _dataset(cohorts, data={"pos_fraction": 1.0, "lesion_fraction": 1.0})
    ds2 = PatchDataset(cache, MixingSampler([len(cache[0])], num_draws=1), cfg2)
    assert all(c.label[ds2._centre(c, rng)] == LES for _ in range(200))
