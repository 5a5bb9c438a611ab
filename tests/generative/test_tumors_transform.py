"""RandTumorSynthesisd inside a MONAI Compose and a DataLoader."""

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, EnsureTyped, ScaleIntensityRanged

from cohort import labels as L
from generative.tumors import CAConfig, CASynthesizer, RuleSynthesizer, TumorSpec
from generative.tumors.transform import RandTumorSynthesisd
from tests.toys import toy_liver

torch.set_num_threads(1)
LESION = L.NAME_TO_INDEX["liver_lesion"]


def items(n=4, size=24):
    out = []
    for i in range(n):
        ct, lab = toy_liver(size, seed=i)
        out.append({"image": ct[None], "label": lab[None]})
    return out


def test_compose_dataloader_batch_adds_tumors_before_scaling():
    synth = RuleSynthesizer()
    t = Compose([
        EnsureTyped(keys=("image", "label")),
        RandTumorSynthesisd(("image", "label"), synth, prob=1.0, specs=TumorSpec("liver", size="small", count=1),
                            spacing=(1.0, 1.0, 1.0)),
        ScaleIntensityRanged("image", -175, 250, 0.0, 1.0, clip=True),
    ])
    t.set_random_state(0)
    batch = next(iter(DataLoader(Dataset(items(), t), batch_size=2, num_workers=0)))
    assert batch["image"].shape == (2, 1, 24, 24, 24) and batch["label"].shape == (2, 1, 24, 24, 24)
    assert isinstance(batch["image"], MetaTensor)
    assert batch["label"].dtype == torch.uint8
    assert all(((batch["label"][i] == LESION).sum() > 0) for i in range(2))
    assert 0.0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1.0


def test_prob_zero_and_existing_lesion_pass_through():
    d = items(1)[0]
    never = RandTumorSynthesisd(("image", "label"), RuleSynthesizer(), prob=0.0)
    out = never(dict(d))
    assert np.array_equal(out["image"], d["image"]) and np.array_equal(out["label"], d["label"])
    sick = dict(d)
    sick["label"] = d["label"].copy()
    sick["label"][0, 12, 12, 12] = LESION
    always = RandTumorSynthesisd(("image", "label"), RuleSynthesizer(), prob=1.0)
    out = always(sick)
    assert np.array_equal(out["image"], d["image"])  # not a healthy case: untouched


def test_ca_on_scaled_images_with_hu_range_and_metatensor_spacing():
    ct, lab = toy_liver(24)
    scaled = np.clip((ct + 175) / 425, 0, 1)[None].astype(np.float32)
    aff = torch.diag(torch.tensor([1.5, 1.5, 1.5, 1.0], dtype=torch.float64))
    d = {"image": MetaTensor(torch.from_numpy(scaled), affine=aff), "label": MetaTensor(torch.from_numpy(lab[None]), affine=aff)}
    tr = RandTumorSynthesisd(("image", "label"), CASynthesizer(CAConfig()), prob=1.0,
                             specs=[TumorSpec("liver", steps=20)], hu_range=(-175.0, 250.0), records_key="tumors")
    tr.set_random_state(3)
    out = tr(d)
    assert isinstance(out["image"], MetaTensor) and torch.equal(out["image"].affine, aff)
    lesion = out["label"][0].numpy() == LESION
    assert lesion.any()
    img = out["image"][0].numpy()
    assert np.allclose(img[lab == 0], scaled[0][lab == 0], atol=1e-5)  # outside the organ: unchanged
    assert img[lesion].mean() < scaled[0][lesion].mean()
    assert out["tumors"] and out["tumors"][0]["method"] == "ca"


def test_same_random_state_same_output():
    a = RandTumorSynthesisd(("image", "label"), RuleSynthesizer(), prob=0.7).set_random_state(11)
    b = RandTumorSynthesisd(("image", "label"), RuleSynthesizer(), prob=0.7).set_random_state(11)
    for d in items(3):
        oa, ob = a(dict(d)), b(dict(d))
        assert np.array_equal(oa["image"], ob["image"]) and np.array_equal(oa["label"], ob["label"])


def test_rejects_bad_shapes():
    tr = RandTumorSynthesisd(("image", "label"), RuleSynthesizer(), prob=1.0)
    ct, lab = toy_liver(16)
    with pytest.raises(ValueError, match=r"shape \(1, X, Y, Z\)"):
        tr({"image": ct, "label": lab})


def test_transform_takes_the_training_patch_synthesis_path():
    from segmentation.synthesis import synthesize_patch

    d = items(1)[0]
    spec = TumorSpec("liver", size="small", count=1)
    tr = RandTumorSynthesisd(("image", "label"), RuleSynthesizer(), prob=1.0, specs=spec, spacing=(1.0, 1.0, 1.0))
    tr.set_random_state(5)
    out = tr(dict(d))
    ct, lab, syn = synthesize_patch(RuleSynthesizer(), d["image"][0], d["label"][0], (1.0, 1.0, 1.0), spec,
                                    np.random.default_rng(tr._seed))
    assert syn.applied and np.array_equal(out["image"][0], ct) and np.array_equal(out["label"][0], lab)
