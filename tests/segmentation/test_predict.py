import numpy as np
import pytest
import torch

from cohort import labels as L
from cohort.case import Case
from cohort.errors import CohortError
from cohort.io import read_image, read_label, write_volume
from cohort.layouts import write_case
from segmentation.predict import TTA_FLIPS, dice_per_class, predict_cohort, sliding_window_probs
from segmentation.train import train_segmentation
from tests.segmentation.helpers import make_case, tiny_config


@pytest.fixture(scope="module")
def trained(cohorts, tmp_path_factory):
    run = tmp_path_factory.mktemp("seg") / "run"
    cfg = tiny_config([{"name": "real", "path": str(cohorts["real"])}], train={"max_steps": 2, "val_every": 100})
    train_segmentation(cfg, run, show=False)
    return run


def _reoriented(case: Case) -> Case:
    """The same anatomy stored LIP-like: axis 0 flipped, axes 1 and 2 swapped (affine kept consistent)."""
    X = case.ct.shape[0]
    perm = np.zeros((4, 4))
    perm[0, 0], perm[0, 3] = -1, X - 1  # new i -> old X-1-i
    perm[1, 2] = perm[2, 1] = perm[3, 3] = 1  # new j -> old k, new k -> old j
    f = lambda a: np.ascontiguousarray(np.flip(a, 0).transpose(0, 2, 1))  # noqa: E731
    return Case(case.case_id, f(case.ct), f(case.label), case.affine @ perm, {})


def test_prediction_lands_on_the_original_grid(trained, tmp_path):
    odd = _reoriented(make_case("odd", 5, shape=(20, 26, 18), spacing=(2.0, 1.2, 1.7)))
    write_volume(tmp_path / "odd.nii.gz", odd.ct, odd.affine)
    report = predict_cohort(trained, tmp_path / "odd.nii.gz", tmp_path / "pred", save_prob=True, show=False)
    assert report.ok and report.done == ["odd"]
    pred, meta = read_label(tmp_path / "pred" / "odd.nii.gz")
    _, img_meta = read_image(tmp_path / "odd.nii.gz")
    assert pred.shape == odd.ct.shape == (20, 18, 26)
    np.testing.assert_allclose(meta.affine, img_meta.affine, atol=1e-5)
    allowed = {0, L.NAME_TO_INDEX["liver"], L.NAME_TO_INDEX["liver_lesion"],
               L.NAME_TO_INDEX["kidney_left"], L.NAME_TO_INDEX["kidney_right"]}
    assert set(np.unique(pred).tolist()) <= allowed  # canonical vocabulary, kidneys split
    prob, pmeta = read_image(tmp_path / "pred" / "odd_tumor_prob.nii.gz")
    assert prob.shape == pred.shape and 0.0 <= prob.min() and prob.max() <= 1.0
    np.testing.assert_allclose(pmeta.affine, img_meta.affine, atol=1e-5)


def test_cohort_prediction_with_tta_and_skip(trained, cohorts, tmp_path):
    r1 = predict_cohort(trained / "model", cohorts["healthy"], tmp_path / "p", tta=True, show=False)
    assert sorted(r1.done) == ["healthy_000", "healthy_001"]
    r2 = predict_cohort(trained, cohorts["healthy"], tmp_path / "p", overwrite=False, show=False)
    assert sorted(r2.skipped) == ["healthy_000", "healthy_001"] and not r2.done
    assert (tmp_path / "p" / "predict_report.json").exists()


def test_tta_of_a_flip_equivariant_net_changes_nothing():
    class Pointwise(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv3d(1, 3, 1)

        def forward(self, x):
            return self.c(x)

    net = Pointwise().eval()
    x = torch.rand(1, 1, 20, 18, 12)
    a = sliding_window_probs(net, x, (8, 8, 8))
    b = sliding_window_probs(net, x, (8, 8, 8), tta=True)
    assert len(TTA_FLIPS) == 8 and a.shape == (3, 20, 18, 12)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.sum(0), torch.ones(20, 18, 12), atol=1e-5, rtol=1e-5)


def test_bad_model_folder_names_the_file(tmp_path, cohorts):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(CohortError, match="model.safetensors"):
        predict_cohort(tmp_path / "m", cohorts["healthy"], tmp_path / "out", show=False)


def test_bad_case_is_reported_not_fatal(trained, tmp_path):
    root = tmp_path / "c"
    write_case(make_case("good", 1), root)
    write_case(make_case("bad", 2), root)
    (root / "bad" / "ct.nii.gz").write_bytes(b"not a nifti")
    report = predict_cohort(trained, root, tmp_path / "out", show=False)
    assert report.done == ["good"] and "bad" in report.failed and "ct.nii.gz" in report.failed["bad"]


