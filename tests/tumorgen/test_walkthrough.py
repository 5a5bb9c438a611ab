"""docs/WALKTHROUGH.md ("your own data") end to end at the smallest sizes (slow tier).

A tiny folder in the MSD layout (Task03_Liver's labels: 1 liver, 2 cancer) goes through every step
of the walkthrough by ``tumorgen.cli.main``: cohort info, the three generator stages, sample,
filter train/calibrate/score/apply/audit and export nnunet, then nnU-Net's own integrity check. The
walkthrough's commands are checked against the parsers: every ``tumorgen`` line parses, names a
subcommand this test runs, and every step this test runs is in the walkthrough.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from cohort import labels as L
from cohort.config import config_dir
from cohort.io import read_label, write_volume
from tests.toys import toy_abdomen_case
from tumorgen.cli import build_parser, main

DOC = Path(__file__).resolve().parents[2] / "docs" / "WALKTHROUGH.md"
TINY_GEN = config_dir() / "demo" / "generative_tiny.yaml"
TINY_SAMPLE = config_dir() / "demo" / "sample_tiny.yaml"
TINY_FILTER = config_dir() / "generative" / "filter_tiny.yaml"
LIVER, LESION = L.NAME_TO_INDEX["liver"], L.NAME_TO_INDEX["liver_lesion"]

#: the tumorgen steps of the walkthrough, in order (subcommand words)
STEPS = [("cohort", "info"), ("train",), ("sample",), ("filter", "train"), ("filter", "calibrate"), ("filter", "score"),
         ("filter", "apply"), ("filter", "audit"), ("export", "nnunet")]


def doc_commands() -> list[list[str]]:
    """Every command line of the walkthrough's ```bash blocks (continuation lines joined, comments dropped)."""
    text = DOC.read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                words = shlex.split(line)
                while words and re.fullmatch(r"[A-Za-z_]\w*=\S*", words[0]):  # VAR=value before a command
                    words = words[1:]
                cmds.append(words)
    return cmds


def _flags(argv: list[str]) -> set[str]:
    return {a for a in argv if a.startswith("--")}


def _subcommand(argv: list[str]) -> tuple[str, ...]:
    return tuple(argv[:2]) if argv[0] in ("cohort", "filter", "export") else (argv[0],)


def test_the_walkthrough_commands_parse_and_are_the_steps_this_test_runs():
    from generative.train import build_parser as train_parser

    cmds = doc_commands()
    tumorgen = [c[1:] for c in cmds if c[0] == "tumorgen"]
    parser = build_parser()
    for argv in tumorgen:
        parser.parse_args(argv)  # exits (SystemExit 2) on an unknown subcommand or flag
    assert sorted(set(map(_subcommand, tumorgen))) == sorted(set(STEPS))
    assert [s for s in dict.fromkeys(map(_subcommand, tumorgen)) if s in STEPS] == STEPS  # in the walkthrough's order
    launches = [c for c in cmds if c[:2] == ["accelerate", "launch"] or c[0] == "torchrun"]
    stages = set()
    for c in launches:
        argv = c[c.index("generative.train") + 1:]
        stages.add(train_parser().parse_args(argv).stage)
    assert stages == {"autoencoder", "diffusion", "controlnet"}
    for c in launches:  # every GPU config the walkthrough names exists
        cfg = Path(c[c.index("--config") + 1])
        assert (config_dir().parent / cfg).exists(), cfg
    nn = [c for c in cmds if c[0].startswith("nnUNetv2_")]
    assert {c[0] for c in nn} == {"nnUNetv2_plan_and_preprocess", "nnUNetv2_train"}
    export = next(a for a in tumorgen if a[:2] == ["export", "nnunet"])
    did = export[export.index("--dataset-id") + 1]
    assert all(did in c for c in nn), "the nnU-Net commands use the dataset id of the export"


def write_msd(root: Path, cases: list) -> Path:
    """Cases as an MSD Task03_Liver folder: imagesTr/labelsTr with 1 liver, 2 cancer, and dataset.json."""
    items = []
    for case in cases:
        src = np.zeros(case.shape, np.uint8)
        src[case.label == LIVER] = 1
        src[case.label == LESION] = 2
        write_volume(root / "imagesTr" / f"{case.case_id}.nii.gz", case.ct, case.affine)
        write_volume(root / "labelsTr" / f"{case.case_id}.nii.gz", src, case.affine)
        items.append({"image": f"./imagesTr/{case.case_id}.nii.gz", "label": f"./labelsTr/{case.case_id}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "Liver", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "cancer"},
        "numTraining": len(items), "training": items}))
    return root


