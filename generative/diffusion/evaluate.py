"""Generator quality numbers, so a better generator can be told from a worse one.

* Autoencoder reconstruction: PSNR and SSIM (MONAI ``PSNRMetric``, ``SSIMMetric``,
  data range 1 on HU scaled over [-175, 250]) on random crops of a real cohort.
* Tumors, synthetic vs real (e.g. real phantom tumors vs diffusion-inpainted ones):
  HU statistics inside the tumors (per-tumor mean and std, summarised over tumors)
  and the Frechet distance between the two sets of tumor patches in the feature
  space of :class:`TumorPatchNet`, a small 3D CNN trained here on the real cohort
  to tell 24^3-voxel tumor-centred patches from patches centred in healthy organ
  tissue (its 32 penultimate features; the same trained network scores both sets).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from scipy import linalg

from cohort import labels as L
from cohort.errors import BatchReport
from cohort.io import write_json, write_text
from cohort.layouts import open_cohort
from cohort.lesions import measure_lesions
from cohort.preprocess import scale_hu

PATCH = 24


@dataclass
class HUStats:
    """Over tumors: the mean of their mean HU, the spread of those means, the mean within-tumor std."""

    n_tumors: int = 0
    mean_hu: float = float("nan")
    sd_of_means_hu: float = float("nan")
    mean_within_std_hu: float = float("nan")
    rim_contrast_hu: float = float("nan")  # tumor mean minus the 3-voxel shell around it (mean over tumors)


@dataclass
class GeneratorReport:
    recon_psnr: float | None = None
    recon_ssim: float | None = None
    recon_crops: int = 0
    real: HUStats = field(default_factory=HUStats)
    synthetic: HUStats = field(default_factory=HUStats)
    frechet_distance: float | None = None
    feature_net: str = ("TumorPatchNet: 3 stride-2 3D convs (8, 16, 32 ch) + global average pool, trained on the real "
                        f"cohort to separate {PATCH}^3 tumor-centred from healthy-organ patches; 32-d features")
    feature_net_accuracy: float | None = None
    failed: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def markdown(self) -> str:
        r, s = self.real, self.synthetic
        fmt = (lambda v: "n/a" if v is None or v != v else f"{v:.2f}")  # noqa: E731
        return "\n".join([
            "# Generator quality", "",
            f"- autoencoder reconstruction on {self.recon_crops} crops: PSNR {fmt(self.recon_psnr)} dB, SSIM {fmt(self.recon_ssim)}",
            f"- Frechet distance (synthetic vs real tumor patches): {fmt(self.frechet_distance)}",
            f"  - features: {self.feature_net} (held-in accuracy {fmt(self.feature_net_accuracy)})", "",
            "| tumors | n | mean HU | sd of means | mean within-tumor sd | contrast to rim |",
            "|---|---|---|---|---|---|",
            f"| real | {r.n_tumors} | {fmt(r.mean_hu)} | {fmt(r.sd_of_means_hu)} | {fmt(r.mean_within_std_hu)} | {fmt(r.rim_contrast_hu)} |",
            f"| synthetic | {s.n_tumors} | {fmt(s.mean_hu)} | {fmt(s.sd_of_means_hu)} | {fmt(s.mean_within_std_hu)} | {fmt(s.rim_contrast_hu)} |",
            "",
        ])


# ---- tumors: HU statistics and patches -------------------------------------------------------

@dataclass
class TumorSet:
    means: list[float] = field(default_factory=list)
    stds: list[float] = field(default_factory=list)
    rims: list[float] = field(default_factory=list)
    patches: list[np.ndarray] = field(default_factory=list)  # (PATCH,)*3 in [0, 1]
    healthy: list[np.ndarray] = field(default_factory=list)

    def stats(self) -> HUStats:
        if not self.means:
            return HUStats()
        return HUStats(len(self.means), float(np.mean(self.means)), float(np.std(self.means)),
                       float(np.mean(self.stds)), float(np.mean(self.rims)))


def _patch(img: np.ndarray, centre) -> np.ndarray:
    c = np.round(np.asarray(centre)).astype(int)
    padded = np.pad(img, PATCH // 2, mode="edge")
    return padded[tuple(slice(int(x), int(x) + PATCH) for x in c)]


def collect_tumors(cohort_dir: str | Path, report: BatchReport, rng: np.random.Generator,
                   max_cases: int = 0) -> TumorSet:
    """HU statistics and tumor-centred patches of every lesion in a cohort (+ as many
    healthy-organ patches, for training the feature network)."""
    from scipy import ndimage

    out = TumorSet()
    cohort = open_cohort(cohort_dir)
    refs = cohort.refs[:max_cases] if max_cases else cohort.refs
    sub = type(cohort)(cohort.root, cohort.layout, refs, dict(cohort.problems))
    organs = [i for o in L.ORGAN_TYPES for i in L.organ_indices(o)]
    for case in sub.iter_cases(report):
        img = scale_hu(case.ct)
        for rec in measure_lesions(case.label, case.spacing):
            comp = np.zeros(case.label.shape, bool)
            (a, b) = rec.bbox
            sl = tuple(slice(x, y) for x, y in zip(a, b))
            comp[sl] = case.label[sl] == rec.label
            lab_cc, _ = ndimage.label(comp)
            cc = lab_cc[tuple(int(round(c)) for c in rec.centroid_vox)]
            if cc:
                comp = lab_cc == cc
            vals = case.ct[comp]
            shell = ndimage.binary_dilation(comp, iterations=3) & ~comp & (case.label != 0)
            out.means.append(float(vals.mean()))
            out.stds.append(float(vals.std()))
            out.rims.append(float(vals.mean() - case.ct[shell].mean()) if shell.any() else float("nan"))
            out.patches.append(_patch(img, rec.centroid_vox))
            healthy = np.argwhere(np.isin(case.label, organs))
            if len(healthy):
                out.healthy.append(_patch(img, healthy[rng.integers(len(healthy))]))
    out.rims = [r for r in out.rims if r == r] or [float("nan")]
    return out


# ---- feature network and Frechet distance ----------------------------------------------------

class TumorPatchNet(nn.Module):
    """(B, 1, 24, 24, 24) -> logits (B, 2); ``features`` gives the (B, 32) embedding."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(1, 8, 3, 2, 1), nn.SiLU(), nn.Conv3d(8, 16, 3, 2, 1), nn.SiLU(),
            nn.Conv3d(16, 32, 3, 2, 1), nn.SiLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.head = nn.Linear(32, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def train_feature_net(tumor: list[np.ndarray], healthy: list[np.ndarray], steps: int = 150,
                      seed: int = 0) -> tuple[TumorPatchNet, float]:
    """Train on real patches (tumor = 1, healthy organ = 0) with random flips; returns the
    network and its accuracy on the training patches."""
    torch.manual_seed(seed)
    x = torch.from_numpy(np.stack(tumor + healthy)[:, None].astype(np.float32))
    y = torch.tensor([1] * len(tumor) + [0] * len(healthy))
    net = TumorPatchNet()
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(32, len(x)),), generator=g)
        xb = x[idx]
        for ax in (2, 3, 4):
            if torch.rand(1, generator=g) < 0.5:
                xb = xb.flip(ax)
        loss = nn.functional.cross_entropy(net(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = float((net(x).argmax(1) == y).float().mean())
    return net.eval(), acc


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets (N, F) and (M, F)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@torch.no_grad()
def reconstruction_quality(model_dir: str | Path, cohort_dir: str | Path, crops: int = 8, crop_size=(32, 32, 32),
                           seed: int = 0, spacing_mm=(1.5, 1.5, 1.5)) -> tuple[float, float, int]:
    """Mean PSNR (dB) and SSIM of autoencoder reconstructions of random crops."""
    from monai.metrics import PSNRMetric, SSIMMetric

    from generative.diffusion.data import load_volumes, random_crop
    from generative.diffusion.models import Autoencoder

    ae = Autoencoder.from_pretrained(Path(model_dir) / "autoencoder").eval()
    vols = load_volumes(cohort_dir, list(spacing_mm))
    rng = np.random.default_rng(seed)
    psnr, ssim = PSNRMetric(max_val=1.0), SSIMMetric(spatial_dims=3, data_range=1.0, win_size=7)
    for i in range(crops):
        img, _ = random_crop(vols[i % len(vols)], tuple(crop_size), rng, 0.5)
        x = torch.from_numpy(img[None, None].copy())
        z_mu, _ = ae.encode(x)
        r = ae.decode(z_mu).clamp(0, 1)
        psnr(r, x)
        ssim(r, x)
    return float(psnr.aggregate()), float(ssim.aggregate()), crops


def evaluate_generator(model: str | Path | None, real: str | Path, synthetic: str | Path | None,
                       out: str | Path | None = None, recon_crops: int = 8, seed: int = 0) -> GeneratorReport:
    """All generator numbers; writes ``generator_eval.json`` and ``.md`` into ``out`` when given."""
    rep = GeneratorReport()
    batch = BatchReport()
    if model is not None:
        rep.recon_psnr, rep.recon_ssim, rep.recon_crops = reconstruction_quality(model, real, recon_crops, seed=seed)
    rng = np.random.default_rng(seed)
    real_set = collect_tumors(real, batch, rng)
    rep.real = real_set.stats()
    if synthetic is not None:
        syn_set = collect_tumors(synthetic, batch, rng)
        rep.synthetic = syn_set.stats()
        if len(real_set.patches) >= 2 and len(syn_set.patches) >= 2 and real_set.healthy:
            net, rep.feature_net_accuracy = train_feature_net(real_set.patches, real_set.healthy, seed=seed)
            with torch.no_grad():
                f = lambda ps: net.features(torch.from_numpy(np.stack(ps)[:, None].astype(np.float32))).numpy()  # noqa: E731
                rep.frechet_distance = frechet_distance(f(real_set.patches), f(syn_set.patches))
    rep.failed = dict(batch.failed)
    if out is not None:
        write_json(Path(out) / "generator_eval.json", rep.as_dict())
        write_text(Path(out) / "generator_eval.md", rep.markdown())
    return rep
