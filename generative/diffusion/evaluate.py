"""Generator quality numbers, so a better generator can be told from a worse one.

* Autoencoder reconstruction: PSNR and SSIM (MONAI ``PSNRMetric``, ``SSIMMetric``,
  data range 1 on HU scaled over [-175, 250]) on random crops of a real cohort.
* Tumors, synthetic vs real (e.g. real phantom tumors vs diffusion-inpainted ones):
  HU statistics inside the tumors (per-tumor mean and std, summarised over tumors)
  and the Frechet distance between the two sets of tumor patches in the feature
  space of :class:`TumorPatchNet`, a small 3D CNN trained here on the real cohort
  to tell 24^3-voxel tumor-centred patches from patches centred in healthy organ
  tissue (its 32 penultimate features; the same trained network scores both sets).
* With a held-out real cohort (tumors the feature network never saw): the same
  numbers for it, which put the synthetic ones on a scale (the Frechet distance
  of held-out real tumors to the training ones is what "as real as real" reads),
  and the tumor rate: the share of tumor patches the network calls tumor. A
  synthetic tumor that the tumor-vs-healthy network takes for healthy tissue
  does not look like a tumor.
* ``tumor_montage.png``: the axial slice through the centre of real and
  synthetic tumors side by side, with their outlines.
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
    heldout: HUStats = field(default_factory=HUStats)
    frechet_distance_heldout: float | None = None  # held-out real vs real: the scale for frechet_distance
    tumor_rate_synthetic: float | None = None  # share of synthetic tumor patches the network calls tumor
    tumor_rate_heldout: float | None = None  # the same for held-out real tumors
    feature_net: str = ("TumorPatchNet: 3 stride-2 3D convs (8, 16, 32 ch) + a linear layer on the 3^3 grid, trained on the real "
                        f"cohort to separate {PATCH}^3 tumor-centred patches from patches of the same organ away "
                        "from lesions; 32-d features")
    feature_net_accuracy: float | None = None
    recon_psnr_tumor: float | None = None  # PSNR over tumor ROIs (the tumor's box grown by 3 mm) of the held-out cohort
    recon_tumor_rois: int = 0
    #: synthetic vs held-out real tumors, per attribute (appearance_comparison)
    appearance: dict = field(default_factory=dict)
    #: synthetic vs held-out real (the target compares it with frechet_distance_heldout: training real vs held-out)
    frechet_distance_synthetic_vs_heldout: float | None = None
    failed: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def markdown(self) -> str:
        fmt = (lambda v: "n/a" if v is None or v != v else f"{v:.2f}")  # noqa: E731
        rows = [("real (feature-net training)", self.real, None, None)]
        if self.heldout.n_tumors:
            rows.append(("real held out", self.heldout, self.frechet_distance_heldout, self.tumor_rate_heldout))
        rows.append(("synthetic", self.synthetic, self.frechet_distance, self.tumor_rate_synthetic))
        lines = [
            "# Generator quality", "",
            f"- autoencoder reconstruction on {self.recon_crops} crops: PSNR {fmt(self.recon_psnr)} dB, SSIM {fmt(self.recon_ssim)}",
            f"- Frechet distance (synthetic vs real tumor patches): {fmt(self.frechet_distance)}"
            + (f"; held-out real vs real: {fmt(self.frechet_distance_heldout)}" if self.frechet_distance_heldout is not None else ""),
            f"  - features: {self.feature_net} (held-in accuracy {fmt(self.feature_net_accuracy)})", "",
            "| tumors | n | mean HU | sd of means | mean within-tumor sd | contrast to rim | FD to real | tumor rate |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, st, fd, rate in rows:
            lines.append(f"| {name} | {st.n_tumors} | {fmt(st.mean_hu)} | {fmt(st.sd_of_means_hu)} | "
                         f"{fmt(st.mean_within_std_hu)} | {fmt(st.rim_contrast_hu)} | {fmt(fd)} | {fmt(rate)} |")
        if self.recon_psnr_tumor is not None:
            lines += ["", f"- autoencoder PSNR inside {self.recon_tumor_rois} tumor ROIs: {fmt(self.recon_psnr_tumor)} dB"]
        if self.frechet_distance_synthetic_vs_heldout is not None:
            lines.append(f"- Frechet distance to the held-out real tumors: synthetic {fmt(self.frechet_distance_synthetic_vs_heldout)}, "
                         f"training real {fmt(self.frechet_distance_heldout)}")
        return "\n".join(lines + [""] + self._appearance_lines())

    def _appearance_lines(self) -> list[str]:
        a = self.appearance
        if not a:
            return []
        fmt = (lambda v: "n/a" if v is None or v != v else f"{v:.2f}")  # noqa: E731
        ms = lambda e: f"{fmt(e['mean'])} ± {fmt(e['sd'])} (n {e['n']})"  # noqa: E731
        lines = ["## Appearance, synthetic vs held-out real tumors (cohort.appearance)", "",
                 "| attribute | held-out real | synthetic | training real | KS synthetic | KS training real |",
                 "|---|---|---|---|---|---|"]
        for k, e in a["attributes"].items():
            lines.append(f"| {k} | {ms(e['heldout'])} | {ms(e['synthetic'])} | {ms(e['real'])} | "
                         f"{fmt(e.get('ks_synthetic_vs_heldout'))} | {fmt(e.get('ks_real_vs_heldout'))} |")
        lines += ["", f"- spread of tumor means: ratio synthetic / held-out {fmt(a['spread_ratio'])}",
                  f"- early tumors' |contrast|: ratio synthetic / held-out {fmt(a['early_contrast_ratio'])}"
                  + (f" (95 % CI {fmt(a['early_contrast_ratio_ci'][0])}-{fmt(a['early_contrast_ratio_ci'][1])})"
                     if a.get("early_contrast_ratio_ci") else "")
                  + (f"; training real / held-out {fmt(a['early_contrast_ratio_real'])}"
                     if a.get("early_contrast_ratio_real") is not None else ""),
                  f"- types produced: {a['types'].get('synthetic')}; held-out real: {a['types'].get('heldout')}"]
        if a.get("type_rule_agreement"):
            lines.append(f"- the type rule agrees with the phantom's own types on {a['type_rule_agreement']['agree']:.0%} "
                         f"of {a['type_rule_agreement']['n']} real tumors")
        for k, e in a.get("control_error", {}).items():
            lines.append(f"- control error {k}: {fmt(e['mean_abs_error'])} over {e['n']} asked tumors")
        return lines + [""]


# ---- tumors: HU statistics and patches -------------------------------------------------------

@dataclass
class TumorSet:
    means: list[float] = field(default_factory=list)
    stds: list[float] = field(default_factory=list)
    rims: list[float] = field(default_factory=list)
    patches: list[np.ndarray] = field(default_factory=list)  # (PATCH,)*3 in [0, 1]
    masks: list[np.ndarray] = field(default_factory=list)  # the tumor's own mask on the same patch
    healthy: list[np.ndarray] = field(default_factory=list)
    #: per tumor: cohort.appearance attributes + "type" (classified) + "true_type" (a phantom's own, when
    #: known) + "asked" (what a synthetic tumor was asked for, when recorded)
    appearance: list[dict] = field(default_factory=list)

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
    patches of the tumors' host organs away from any lesion, for training the feature network)."""
    from scipy import ndimage

    out = TumorSet()
    cohort = open_cohort(cohort_dir)
    refs = cohort.refs[:max_cases] if max_cases else cohort.refs
    sub = type(cohort)(cohort.root, cohort.layout, refs, dict(cohort.problems))
    organs = [i for o in L.ORGAN_TYPES for i in L.organ_indices(o)]
    for case in sub.iter_cases(report):
        img = scale_hu(case.ct)
        lesions = measure_lesions(case.label, case.spacing)
        out.appearance += case_appearance(case)  # same order as measure_lesions: class, then size
        if lesions:  # negatives keep at least half a patch from any lesion
            far = ndimage.distance_transform_edt(~np.isin(case.label, L.LESION_LABELS)) > PATCH // 2
        for rec in lesions:
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
            out.masks.append(_patch(comp, rec.centroid_vox))
            # the negative: parenchyma of the tumor's own organ away from lesions, so the network
            # learns what a tumor looks like against its organ, not where organs are
            organ_type = L.LESION_TO_ORGAN_TYPE.get(L.INDEX_TO_NAME[rec.label])
            host = L.organ_indices(organ_type) if organ_type else organs
            healthy = np.argwhere(np.isin(case.label, host) & far)
            if not len(healthy):
                healthy = np.argwhere(np.isin(case.label, organs) & far)
            if len(healthy):
                out.healthy.append(_patch(img, healthy[rng.integers(len(healthy))]))
    out.rims = [r for r in out.rims if r == r] or [float("nan")]
    return out


