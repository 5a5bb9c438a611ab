"""Radiomic features of a tumor crop: the numbers a radiologist would look at, computed in torch.

The CNN of :mod:`generative.quality.discriminator` learns texture from a few hundred crops;
with so few examples it is slow to pick up the plain facts that give most bad tumors away
(a flat block, a tumor with no scanner noise, one pasted with a seam, one sitting in fat).
These features state them directly. They are computed from the crop itself (channel 0: CT
windowed to [hu_min, hu_max] and scaled to [0, 1]; channel 1: the tumor mask), so every path
that builds crops (training, probes, scoring) gets them with no extra inputs, and they follow
the scan's contrast phase: intensities are relative to the tissue around the tumor, never
absolute HU.

Regions (voxels of the crop grid): ``core`` the tumor eroded by one voxel (the tumor if that
is empty), ``ring`` the tumor minus its core, ``near`` one to two voxels outside the tumor,
``far`` three to six voxels outside, ``band`` one voxel either side of the boundary.

Each feature is a soft-tissue quantity in units of 100 HU (or a fraction, or a log size):

- ``contrast``: tumor mean minus far-shell mean (hypo- vs hyperdense).
- ``tumor_sd`` / ``far_sd``: intensity sd inside the tumor and in the far shell.
- ``tumor_hf`` / ``far_hf``: sd of the high-frequency residual (CT minus its 3x3x3 mean) in the
  tumor's core and in the far shell: the scanner's noise texture. ``hf_ratio`` = log(tumor_hf / far_hf): blur and flat fills
  push it down, added noise up.
- ``edge``: mean gradient magnitude on the boundary band, per 100 HU of |contrast| + 10 HU
  (edge sharpness independent of contrast); ``edge_raw`` the gradient itself.
- ``rim``: ring mean minus core mean (rim enhancement).
- ``near_step``: near-shell mean minus far-shell mean: a pasted patch shows up as a step
  outside the tumor.
- ``far_step``: far-shell mean minus the mean 8 to 12 voxels out (median-free, so read with ``far_sd``):
  a pasted box larger than the tumor ends there.
- ``far_grad``: mean gradient magnitude in the far shell over the near shell's (a seam is a
  straight edge in the surroundings).
- ``low_fraction`` / ``high_fraction``: tumor voxels more than 40 HU below / above the far shell.
- ``far_fat`` / ``far_bright``: far-shell voxels below -40 HU (fat, gas) or above 200 HU
  (bone): a tumor outside its organ has fat or bone around it.
- ``core_hf``: as ``tumor_hf`` but over the whole tumor when its core has fewer than 8 voxels (the
  sd of one voxel is 0, which made every tiny tumor look noise-free).
- ``face_step``: the step across the faces of boxes around the tumor: for each distance k = 1..8
  voxels from its bounding box, the median over the box's six faces of (CT just inside minus CT
  two voxels further out), body voxels only; the step of the largest magnitude. A tumor pasted
  with a rectangular patch (an inpainted ROI box, a crop-and-paste generator) carries one step
  on every face; organ edges cross a few faces only, so the median stays near zero for them.
- ``log_voxels``: log of the tumor's voxel count; ``box_fill``: tumor voxels over its
  bounding box (a block fills it); ``surface``: boundary voxels per voxel^(2/3) (compactness).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FEATURE_NAMES: tuple[str, ...] = (
    "contrast", "tumor_sd", "far_sd", "tumor_hf", "far_hf", "hf_ratio", "edge", "edge_raw", "rim",
    "near_step", "far_step", "far_grad", "low_fraction", "high_fraction", "far_fat", "far_bright", "log_voxels",
    "box_fill", "surface", "core_hf", "face_step",
)
N_FEATURES = len(FEATURE_NAMES)
#: the first list (session 5, before ``far_step``): discriminators saved with features but no names have these
FEATURE_NAMES_V1: tuple[str, ...] = tuple(k for k in FEATURE_NAMES[:19] if k != "far_step")
#: body voxels for ``face_step`` (HU): air around the patient carries no seam
BODY_HU = -500.0


def _dilate(m: torch.Tensor, r: int) -> torch.Tensor:
    """Box (Chebyshev) dilation of a binary (B, 1, D, H, W) mask by ``r`` voxels: per axis, a moving
    window count from a cumulative sum (exact for 0/1 masks, and several times faster on a CPU than
    max-pooling)."""
    if r <= 0:
        return m
    out = m
    for ax in (2, 3, 4):
        n = out.shape[ax]
        c = out.cumsum(ax)
        head = list(c.shape)
        head[ax] = r + 1
        tail = [s if i != ax else r for i, s in enumerate(c.shape)]
        c = torch.cat([c.new_zeros(head), c, c.narrow(ax, n - 1, 1).expand(*tail)], ax)
        out = c.narrow(ax, 2 * r + 1, n) - c.narrow(ax, 0, n)  # the count in [i - r, i + r]
    return (out > 0.5).to(m.dtype)


def _erode(m: torch.Tensor, r: int) -> torch.Tensor:
    return 1.0 - _dilate(1.0 - m, r)


def _mean(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted mean over the spatial axes of (B, 1, D, H, W) -> (B,)."""
    return (v * w).sum((1, 2, 3, 4)) / w.sum((1, 2, 3, 4)).clamp_min(1.0)


