import json
import os
import stat

import nibabel as nib
import numpy as np
import pytest

from cohort.errors import BatchReport, CohortError
from cohort.io import write_volume
from cohort.layouts import (
    NnUNetWriter,
    case_done,
    detect_layout,
    filter_decision,
    is_accepted,
    open_cohort,
    write_case,
    write_manifest,
    write_rows,
)
from cohort.summary import summarize
from tests.conftest import write_lying_header


def test_abdomenatlas_write_read_roundtrip(tmp_path, make_case):
    case = make_case("BDMAP_00000001")
    case.meta.update({"generator": "phantom", "seed": 3})
    write_case(case, tmp_path)
    assert case_done(tmp_path, "BDMAP_00000001")
    write_manifest(tmp_path)
    cohort = open_cohort(tmp_path)
    assert cohort.layout == "abdomenatlas" and cohort.ids() == ["BDMAP_00000001"]
    back = cohort.refs[0].load()
    assert np.array_equal(back.label, case.label)
    assert np.abs(back.ct - case.ct).max() <= 0.5  # stored as int16 HU
    assert back.meta["seed"] == 3 and back.meta["generator"] == "phantom"
    rows = [json.loads(x) for x in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert rows[0]["case_id"] == "BDMAP_00000001"
    via_manifest = open_cohort(tmp_path / "manifest.jsonl").refs[0].load()
    assert np.array_equal(via_manifest.label, case.label)
    with pytest.raises(CohortError, match="already exists"):
        write_case(case, tmp_path)


def test_write_case_is_atomic(tmp_path, make_case, monkeypatch):
    import cohort.layouts.abdomenatlas as aa

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(aa, "write_json", boom)
    with pytest.raises(OSError):
        write_case(make_case("c1"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_write_case_refuses_to_overwrite_its_input(tmp_path, make_case):
    write_case(make_case("c1"), tmp_path)
    case = open_cohort(tmp_path).refs[0].load()
    with pytest.raises(CohortError, match="refusing to overwrite the input"):
        write_case(case, tmp_path, overwrite=True)


def test_abdomenatlas_per_organ_masks(tmp_path, make_case):
    case = make_case()
    d = tmp_path / "BDMAP_1"
    write_volume(d / "ct.nii.gz", case.ct, case.affine)
    for name, idx in [("liver", 5), ("kidney_left", 3), ("liver_tumor", 27)]:
        write_volume(d / "segmentations" / f"{name}.nii.gz", (case.label == idx).astype(np.uint8), case.affine)
    back = open_cohort(tmp_path).refs[0].load()
    assert np.array_equal(back.label, case.label)
    write_volume(d / "segmentations" / "brain.nii.gz", np.zeros(case.shape, np.uint8), case.affine)
    with pytest.raises(CohortError, match="brain.nii.gz: mask name 'brain.nii.gz' is not a known label"):
        open_cohort(tmp_path).refs[0].load()


def test_msd_task03_mapping(tmp_path, make_case):
    case = make_case()
    src = np.zeros(case.shape, np.uint8)
    src[case.label == 5] = 1
    src[case.label == 27] = 2
    write_volume(tmp_path / "imagesTr" / "liver_0.nii.gz", case.ct, case.affine)
    write_volume(tmp_path / "labelsTr" / "liver_0.nii.gz", src, case.affine)
    (tmp_path / "dataset.json").write_text(json.dumps({
        "name": "Liver", "labels": {"0": "background", "1": "liver", "2": "cancer"},
        "training": [{"image": "./imagesTr/liver_0.nii.gz", "label": "./labelsTr/liver_0.nii.gz"}]}))
    assert detect_layout(tmp_path) == "msd"
    back = open_cohort(tmp_path).refs[0].load()
    assert set(np.unique(back.label)) == {0, 5, 27}
    assert (back.label == 27).sum() == (case.label == 27).sum()


def test_nnunet_write_then_read(tmp_path, make_case):
    w = NnUNetWriter(tmp_path, 501, "Liver", ["liver", "liver_lesion", "kidney_left"])
    w.add(make_case("a"))
    w.add(make_case("b", seed=1))
    root = w.finish()
    ds = json.loads((root / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "CT"} and ds["numTraining"] == 2
    assert ds["labels"] == {"background": 0, "liver": 1, "liver_lesion": 2, "kidney_left": 3}
    assert (root / "imagesTr" / "a_0000.nii.gz").exists() and (root / "labelsTr" / "a.nii.gz").exists()
    raw = np.asanyarray(nib.load(str(root / "labelsTr" / "a.nii.gz")).dataobj)
    assert set(np.unique(raw)) == {0, 1, 2, 3}
    cohort = open_cohort(root)
    assert cohort.layout == "nnunet" and cohort.ids() == ["a", "b"]
    assert np.array_equal(cohort.refs[0].load().label, make_case("a").label)


def test_kits23_split_and_cyst(tmp_path):
    shape = (40, 20, 10)
    ct = np.full(shape, -1000, np.float32)
    ct[4:36, 2:18, :] = 40  # body, centred at x ~ 19.5
    seg = np.zeros(shape, np.uint8)
    seg[6:12, 6:12, 2:8] = 1  # low x -> patient's left in RAS+
    seg[28:34, 6:12, 2:8] = 1
    seg[29:31, 7:9, 3:5] = 2
    seg[7:9, 7:9, 3:5] = 3
    d = tmp_path / "case_00000"
    write_volume(d / "imaging.nii.gz", ct, np.eye(4))
    write_volume(d / "segmentation.nii.gz", seg, np.eye(4))
    case = open_cohort(tmp_path).refs[0].load()
    assert open_cohort(tmp_path).layout == "kits23"
    assert (case.label[6:12, 6:12, 2:8] == 3).all()  # kidney_left incl. cyst
    assert ((case.label[28:34, 6:12, 2:8] == 4) | (case.label[28:34, 6:12, 2:8] == 29)).all()
    assert (case.label == 29).sum() == 8 and case.meta["kits_cyst_voxels"] == 8


def test_manifest_csv_with_mapping(tmp_path, make_case):
    case = make_case()
    src = np.where(case.label == 5, 7, np.where(case.label == 27, 9, 0)).astype(np.uint8)
    write_volume(tmp_path / "img.nii.gz", case.ct, case.affine)
    write_volume(tmp_path / "lab.nii.gz", src, case.affine)
    (tmp_path / "m.csv").write_text('case_id,ct,label,mapping\nx,img.nii.gz,lab.nii.gz,"{""7"": ""liver"", ""9"": ""liver_tumor""}"\n')
    back = open_cohort(tmp_path / "m.csv").refs[0].load()
    assert set(np.unique(back.label)) == {0, 5, 27}


def test_one_accepted_rule_for_manifest_rows_and_sidecars(tmp_path, make_case):
    assert filter_decision({"accepted": True}) is True and filter_decision({"accepted": "False"}) is False
    assert filter_decision({"accepted": "1"}) is True and filter_decision({"accepted": "no"}) is False  # CSV text
    assert filter_decision({"filter": {"accepted": False, "score": 0.1}}) is False  # a sidecar's filter block
    assert filter_decision({"kind": "synthetic"}) is None and filter_decision({"accepted": None}) is None
    assert not is_accepted({}) and not is_accepted({"accepted": "false"}) and is_accepted({"accepted": "TRUE"})
    with pytest.raises(CohortError, match="accepted must be true or false"):
        filter_decision({"accepted": "maybe"}, "m.csv")

    for i in range(4):
        write_case(make_case(f"c{i}", seed=i), tmp_path / "cohort")
    write_manifest(tmp_path / "cohort")
    # a cohort that was never filtered: accepted_only is an error, not "keep every case"
    assert len(open_cohort(tmp_path / "cohort")) == 4
    with pytest.raises(CohortError, match="never filtered"):
        open_cohort(tmp_path / "cohort", accepted_only=True)
    with pytest.raises(CohortError, match="never filtered"):
        open_cohort(tmp_path / "cohort", layout="abdomenatlas", accepted_only=True)
    # a filtered manifest: accepted kept, rejected and undecided (hand-merged line) dropped, CSV text read
    rows = [{"case_id": f"c{i}", "ct": f"cohort/c{i}/ct.nii.gz", "label": f"cohort/c{i}/combined_labels.nii.gz"}
            for i in range(4)]
    rows[0]["accepted"], rows[1]["accepted"], rows[2]["accepted"] = True, False, "true"
    man = write_rows(tmp_path / "filtered.jsonl", rows)
    assert open_cohort(man, accepted_only=True).ids() == ["c0", "c2"]
    assert len(open_cohort(man)) == 4
    csv_path = tmp_path / "filtered.csv"
    csv_path.write_text("case_id,ct,label,accepted\n" + "".join(
        f"{r['case_id']},{r['ct']},{r['label']},{r.get('accepted', '')}\n" for r in rows))
    assert open_cohort(csv_path, accepted_only=True).ids() == ["c0", "c2"]  # "False" text is a rejection
    # a decision in the sidecar counts when the manifest line has none
    side = tmp_path / "cohort" / "c3" / "case.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), "filter": {"accepted": True, "score": 0.9}}))
    assert open_cohort(man, accepted_only=True).ids() == ["c0", "c2", "c3"]
    assert open_cohort(tmp_path / "cohort", layout="abdomenatlas", accepted_only=True).ids() == ["c3"]


def test_batch_reports_every_bad_case_and_continues(tmp_path, make_case):
    write_case(make_case("good1"), tmp_path)
    write_case(make_case("good2", seed=2), tmp_path)
    # mismatched grid
    c = make_case("badgrid")
    write_volume(tmp_path / "badgrid" / "ct.nii.gz", c.ct, c.affine)
    write_volume(tmp_path / "badgrid" / "combined_labels.nii.gz", c.label[:-1], c.affine[:, :])
    # mismatched affine
    write_volume(tmp_path / "badaff" / "ct.nii.gz", c.ct, c.affine)
    aff = c.affine.copy()
    aff[0, 3] += 5
    write_volume(tmp_path / "badaff" / "combined_labels.nii.gz", c.label, aff)
    # unknown label value
    lab = c.label.copy()
    lab[0, 0, 0] = 99
    write_volume(tmp_path / "badlab" / "ct.nii.gz", c.ct, c.affine)
    write_volume(tmp_path / "badlab" / "combined_labels.nii.gz", lab, c.affine)
    # corrupt CT
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "ct.nii.gz").write_bytes(b"\x1f\x8b garbage")
    report = BatchReport()
    loaded = [case.case_id for case in open_cohort(tmp_path).iter_cases(report)]
    assert loaded == ["good1", "good2"]
    assert not report.ok
    assert "does not match CT shape" in report.failed["badgrid"]
    assert "not on the same grid" in report.failed["badaff"]
    assert "label values [99] have no mapping" in report.failed["badlab"]
    assert "corrupt" in report.failed and "ct.nii.gz" in report.failed["corrupt"]


def test_detect_layout_errors(tmp_path):
    with pytest.raises(CohortError, match="no known cohort layout"):
        detect_layout(tmp_path)
    with pytest.raises(CohortError, match="does not exist"):
        detect_layout(tmp_path / "missing")


def test_nnunet_writer_accepts_organ_types(tmp_path, make_case):
    w = NnUNetWriter(tmp_path, 7, "K", ["kidney", "liver"])
    assert w.lut[3] == w.lut[4] == 1 and w.lut[5] == 2
    with pytest.raises(ValueError, match="overlaps"):
        NnUNetWriter(tmp_path, 7, "K", ["kidney", "kidney_left"])


def _lying_cohort(root, make_case):
    """Two good cases and three whose headers lie (zero spacing, 4000^3 claims over tiny payloads)."""
    write_case(make_case("good1"), root)
    write_case(make_case("good2", seed=2), root)
    for cid, problem, name in (("zero", "zero_spacing", "ct.nii.gz"), ("huge", "huge_shape", "ct.nii.gz"),
                               ("hugelab", "huge_shape", "combined_labels.nii.gz")):
        write_case(make_case(cid), root)
        write_lying_header(root / cid / name, problem)
    return root


def test_lying_headers_are_reported_by_name_and_the_rest_read(tmp_path, make_case):
    root = _lying_cohort(tmp_path / "c", make_case)
    report = BatchReport()
    assert [c.case_id for c in open_cohort(root).iter_cases(report)] == ["good1", "good2"]
    assert sorted(report.failed) == ["huge", "hugelab", "zero"]
    assert "zero/ct.nii.gz: invalid voxel spacing: zero spacing" in report.failed["zero"]
    assert "huge/ct.nii.gz: header claims shape (4000, 4000, 4000)" in report.failed["huge"]
    assert "hugelab/combined_labels.nii.gz: header claims shape (4000, 4000, 4000)" in report.failed["hugelab"]
    # `tumorgen cohort info` reads through summarize
    report = BatchReport()
    s = summarize(root, report=report, progress=False)
    assert s.n_cases == 2 and sorted(report.done) == ["good1", "good2"] and sorted(report.failed) == ["huge", "hugelab", "zero"]


def test_stale_temps_are_not_cases(tmp_path, make_case):
    root = tmp_path / "aa"
    write_case(make_case("good"), root, per_organ_masks=True)
    (root / "good" / "combined_labels.nii.gz").unlink()  # read the per-organ masks
    # what a kill mid-write leaves: a half-written case folder and a mask temp
    half = root / ".killed.1a2b3c4d.part"
    write_volume(half / "ct.nii.gz", make_case().ct, make_case().affine)
    (root / "good" / "segmentations" / ".liver.0f0f0f0f.part.nii.gz").write_bytes(b"partial")
    cohort = open_cohort(root)
    assert cohort.ids() == ["good"] and not cohort.problems
    assert cohort.refs[0].load().has("liver")
    # nnU-Net and KiTS readers too
    w = NnUNetWriter(tmp_path, 9, "T", ["liver"])
    w.add(make_case("a"))
    nn = w.finish()
    (nn / "imagesTr" / ".b_0000.0a0b0c0d.part.nii.gz").write_bytes(b"partial")
    (nn / "labelsTr" / ".b.0a0b0c0d.part.nii.gz").write_bytes(b"partial")
    cohort = open_cohort(nn)
    assert cohort.ids() == ["a"] and not cohort.problems
    k = tmp_path / "kits"
    write_volume(k / "case_00000" / "imaging.nii.gz", make_case().ct, np.eye(4))
    write_volume(k / ".case_00001.0a0b0c0d.part" / "imaging.nii.gz", make_case().ct, np.eye(4))
    cohort = open_cohort(k)
    assert cohort.layout == "kits23" and cohort.ids() == ["case_00000"] and not cohort.problems


def test_cases_that_cannot_be_used_are_reported_not_skipped(tmp_path, make_case):
    root = tmp_path / "aa"
    for cid in ("good", "noct", "sidecaronly", "linkedct", "linkedlab"):
        write_case(make_case(cid), root)
    (root / "noct" / "ct.nii.gz").unlink()
    for f in ("ct.nii.gz", "combined_labels.nii.gz"):
        (root / "sidecaronly" / f).unlink()
    for cid, f in (("linkedct", "ct.nii.gz"), ("linkedlab", "combined_labels.nii.gz")):
        (root / cid / f).unlink()
        (root / cid / f).symlink_to(tmp_path / "gone" / f)
    (root / "linkedcase").symlink_to(tmp_path / "gone" / "case")
    cohort = open_cohort(root)
    assert cohort.ids() == ["good"]
    assert sorted(cohort.problems) == ["linkedcase", "linkedct", "linkedlab", "noct", "sidecaronly"]
    assert "noct: case folder has no ct.nii.gz" in cohort.problems["noct"]
    assert "linkedct/ct.nii.gz: dangling symbolic link" in cohort.problems["linkedct"]
    assert "combined_labels.nii.gz: dangling symbolic link" in cohort.problems["linkedlab"]
    assert "linkedcase: dangling symbolic link" in cohort.problems["linkedcase"]
    report = BatchReport()
    assert [c.case_id for c in cohort.iter_cases(report)] == ["good"] and len(report.failed) == 5
    # an nnU-Net label without its image is a case too
    w = NnUNetWriter(tmp_path, 9, "T", ["liver"])
    w.add(make_case("a"))
    w.add(make_case("b"))
    (w.finish() / "imagesTr" / "b_0000.nii.gz").unlink()
    assert "label file has no image imagesTr/b_0000.nii.gz" in open_cohort(w.root).problems["b"]
    # and KiTS23 case folders
    k = tmp_path / "kits"
    write_volume(k / "case_00000" / "imaging.nii.gz", make_case().ct, np.eye(4))
    write_volume(k / "case_00001" / "segmentation.nii.gz", make_case().label, np.eye(4))
    (k / "case_00002").symlink_to(tmp_path / "gone" / "case")
    cohort = open_cohort(k)
    assert cohort.ids() == ["case_00000"] and sorted(cohort.problems) == ["case_00001", "case_00002"]
    assert "case folder has no imaging.nii.gz" in cohort.problems["case_00001"]


def test_written_cases_follow_the_umask(tmp_path, make_case):
    old = os.umask(0o022)
    try:
        case_dir = write_case(make_case("c1"), tmp_path / "cohort", per_organ_masks=True)
        manifest = write_manifest(tmp_path / "cohort")
    finally:
        os.umask(old)
    for d in (case_dir, case_dir / "segmentations"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755, d
    for f in [*case_dir.iterdir(), *(case_dir / "segmentations").iterdir(), manifest]:
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_a_single_case_folder_reads_as_a_one_case_cohort(tmp_path):
    from cohort.layouts import open_cohort, write_case
    from tests.conftest import tiny_case

    for i in range(2):
        write_case(tiny_case(f"c{i}", seed=i), tmp_path / "cohort")
    one = open_cohort(tmp_path / "cohort" / "c1")
    assert [r.case_id for r in one.refs] == ["c1"]
    assert one.refs[0].load().ct.shape == tiny_case("c1").ct.shape