def _nearest(records: list[dict], centroid) -> dict | None:
    """The sidecar record whose centroid is nearest (within 3 voxels) to a measured lesion's."""
    best, dist = None, 3.0
    for r in records:
        c = r.get("centroid_vox")
        if c is not None and (d := float(np.linalg.norm(np.subtract(c, centroid)))) <= dist:
            best, dist = r, d
    return best


def case_appearance(case) -> list[dict]:
    """Every lesion's measured appearance, its classified type, and what the case's sidecar says
    about it: a phantom's own appearance type, a synthetic tumor's asked attributes."""
    from cohort.appearance import classify, measure_appearance

    recs = [r for r in (case.meta.get("tumors") or []) if isinstance(r, dict)]
    rows = []
    for a in measure_appearance(case.ct, case.label, case.spacing):
        row = {"case_id": case.case_id, **a.as_dict(), "type": classify(a)}
        if (r := _nearest(recs, a.centroid_vox)) is not None:
            if isinstance(r.get("appearance"), str):
                row["true_type"] = r["appearance"]
            elif isinstance(r.get("appearance"), dict):
                row["asked"] = r["appearance"].get("asked") or {}
        rows.append(row)
    return rows


def _summary(values) -> dict:
    v = np.asarray([x for x in values if x == x], float)
    return {"n": int(v.size), "mean": float(v.mean()) if v.size else None, "sd": float(v.std()) if v.size else None}