@pytest.mark.slow
def test_walkthrough_end_to_end(tmp_path, capsys):
    ran: list[list[str]] = []

    def run(argv: list[str]) -> int:
        ran.append(argv)
        return main(argv)

    real = write_msd(tmp_path / "my_liver", [toy_abdomen_case(f"liver_{i}", seed=i) for i in range(4)])
    healthy = write_msd(tmp_path / "my_healthy", [toy_abdomen_case(f"healthy_{i}", seed=10 + i, tumor=False)
                                                  for i in range(2)])

    # 1. look at the data
    capsys.readouterr()
    assert run(["cohort", "info", str(real), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layout"] == "msd" and info["cases"] == 4 and info["organs"] == {"liver": 4}
    assert info["tumors"]["liver_lesion"]["cases"] == 4

    # 2. the generator, stage by stage (the walkthrough's CPU alternative: `tumorgen train`)
    gen = tmp_path / "generator"
    base = ["--config", str(TINY_GEN), "--quiet", "--set", f"data.cohort={real}", "--set", f"output_dir={gen}",
            "--set", "train.steps=2"]
    assert run(["train", "--stage", "autoencoder", *base]) == 0
    assert run(["train", "--stage", "diffusion", *base, "--set", f"init_from={gen / 'autoencoder' / 'model'}"]) == 0
    assert run(["train", "--stage", "controlnet", *base, "--set", f"init_from={gen / 'diffusion' / 'model'}"]) == 0
    model = gen / "controlnet" / "model"
    assert (gen / "autoencoder" / "model" / "autoencoder").is_dir()
    for stage in ("diffusion", "controlnet"):
        assert (gen / stage / "model" / "pipeline.json").exists(), stage
    assert {"autoencoder", "unet", "controlnet"} <= {p.name for p in model.iterdir()}

    # 3. synthetic cohorts: one to filter, one (another seed) to train the discriminator on
    syn, disc = tmp_path / "synthetic" / "mine", tmp_path / "synthetic" / "mine_disc"
    assert run(["sample", "--healthy", str(healthy), "--model", str(model), "--spec", str(TINY_SAMPLE),
                 "--out", str(syn), "--device", "cpu", "--quiet"]) == 0
    assert run(["sample", "--healthy", str(healthy), "--model", str(model), "--spec", str(TINY_SAMPLE),
                 "--out", str(disc), "--device", "cpu", "--quiet", "--set", "seed=1"]) == 0
    for cohort in (syn, disc):
        cases = sorted(p for p in cohort.iterdir() if (p / "case.json").exists())
        assert len(cases) == 2 and (cohort / "manifest.jsonl").exists()
        for c in cases:
            meta = json.loads((c / "case.json").read_text())
            assert meta["kind"] == "synthetic" and meta["tumors"]
            assert (read_label(c / "combined_labels.nii.gz")[0] == LESION).any()

    # 4. the quality filter
    f = tmp_path / "filter"
    fset = ["--config", str(TINY_FILTER), "--set", "train.max_steps=20"]
    assert run(["filter", "train", *fset, "--real", str(real), "--synthetic", f"mine={disc}",
                 "--out", str(f / "discriminator")]) == 0
    held = write_msd(tmp_path / "my_liver_heldout", [toy_abdomen_case(f"held_{i}", seed=40 + i) for i in range(2)])
    assert run(["filter", "calibrate", *fset, "--model", str(f / "discriminator"), "--real", str(held)]) == 0
    cal = json.loads((f / "discriminator" / "calibration.json").read_text())
    assert cal["calibration_source"]["n_cases"] == 2 and cal["calibration_source"]["n_check"] == 1
    assert run(["filter", "score", *fset, "--model", str(f / "discriminator"), "--cohort", str(syn),
                 "--out", str(f / "scores")]) == 0
    assert run(["filter", "apply", *fset, "--model", str(f / "discriminator"), "--scores", str(f / "scores"),
                 "--out", str(f / "filtered"), "--set", "policy.kind=top_q", "--set", "policy.top_q=0.5"]) == 0
    assert run(["filter", "audit", *fset, "--model", str(f / "discriminator"), "--scores", str(f / "scores"),
                 "--out", str(f / "audit"), "--probe-cohort", str(real), "--set", "audit.probes=[noise]"]) == 0

    accepted = (f / "filtered" / "manifest.jsonl").read_text().splitlines()
    assert len(accepted) == 2 and (f / "filtered" / "filter_summary.json").exists()
    assert (f / "audit" / "report.html").exists()

    # 5. nnU-Net export (no weights: every real and every accepted case; the walkthrough's 1 : 3 would keep
    # no real case beside the one or two accepted here)
    raw = tmp_path / "nnUNet_raw"
    assert run(["export", "nnunet", "--sources", f"name=real,path={real}",
                 f"name=synthetic,path={f / 'filtered' / 'manifest.jsonl'},kind=synthetic,accepted_only=true",
                 "--classes", "liver", "liver_lesion", "--dataset-id", "501", "--out", str(raw)]) == 0
    root = raw / "Dataset501_TumorGen"
    ds = json.loads((root / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "liver": 1, "liver_lesion": 2}
    n_acc = sum(bool(json.loads(x).get("accepted")) for x in accepted)
    assert ds["numTraining"] == 4 + n_acc
    labels = sorted((root / "labelsTr").iterdir())
    assert len(labels) == ds["numTraining"]
    assert all((read_label(p)[0] == 2).any() for p in labels)  # every exported case has its lesion label
    # the walkthrough's commands are the ones run here: each step's flags are among those this test gave
    for step in STEPS:
        mine = set().union(*(_flags(a) for a in ran if _subcommand(a) == step))
        for argv in (c[1:] for c in doc_commands() if c[0] == "tumorgen" and _subcommand(c[1:]) == step):
            assert _flags(argv) <= mine | {"--json"}, (step, _flags(argv) - mine)
    if not os.environ.get("CI"):
        pytest.importorskip("nnunetv2")
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(root), num_processes=1)