def _sd(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    mu = _mean(v, w).view(-1, 1, 1, 1, 1)
    return _mean((v - mu) ** 2, w).clamp_min(0).sqrt()


def _grad(v: torch.Tensor) -> torch.Tensor:
    """Central-difference gradient magnitude (per voxel), zero on the crop's faces."""
    g = torch.zeros_like(v)
    for ax in (2, 3, 4):
        d = (v.narrow(ax, 2, v.shape[ax] - 2) - v.narrow(ax, 0, v.shape[ax] - 2)) / 2
        pad = [0, 0] * 3
        pad[2 * (4 - ax)] = pad[2 * (4 - ax) + 1] = 1
        g = g + F.pad(d, pad) ** 2
    return g.sqrt()


def _bbox_fill(m: torch.Tensor) -> torch.Tensor:
    """Tumor voxels over the volume of their bounding box, (B, 1, D, H, W) -> (B,)."""
    out = []
    for mi in m[:, 0] > 0.5:
        idx = mi.nonzero()
        if len(idx) == 0:
            out.append(torch.zeros((), device=m.device))
            continue
        ext = (idx.max(0).values - idx.min(0).values + 1).prod()
        out.append(mi.sum() / ext)
    return torch.stack(out).float()


def _bbox(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per crop, the tumor's bounding box (lo, hi) as (B, 3) voxel indices (inclusive); an empty mask
    gets lo > hi."""
    s = m.shape[-1]
    lo, hi = [], []
    for ax in (2, 3, 4):
        other = tuple(a for a in (2, 3, 4) if a != ax)
        occ = m.amax(dim=other)[:, 0] > 0.5  # (B, S) along this axis
        ar = torch.arange(occ.shape[1], device=m.device)
        lo.append(torch.where(occ, ar, s).amin(1))
        hi.append(torch.where(occ, ar, -1).amax(1))
    return torch.stack(lo, 1), torch.stack(hi, 1)


def face_step(v: torch.Tensor, m: torch.Tensor, ks: range = range(1, 9), gap: int = 2,
              body: float = BODY_HU / 100.0, min_voxels: int = 20) -> torch.Tensor:
    """The ``face_step`` feature (see the module docstring) of (B, 1, S, S, S) CT ``v`` (units of 100 HU)
    and tumor mask ``m`` -> (B,); 0 where no box has ``min_voxels`` usable face voxels."""
    b, s = v.shape[0], v.shape[-1]
    lo, hi = _bbox(m)
    ar = torch.arange(s, device=v.device)
    # per axis: signed distance outside the box (low side > 0 below lo, high side > 0 above hi)
    d_lo = [(lo[:, a:a + 1] - ar) for a in range(3)]  # (B, S)
    d_hi = [(ar - hi[:, a:a + 1]) for a in range(3)]
    cheb = [torch.clamp(torch.maximum(d_lo[a], d_hi[a]), min=0) for a in range(3)]
    view = [(b, s, 1, 1), (b, 1, s, 1), (b, 1, 1, s)]
    vv = v[:, 0]
    inside_body = vv > body
    # CT two voxels further out along each axis, on either side (NaN where that leaves the crop)
    nan = torch.full_like(vv, float("nan"))
    src = torch.where(inside_body, vv, nan)
    out_lo, out_hi = [], []
    for a in range(3):
        ax = a + 1
        lo_sh, hi_sh = nan.clone(), nan.clone()
        lo_sh.narrow(ax, gap, s - gap).copy_(src.narrow(ax, 0, s - gap))  # value at i - gap
        hi_sh.narrow(ax, 0, s - gap).copy_(src.narrow(ax, gap, s - gap))  # value at i + gap
        out_lo.append(lo_sh)
        out_hi.append(hi_sh)
    # each voxel lies on the faces of the box at its Chebyshev distance K from the bounding box: the
    # axis (first of ties) and side where its distance is K; its step is CT here minus CT two voxels out
    dist = [cheb[a].view(view[a]).expand(b, s, s, s) for a in range(3)]
    kk = torch.maximum(torch.maximum(dist[0], dist[1]), dist[2])
    diff = nan.clone()
    for a in range(3):
        on = (dist[a] == kk) & torch.isnan(diff)
        low = (d_lo[a] > 0).view(view[a])
        diff = torch.where(on & low, vv - out_lo[a], torch.where(on & ~low, vv - out_hi[a], diff))
    diff = torch.where(inside_body, diff, nan)
    best = torch.zeros(b, device=v.device, dtype=diff.dtype)
    for k in ks:
        flat = torch.where(kk == k, diff, nan).reshape(b, -1)
        n = (~torch.isnan(flat)).sum(1)
        med = torch.nanmedian(flat, dim=1).values
        med = torch.where(n >= min_voxels, med, torch.zeros_like(med))
        best = torch.where(med.abs() > best.abs(), med, best)
    return torch.nan_to_num(best)


@torch.no_grad()
def crop_features(x: torch.Tensor, hu_min: float = -175.0, hu_max: float = 250.0,
                  names: tuple[str, ...] | list[str] = FEATURE_NAMES) -> torch.Tensor:
    """(B, 2, S, S, S) crops -> (B, len(names)) float32 features in the order of ``names`` (default
    :data:`FEATURE_NAMES`; a saved model asks for the ones it was trained with).

    Channel 0 is the CT scaled from [hu_min, hu_max] to [0, 1], channel 1 the tumor mask.
    A crop with an empty mask gets zeros for the tumor's features (it cannot be judged).
    """
    x = x.float()
    hu = x[:, :1] * (hu_max - hu_min) + hu_min
    v = hu / 100.0
    m = (x[:, 1:2] > 0.5).float()
    d1, d2, d6, d8, d12 = _dilate(m, 1), _dilate(m, 2), _dilate(m, 6), _dilate(m, 8), _dilate(m, 12)
    e1 = _erode(m, 1)
    core = torch.where(e1.sum((1, 2, 3, 4), keepdim=True) > 0, e1, m)
    ring = m - core
    near = d2 - m
    far = d6 - d2
    band = (d1 - e1).clamp(0, 1)
    hf = v - F.avg_pool3d(F.pad(v, [1] * 6, mode="replicate"), 3, stride=1)
    grad = _grad(v)

    t_mean, f_mean = _mean(v, m), _mean(v, far)
    contrast = t_mean - f_mean
    t_hf, f_hf = _sd(hf, core), _sd(hf, far)  # the core: the boundary's step is not texture
    edge_raw = _mean(grad, band)
    f = {
        "contrast": contrast,
        "tumor_sd": _sd(v, m),
        "far_sd": _sd(v, far),
        "tumor_hf": t_hf,
        "far_hf": f_hf,
        "hf_ratio": torch.log((t_hf + 0.01) / (f_hf + 0.01)),
        "edge": edge_raw / (contrast.abs() + 0.1),
        "edge_raw": edge_raw,
        "rim": _mean(v, ring) - _mean(v, core),
        "near_step": _mean(v, near) - f_mean,
        "far_step": f_mean - _mean(v, d12 - d8),
        "far_grad": torch.log((_mean(grad, far) + 0.01) / (_mean(grad, near) + 0.01)),
        "low_fraction": _mean((v < f_mean.view(-1, 1, 1, 1, 1) - 0.4).float(), m),
        "high_fraction": _mean((v > f_mean.view(-1, 1, 1, 1, 1) + 0.4).float(), m),
        "far_fat": _mean((v < -0.4).float(), far),
        "far_bright": _mean((v > 2.0).float(), far),
        "log_voxels": torch.log1p(m.sum((1, 2, 3, 4))),
        "box_fill": _bbox_fill(m),
        "surface": band.sum((1, 2, 3, 4)) / m.sum((1, 2, 3, 4)).clamp_min(1.0) ** (2 / 3),
    }
    if "core_hf" in names:  # the core when it has 8 voxels, else the whole tumor
        f["core_hf"] = _sd(hf, torch.where(e1.sum((1, 2, 3, 4), keepdim=True) >= 8, e1, m))
    if "face_step" in names:
        f["face_step"] = face_step(v, m)
    unknown = [k for k in names if k not in f]
    if unknown:
        raise ValueError(f"unknown crop feature(s) {unknown}; known: {list(FEATURE_NAMES)}")
    out = torch.stack([f[k] for k in names], dim=1)
    empty = m.sum((1, 2, 3, 4)) == 0
    return torch.where(empty.view(-1, 1), torch.zeros_like(out), out)