def _ratio_ci(num: np.ndarray, den: np.ndarray, n_boot: int = 2000, seed: int = 0) -> list[float] | None:
    """Percentile bootstrap 95 % CI of mean(num) / mean(den), each set resampled on its own."""
    if num.size < 2 or den.size < 2:
        return None
    rng = np.random.default_rng(seed)
    a = num[rng.integers(0, num.size, (n_boot, num.size))].mean(1)
    b = den[rng.integers(0, den.size, (n_boot, den.size))].mean(1)
    ok = b > 0
    if not ok.any():
        return None
    r = a[ok] / b[ok]
    return [float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))]


def appearance_comparison(real: list[dict], heldout: list[dict], synthetic: list[dict]) -> dict:
    """Synthetic against held-out real tumors, attribute by attribute (mean, sd, two-sample KS
    statistic; the training real tumors' KS against the held-out ones is the yardstick), the
    spread of tumor means, early tumors' contrast, which appearance types are produced, the
    control error of asked attributes, and how often the type rule agrees with a phantom's
    own types."""
    from scipy.stats import ks_2samp

    from cohort.appearance import CONDITION_ATTRIBUTES

    out: dict = {"attributes": {}}
    sets = {"real": real, "heldout": heldout, "synthetic": synthetic}
    for a in (*CONDITION_ATTRIBUTES, "diameter_mm"):
        col = {k: [r[a] for r in rows if r.get(a) == r.get(a)] for k, rows in sets.items()}
        entry = {k: _summary(v) for k, v in col.items()}
        for k in ("synthetic", "real"):
            if len(col[k]) >= 2 and len(col["heldout"]) >= 2:
                entry[f"ks_{k}_vs_heldout"] = float(ks_2samp(col[k], col["heldout"]).statistic)
        out["attributes"][a] = entry
    sd = {k: _summary([r["mean_hu"] for r in rows])["sd"] for k, rows in sets.items()}
    out["spread_of_means_hu"] = sd
    out["spread_ratio"] = sd["synthetic"] / sd["heldout"] if sd["synthetic"] is not None and sd["heldout"] else None
    early_v = {k: np.array([abs(r["contrast_hu"]) for r in rows if r["size_class"] == "early"], float)
               for k, rows in sets.items()}
    early = {k: _summary(v) for k, v in early_v.items()}
    out["early_abs_contrast_hu"] = early
    out["early_contrast_ratio"] = (early["synthetic"]["mean"] / early["heldout"]["mean"]
                                   if early["synthetic"]["mean"] is not None and early["heldout"]["mean"] else None)
    # the yardstick (training real over held-out real early tumors) and a bootstrap 95 % CI of the ratio: with
    # 10-30 early tumors a set, the two real sets themselves can differ by a third
    out["early_contrast_ratio_real"] = (early["real"]["mean"] / early["heldout"]["mean"]
                                        if early["real"]["mean"] is not None and early["heldout"]["mean"] else None)
    out["early_contrast_ratio_ci"] = _ratio_ci(early_v["synthetic"], early_v["heldout"])
    out["types"] = {k: {t: sum(r["type"] == t for r in rows) for t in sorted({r["type"] for r in rows})}
                    for k, rows in sets.items()}
    typed = [r for r in real + heldout if "true_type" in r]
    out["type_rule_agreement"] = ({"n": len(typed), "agree": float(np.mean([r["type"] == r["true_type"] for r in typed]))}
                                  if typed else None)
    control: dict = {}
    for r in synthetic:
        for a, v in (r.get("asked") or {}).items():
            control.setdefault(a, []).append(abs(float(r[a]) - float(v)))
    out["control_error"] = {a: {"n": len(e), "mean_abs_error": float(np.mean(e))} for a, e in control.items()}
    return out