def _stub_model(monkeypatch):
    """Skip the network: these tests are about the files predict_cohort reads and writes."""
    from types import SimpleNamespace

    import segmentation.predict as sp

    model = SimpleNamespace(classes=["liver"], infer=SimpleNamespace(min_lesion_mm3=0.0))
    monkeypatch.setattr(sp, "resolve_model_dir", lambda p: p)
    monkeypatch.setattr(sp, "load_model", lambda p, device="cpu": model)
    monkeypatch.setattr(sp, "predict_case", lambda m, case, **kw: sp.CasePrediction(
        case.case_id, np.zeros(case.ct.shape, np.uint8), case.affine))


def test_stale_temps_of_a_killed_run_are_cleaned_on_start(monkeypatch, tmp_path):
    _stub_model(monkeypatch)
    write_case(make_case("good", 1), tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".good.1a2b3c4d.part.nii.gz").write_bytes(b"partial")  # what a kill mid-write leaves
    (out / ".bad_tumor_prob.0a0b0c0d.part.nii.gz").write_bytes(b"partial")
    (out / "notes.part.txt").write_text("mine")
    report = predict_cohort(tmp_path / "model", tmp_path / "in", out, show=False)
    assert report.ok and report.done == ["good"]
    assert sorted(p.name for p in out.iterdir()) == ["good.nii.gz", "notes.part.txt", "predict_report.json"]


def test_a_missing_input_leaves_no_output_folder(monkeypatch, tmp_path):
    from tumorgen.cli import main

    _stub_model(monkeypatch)
    out = tmp_path / "out"
    assert main(["predict", "--model", str(tmp_path), "--input", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert not out.exists()


def test_dice_per_class():
    a = np.array([0, 1, 1, 2, 2, 0])
    b = np.array([0, 1, 0, 2, 2, 2])
    d = dice_per_class(a, b, 4)
    assert d[1] == pytest.approx(2 / 3) and d[2] == pytest.approx(0.8) and np.isnan(d[3])


def test_cli_predict(trained, cohorts, tmp_path):
    from tumorgen.cli import main

    rc = main(["predict", "--model", str(trained), "--input", str(cohorts["healthy"]), "--out", str(tmp_path / "o"),
               "--save-prob"])
    assert rc == 0 and (tmp_path / "o" / "healthy_000.nii.gz").exists()
    assert (tmp_path / "o" / "healthy_001_tumor_prob.nii.gz").exists()


def test_small_lesion_components_go_back_to_the_tissue_around_them():
    from segmentation.predict import drop_small_lesions

    liver, lesion = L.NAME_TO_INDEX["liver"], L.NAME_TO_INDEX["liver_lesion"]
    kidney, klesion = L.NAME_TO_INDEX["kidney_left"], L.NAME_TO_INDEX["kidney_lesion"]
    lab = np.zeros((30, 20, 20), np.uint8)
    lab[2:18, 2:18, 2:18] = liver
    lab[4:6, 4:6, 4:5] = lesion  # 4 voxels x 2 mm^3 = 8 mm^3: dropped
    lab[10:15, 10:15, 10:15] = lesion  # 125 voxels = 250 mm^3: kept
    lab[20:28, 5:15, 5:15] = kidney
    lab[22, 8, 8] = klesion  # 2 mm^3 inside the kidney: becomes kidney
    spacing = (1.0, 1.0, 2.0)
    out, n = drop_small_lesions(lab, spacing, 20.0)
    assert n == 2 and lab[4, 4, 4] == lesion  # input untouched
    assert out[4, 4, 4] == liver and out[22, 8, 8] == kidney
    assert (out == lesion).sum() == 125
    same, n0 = drop_small_lesions(lab, spacing, 0.0)
    assert n0 == 0 and np.array_equal(same, lab)


def test_predict_cli_min_lesion_volume_is_recorded(trained, cohorts, tmp_path):
    import json

    from tumorgen.cli import main

    rc = main(["predict", "--model", str(trained), "--input", str(cohorts["real"]), "--out", str(tmp_path / "o"),
               "--min-lesion-mm3", "50"])
    rep = json.loads((tmp_path / "o" / "predict_report.json").read_text())
    assert rc == 0 and rep["min_lesion_mm3"] == 50.0
    import cc3d

    for p in (tmp_path / "o").glob("*.nii.gz"):  # no lesion component below 50 mm^3 is left
        lab, meta = read_label(p)
        vox = float(np.prod(meta.spacing))
        for les in np.intersect1d(np.unique(lab), L.LESION_LABELS):
            sizes = np.bincount(cc3d.connected_components(lab == les, connectivity=26).ravel())[1:]
            assert (sizes * vox >= 50).all()