@torch.no_grad()
def tumor_roi_psnr(model_dir: str | Path, cohort_dir: str | Path, spacing_mm=(1.5, 1.5, 1.5), margin_mm: float = 3.0,
                   crop: int = 32) -> tuple[float | None, int]:
    """PSNR (dB, data range 1 on the HU window) of autoencoder reconstructions inside tumor ROIs:
    each lesion's bounding box grown by ``margin_mm``, reconstructed in a ``crop``^3 crop centred
    on it (the tumor's surroundings are in the encoder's field of view); the squared errors of all
    ROIs are pooled."""
    from generative.diffusion.data import load_volumes
    from generative.diffusion.models import load_autoencoder

    ae = load_autoencoder(Path(model_dir) / "autoencoder").eval()
    se, n, rois = 0.0, 0, 0
    m = int(np.ceil(margin_mm / min(spacing_mm)))
    for vol in load_volumes(cohort_dir, list(spacing_mm), intensity=ae.intensity):
        img = np.pad(vol.image, crop // 2, mode="edge")
        for rec in measure_lesions(vol.label, spacing_mm):
            (lo, hi) = rec.bbox
            c = [int(round(x)) + crop // 2 for x in rec.centroid_vox]
            sl = tuple(slice(x - crop // 2, x + crop // 2) for x in c)
            x = torch.from_numpy(img[sl][None, None].copy())
            r = ae.decode(ae.encode(x)[0]).clamp(0, 1)[0, 0].numpy()
            roi = tuple(slice(max(0, a - m - x0 + crop // 2), min(crop, b + m - x0 + crop // 2))
                        for a, b, x0 in zip(lo, hi, [int(round(v)) for v in rec.centroid_vox]))
            d = (r[roi] - img[sl][roi]) ** 2
            se, n, rois = se + float(d.sum()), n + d.size, rois + 1
    return (float(10 * np.log10(1.0 / (se / n))) if n else None), rois


# ---- feature network and Frechet distance ----------------------------------------------------

class TumorPatchNet(nn.Module):
    """(B, 1, 24, 24, 24) -> logits (B, 2); ``features`` gives the (B, 32) embedding.

    Three stride-2 convolutions leave a 3^3 grid that is flattened, not averaged: what
    sits at the centre of the patch (the tumor) must count more than what is at its edge."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(1, 8, 3, 2, 1), nn.SiLU(), nn.Conv3d(8, 16, 3, 2, 1), nn.SiLU(),
            nn.Conv3d(16, 32, 3, 2, 1), nn.SiLU(), nn.Flatten(), nn.Linear(32 * 27, 32), nn.SiLU())
        self.head = nn.Linear(32, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - 0.5) * 4.0)  # [0, 1] (HU -175..250) -> about unit scale around soft tissue

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_feature_net(tumor: list[np.ndarray], healthy: list[np.ndarray], steps: int = 300,
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
    from generative.diffusion.models import load_autoencoder

    ae = load_autoencoder(Path(model_dir) / "autoencoder").eval()
    vols = load_volumes(cohort_dir, list(spacing_mm), intensity=ae.intensity)
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


def _save_png(fig, path: str | Path) -> Path:
    """Write a figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    from cohort.io import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def tumor_montage(sets: dict[str, TumorSet], path: str | Path, per_row: int = 8) -> Path:
    """One row per set: the axial slice through the centre of up to ``per_row`` tumors (HU window
    [-175, 250]), tumor outline in red. Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, axes = plt.subplots(len(sets), per_row, figsize=(1.6 * per_row, 1.8 * len(sets)), squeeze=False)
    for r, (name, ts) in enumerate(sets.items()):
        for c in range(per_row):
            ax = axes[r, c]
            ax.set_axis_off()
            if c < len(ts.patches):
                z = PATCH // 2
                ax.imshow(ts.patches[c][:, :, z].T, cmap="gray", vmin=0, vmax=1, origin="lower")
                if c < len(ts.masks) and ts.masks[c][:, :, z].any():
                    ax.contour(ts.masks[c][:, :, z].T.astype(float), levels=[0.5], colors="r", linewidths=0.6)
                ax.set_title(f"{ts.means[c]:.0f} HU", fontsize=7)
        axes[r, 0].text(-0.1, 0.5, name, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8)
    fig.suptitle(f"tumors, axial slice through the centre ({PATCH}^3 voxel patches)", fontsize=9)
    return _save_png(fig, path)


def type_montage(real: TumorSet, synthetic: TumorSet, path: str | Path, per_side: int = 4) -> Path:
    """One row per appearance type (cohort.appearance.classify): up to ``per_side`` held-out real
    tumors of that type, then up to ``per_side`` synthetic ones. Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cohort.phantom.tumors import APPEARANCES

    fig, axes = plt.subplots(len(APPEARANCES), 2 * per_side, figsize=(1.5 * 2 * per_side, 1.7 * len(APPEARANCES)),
                             squeeze=False)
    z = PATCH // 2
    for r, t in enumerate(APPEARANCES):
        for side, ts in enumerate((real, synthetic)):
            idx = [i for i, a in enumerate(ts.appearance) if a["type"] == t and i < len(ts.patches)][:per_side]
            for j in range(per_side):
                ax = axes[r, side * per_side + j]
                ax.set_axis_off()
                if j < len(idx):
                    i = idx[j]
                    ax.imshow(ts.patches[i][:, :, z].T, cmap="gray", vmin=0, vmax=1, origin="lower")
                    if ts.masks[i][:, :, z].any():
                        ax.contour(ts.masks[i][:, :, z].T.astype(float), levels=[0.5], colors="r", linewidths=0.5)
                    a = ts.appearance[i]
                    ax.set_title(f"{a['contrast_hu']:+.0f} HU, {a['diameter_mm']:.0f} mm", fontsize=6)
        axes[r, 0].text(-0.1, 0.5, t, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8)
    fig.suptitle(f"appearance types: held-out real (left {per_side}) and synthetic (right {per_side}); "
                 "contrast to the organ shell, diameter", fontsize=8)
    return _save_png(fig, path)


def evaluate_generator(model: str | Path | None, real: str | Path, synthetic: str | Path | None,
                       out: str | Path | None = None, recon_crops: int = 8, seed: int = 0,
                       heldout: str | Path | None = None) -> GeneratorReport:
    """All generator numbers; writes ``generator_eval.json``, ``.md`` and ``tumor_montage.png``
    into ``out`` when given. ``heldout``: real tumors kept out of the feature network's training,
    the yardstick for the synthetic numbers."""
    rep = GeneratorReport()
    batch = BatchReport()
    if model is not None:
        rep.recon_psnr, rep.recon_ssim, rep.recon_crops = reconstruction_quality(model, real, recon_crops, seed=seed)
        rep.recon_psnr_tumor, rep.recon_tumor_rois = tumor_roi_psnr(model, heldout if heldout is not None else real)
    rng = np.random.default_rng(seed)
    real_set = collect_tumors(real, batch, rng)
    rep.real = real_set.stats()
    sets = {"real": real_set}
    held_set = None
    if heldout is not None:
        held_set = collect_tumors(heldout, batch, rng)
        rep.heldout = held_set.stats()
        sets["real held out"] = held_set
    if synthetic is not None:
        syn_set = collect_tumors(synthetic, batch, rng)
        rep.synthetic = syn_set.stats()
        sets["synthetic"] = syn_set
        if len(real_set.patches) >= 2 and len(syn_set.patches) >= 2 and real_set.healthy:
            net, rep.feature_net_accuracy = train_feature_net(real_set.patches, real_set.healthy, seed=seed)
            with torch.no_grad():
                as_x = lambda ps: torch.from_numpy(np.stack(ps)[:, None].astype(np.float32))  # noqa: E731
                f = lambda ps: net.features(as_x(ps)).numpy()  # noqa: E731
                rate = lambda ps: float((net(as_x(ps)).argmax(1) == 1).float().mean())  # noqa: E731
                feats_real = f(real_set.patches)
                rep.frechet_distance = frechet_distance(feats_real, f(syn_set.patches))
                rep.tumor_rate_synthetic = rate(syn_set.patches)
                if held_set is not None and len(held_set.patches) >= 2:
                    feats_held = f(held_set.patches)
                    rep.frechet_distance_heldout = frechet_distance(feats_real, feats_held)
                    rep.frechet_distance_synthetic_vs_heldout = frechet_distance(feats_held, f(syn_set.patches))
                    rep.tumor_rate_heldout = rate(held_set.patches)
        if held_set is not None:
            rep.appearance = appearance_comparison(real_set.appearance, held_set.appearance, syn_set.appearance)
    rep.failed = dict(batch.failed)
    if out is not None:
        write_json(Path(out) / "generator_eval.json", rep.as_dict())
        write_text(Path(out) / "generator_eval.md", rep.markdown())
        if any(s.patches for s in sets.values()):
            tumor_montage(sets, Path(out) / "tumor_montage.png")
        if held_set is not None and "synthetic" in sets:
            type_montage(held_set, sets["synthetic"], Path(out) / "appearance_montage.png")
    return rep
