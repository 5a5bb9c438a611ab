"""NSD, HD95 and mean surface distance with DeepMind surface-distance semantics: area table, known geometries,
brute force, and an optional cross-check against DeepMind's package (skipped when it is not installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from evaluation.surface import (
    hausdorff_distance_95,
    mean_surface_distance,
    neighbour_codes,
    normalized_surface_dice,
    surface_area_table,
    surface_distances,
    surface_metrics,
)

CORNERS = [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]


def code_of(corners) -> int:
    return sum(1 << (4 * a + 2 * b + c) for a, b, c in corners)


# ----------------------------------------------------------------------------- area table


@pytest.mark.parametrize("s", [(1.0, 1.0, 1.0), (0.7, 0.9, 2.5), (2.0, 0.5, 1.1)])
def test_area_table_elementary_codes(s):
    s0, s1, s2 = s
    t = surface_area_table(s)
    assert t.shape == (256,)
    assert t[0] == 0.0 and t[255] == 0.0
    # one corner: the triangle through three edge midpoints
    corner = math.sqrt((s1 * s2) ** 2 + (s0 * s2) ** 2 + (s0 * s1) ** 2) / 8.0
    for c in CORNERS:
        assert t[code_of([c])] == pytest.approx(corner)
    # half the cube (a face of 4 corners inside): a flat square across the cell
    assert t[code_of([c for c in CORNERS if c[0] == 0])] == pytest.approx(s1 * s2)
    assert t[code_of([c for c in CORNERS if c[2] == 1])] == pytest.approx(s0 * s1)
    # an edge of 2 corners along axis 2: a rectangle cutting the edge off
    assert t[code_of([(0, 0, 0), (0, 0, 1)])] == pytest.approx(s2 * math.hypot(s0, s1) / 2.0)
    # a configuration and its complement are the same surface
    assert np.allclose(t, t[::-1])


def test_area_table_values_known_from_marching_cubes():
    t = surface_area_table((1.0, 1.0, 1.0))
    # three corners of a face: pentagon, largest-area triangulation (1/2 + sqrt(3)/4 + sqrt(3)/8)
    assert t[code_of([(0, 0, 0), (0, 0, 1), (0, 1, 0)])] == pytest.approx(0.5 + math.sqrt(3) / 4 + math.sqrt(3) / 8)
    # two corners on a face diagonal are cut off separately (two triangles)
    assert t[code_of([(0, 0, 0), (0, 1, 1)])] == pytest.approx(2 * math.sqrt(3) / 8)
    # two opposite corners of the cube
    assert t[code_of([(0, 0, 0), (1, 1, 1)])] == pytest.approx(2 * math.sqrt(3) / 8)


def box_area(a: int, b: int, c: int, s) -> float:
    """Marching-cubes surface of an a x b x c voxel box: flat faces, chamfered edges, corner triangles."""
    s0, s1, s2 = s
    faces = 2 * ((b - 1) * (c - 1) * s1 * s2 + (a - 1) * (c - 1) * s0 * s2 + (a - 1) * (b - 1) * s0 * s1)
    edges = 4 * ((a - 1) * s0 * math.hypot(s1, s2) + (b - 1) * s1 * math.hypot(s0, s2)
                 + (c - 1) * s2 * math.hypot(s0, s1)) / 2.0
    corners = 8 * math.sqrt((s1 * s2) ** 2 + (s0 * s2) ** 2 + (s0 * s1) ** 2) / 8.0
    return faces + edges + corners


@pytest.mark.parametrize("s", [(1.0, 1.0, 1.0), (0.8, 1.2, 2.5)])
def test_box_surface_area_matches_geometry(s):
    m = np.zeros((16, 14, 12), bool)
    m[3:10, 2:7, 4:9] = True
    sd = surface_distances(m, m, s)
    assert sd.areas_gt.sum() == pytest.approx(box_area(7, 5, 5, s))
    assert np.all(sd.distances_gt_to_pred == 0.0)
    assert normalized_surface_dice(m, m, s, 0.0) == pytest.approx(1.0)


def test_sphere_surface_area_close_to_4_pi_r2():
    r = 10.0
    g = np.indices((26, 26, 26)).astype(float) - 12.5
    m = (g**2).sum(0) <= r**2
    area = surface_distances(m, m, (1.0, 1.0, 1.0)).areas_gt.sum()
    # facets of a binary mask overestimate a smooth sphere a little (about 8 % here), never underestimate it
    assert 1.0 < area / (4 * math.pi * r**2) < 1.12


# ----------------------------------------------------------------------------- two cubes at a known offset


def shifted_boxes(k: int, shape=(24, 16, 16), size=(8, 6, 7)):
    a, b, c = size
    gt = np.zeros(shape, bool)
    gt[4:4 + a, 5:5 + b, 4:4 + c] = True
    pred = np.roll(gt, k, axis=0)
    return gt, pred


def test_nsd_two_cubes_all_within_tolerance():
    # every surface point has a partner exactly k * s0 away: 2 * 0.8 = 1.6 mm <= 2 mm
    gt, pred = shifted_boxes(2)
    assert normalized_surface_dice(gt, pred, (0.8, 1.0, 1.0), 2.0) == pytest.approx(1.0)
    # and at a tolerance below the shift, strictly less
    assert normalized_surface_dice(gt, pred, (0.8, 1.0, 1.0), 1.5) < 1.0


def test_nsd_two_cubes_only_coincident_surface_within_tolerance():
    # spacing 2.5 mm > 2 mm tolerance: only surface points shared by both boxes count
    s = (2.5, 2.5, 2.5)
    a, b, c, k = 8, 6, 7, 3
    gt, pred = shifted_boxes(k, size=(a, b, c))
    s0, s1, s2 = s
    ring = 2 * (c - 1) * s0 * s2 + 2 * (b - 1) * s0 * s1 + 4 * s0 * math.hypot(s1, s2) / 2.0
    cap_rim = ((c - 1) * s2 * math.hypot(s0, s1) + (b - 1) * s1 * math.hypot(s0, s2)
               + 4 * math.sqrt((s1 * s2) ** 2 + (s0 * s2) ** 2 + (s0 * s1) ** 2) / 8.0)
    shared = (a - k) * ring + cap_rim  # lateral ring over the overlap + the rim of the far cap
    expected = shared / box_area(a, b, c, s)
    assert normalized_surface_dice(gt, pred, s, 2.0) == pytest.approx(expected)
    assert 0.3 < expected < 0.8


def test_nsd_disjoint_cubes_far_apart_is_zero_and_empty_cases():
    gt, _ = shifted_boxes(0)
    far = np.roll(gt, 12, axis=0)
    assert normalized_surface_dice(gt, far, (1.0, 1.0, 1.0), 2.0) == 0.0
    empty = np.zeros_like(gt)
    assert normalized_surface_dice(gt, empty, (1.0, 1.0, 1.0), 2.0) == 0.0
    assert normalized_surface_dice(empty, gt, (1.0, 1.0, 1.0), 2.0) == 0.0
    assert math.isnan(normalized_surface_dice(empty, empty, (1.0, 1.0, 1.0), 2.0))
    sd = surface_distances(gt, empty, (1.0, 1.0, 1.0))
    assert np.all(np.isinf(sd.distances_gt_to_pred)) and sd.areas_pred.size == 0


# ----------------------------------------------------------------------------- brute force


def brute_force_surface(mask: np.ndarray, spacing):
    """Surface points (mm) and areas from explicit loops over every voxel corner."""
    table = surface_area_table(spacing)
    p = np.pad(mask, 1)
    pts, areas = [], []
    for i in range(p.shape[0] - 1):
        for j in range(p.shape[1] - 1):
            for k in range(p.shape[2] - 1):
                code = 0
                for bit, (a, b, c) in enumerate(CORNERS):
                    code |= int(p[i + a, j + b, k + c]) << bit
                if code not in (0, 255):
                    pts.append((i, j, k))
                    areas.append(table[code])
    return np.array(pts, dtype=float) * np.asarray(spacing), np.array(areas)


def brute_force_nsd(gt, pred, spacing, tol):
    pg, ag = brute_force_surface(gt, spacing)
    pp, ap = brute_force_surface(pred, spacing)
    d = cdist(pg, pp)  # all pairs, no distance transform
    dg, dp = d.min(axis=1), d.min(axis=0)
    return (ag[dg <= tol].sum() + ap[dp <= tol].sum()) / (ag.sum() + ap.sum()), dg, dp


def random_blob(rng, shape, n=3):
    m = np.zeros(shape, bool)
    g = np.indices(shape).astype(float)
    for _ in range(n):
        c = rng.uniform(3, np.array(shape) - 3)
        r = rng.uniform(1.5, 4.0, 3)
        m |= (((g - c[:, None, None, None]) / r[:, None, None, None]) ** 2).sum(0) <= 1
    return m


def _random_pair(seed: int, roll: int):
    """(rng, spacing, gt, pred): two random blobs on an anisotropic grid, pred overlapping a shifted gt."""
    rng = np.random.default_rng(seed)
    spacing = tuple(rng.uniform(0.6, 2.5, 3))
    shape = (18, 16, 14)
    gt = random_blob(rng, shape)
    pred = random_blob(rng, shape) | np.roll(gt, roll, axis=int(rng.integers(3)))
    return rng, spacing, gt, pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nsd_matches_brute_force(seed):
    rng, spacing, gt, pred = _random_pair(seed, roll=1)
    pred[:, :, 0] |= rng.random(pred.shape[:2]) < 0.05  # specks touching the volume border
    expected, dg, dp = brute_force_nsd(gt, pred, spacing, 2.0)
    sd = surface_distances(gt, pred, spacing)
    assert np.allclose(np.sort(sd.distances_gt_to_pred), np.sort(dg))
    assert np.allclose(np.sort(sd.distances_pred_to_gt), np.sort(dp))
    assert normalized_surface_dice(gt, pred, spacing, 2.0) == pytest.approx(expected, abs=1e-12)


def test_crop_changes_nothing_and_position_does_not_matter():
    rng = np.random.default_rng(5)
    gt, pred = random_blob(rng, (20, 20, 16)), random_blob(rng, (20, 20, 16))
    s = (0.7, 0.7, 2.0)
    a = surface_distances(gt, pred, s)
    b = surface_distances(gt, pred, s, crop=False)
    for x, y in [(a.distances_gt_to_pred, b.distances_gt_to_pred), (a.areas_pred, b.areas_pred)]:
        assert np.allclose(np.sort(x), np.sort(y))
    big_g, big_p = np.zeros((60, 50, 40), bool), np.zeros((60, 50, 40), bool)
    big_g[30:50, 5:25, 20:36], big_p[30:50, 5:25, 20:36] = gt, pred
    assert normalized_surface_dice(big_g, big_p, s, 2.0) == pytest.approx(normalized_surface_dice(gt, pred, s, 2.0))


def test_neighbour_codes_shape_and_values():
    m = np.zeros((3, 3, 3), bool)
    m[1, 1, 1] = True
    codes = neighbour_codes(m)
    assert codes.shape == (2, 2, 2)
    # the corner at (0, 0, 0) sees the voxel as its (1, 1, 1) neighbour: bit 7
    assert codes[0, 0, 0] == 128 and codes[1, 1, 1] == 1


def test_rejects_mismatched_masks():
    with pytest.raises(ValueError, match="same grid"):
        surface_distances(np.zeros((4, 4, 4), bool), np.zeros((4, 4, 5), bool), (1, 1, 1))


# ----------------------------------------------------------------------------- HD95 and mean surface distance


def test_hd95_and_msd_of_two_thin_slabs_by_hand():
    # one-voxel slabs 3 slices apart along the 2.5 mm axis: each has two surface sheets of equal area
    # (mirror images), at 2 and 3 slices from the other slab's nearest sheet, in both directions
    s = (0.8, 1.2, 2.5)
    gt = np.zeros((16, 14, 14), bool)
    gt[4:12, 3:10, 5] = True
    pred = np.roll(gt, 3, axis=2)
    sd = surface_distances(gt, pred, s)
    assert set(np.round(sd.distances_gt_to_pred, 9)) == {5.0, 7.5}
    assert sd.directed_mean_distances() == pytest.approx((6.25, 6.25))
    assert hausdorff_distance_95(gt, pred, s) == pytest.approx(7.5)  # the far sheet holds 50 % > 5 % of the area
    assert hausdorff_distance_95(gt, pred, s, percent=40.0) == pytest.approx(5.0)
    assert mean_surface_distance(gt, pred, s) == pytest.approx(6.25)


@pytest.mark.parametrize("k", [8, 11])
def test_hd95_and_msd_of_two_boxes_offset_on_an_anisotropic_grid_by_hand(k):
    # a x b x c boxes k > a voxels apart along axis 0 (0.8 mm): every surface point of one box is
    # (k - m) * s0 from the other box's near face, m = its lattice index along axis 0 (0..a);
    # the two caps (m = 0, a) carry equal areas, each interior slice carries one ring of the box's side
    s0, s1, s2 = s = (0.8, 1.2, 2.5)
    a, b, c = 6, 5, 4
    gt = np.zeros((8 + a + k, 12, 10), bool)
    gt[2:2 + a, 3:3 + b, 2:2 + c] = True
    pred = np.roll(gt, k, axis=0)
    ring = 2 * (c - 1) * s0 * s2 + 2 * (b - 1) * s0 * s1 + 2 * s0 * math.hypot(s1, s2)
    total = box_area(a, b, c, s)
    cap = (total - (a - 1) * ring) / 2.0
    blocks = [((k - m) * s0, cap if m in (0, a) else ring) for m in range(a, -1, -1)]  # ascending distance
    assert sum(w for _, w in blocks) == pytest.approx(total)
    mean = sum(d * w for d, w in blocks) / total
    cum, hd95 = 0.0, None
    for d, w in blocks:
        cum += w
        if cum / total >= 0.95 - 1e-12:
            hd95 = d
            break
    sm = surface_metrics(gt, pred, s, 2.0)
    assert sm.nsd == pytest.approx(sum(w for d, w in blocks if d <= 2.0) / total)  # same distances, same areas
    assert sm.msd == pytest.approx(mean)
    assert sm.hd95 == pytest.approx(hd95)
    assert hd95 == pytest.approx(k * s0)  # a cap holds more than 5 % of the area: the far cap decides
    sd = surface_distances(gt, pred, s)
    assert sd.robust_hausdorff(100.0) == pytest.approx(k * s0)
    assert sd.robust_hausdorff(0.0) == pytest.approx((k - a) * s0)


def test_hd95_and_msd_empty_masks():
    gt, _ = shifted_boxes(0)
    empty = np.zeros_like(gt)
    s = (0.8, 1.0, 2.0)
    both = surface_metrics(empty, empty, s)
    assert math.isnan(both.nsd) and math.isnan(both.hd95) and math.isnan(both.msd)  # not applicable
    for g, p in ((gt, empty), (empty, gt)):  # exactly one empty: no surface to reach
        one = surface_metrics(g, p, s)
        assert one.nsd == 0.0 and one.hd95 == math.inf and one.msd == math.inf
    assert surface_metrics(gt, gt, s) == surface_metrics(gt, gt.copy(), s)
    assert surface_metrics(gt, gt, s).hd95 == 0.0 and surface_metrics(gt, gt, s).msd == 0.0
    with pytest.raises(ValueError, match="percent"):
        surface_distances(gt, gt, s).robust_hausdorff(120.0)


def weighted_percentile_by_loop(d: np.ndarray, w: np.ndarray, percent: float) -> float:
    order = sorted(range(len(d)), key=lambda i: d[i])
    total, cum = float(w.sum()), 0.0
    for i in order:
        cum += w[i]
        if cum / total >= percent / 100.0:
            return float(d[i])
    return float(d[order[-1]])


@pytest.mark.parametrize("seed", [0, 1])
def test_hd95_and_msd_match_brute_force(seed):
    rng, spacing, gt, pred = _random_pair(seed, roll=2)
    pg, ag = brute_force_surface(gt, spacing)
    pp, ap = brute_force_surface(pred, spacing)
    dist = cdist(pg, pp)
    dg, dp = dist.min(axis=1), dist.min(axis=0)
    hd = max(weighted_percentile_by_loop(dg, ag, 95.0), weighted_percentile_by_loop(dp, ap, 95.0))
    msd = ((dg * ag).sum() / ag.sum() + (dp * ap).sum() / ap.sum()) / 2.0
    sm = surface_metrics(gt, pred, spacing)
    assert sm.hd95 == pytest.approx(hd, abs=1e-9)
    assert sm.msd == pytest.approx(msd, abs=1e-9)
    assert surface_distances(gt, pred, spacing).robust_hausdorff(100.0) == pytest.approx(max(dg.max(), dp.max()))


# ----------------------------------------------------------------------------- DeepMind's package, when installed


def test_agrees_with_deepmind_surface_distance():
    sdp = pytest.importorskip("surface_distance")
    from surface_distance import lookup_tables

    rev = np.array([int(format(c, "08b")[::-1], 2) for c in range(256)])  # their kernel numbers corners backwards
    rng = np.random.default_rng(3)
    for _ in range(3):
        s = tuple(rng.uniform(0.5, 3.0, 3))
        assert np.allclose(surface_area_table(s), lookup_tables.create_table_neighbour_code_to_surface_area(s)[rev])
        gt = ndimage.binary_opening(rng.random((24, 22, 20)) < 0.55)
        pred = ndimage.binary_opening(rng.random((24, 22, 20)) < 0.55)
        ref = sdp.compute_surface_dice_at_tolerance(sdp.compute_surface_distances(gt, pred, s), 2.0)
        assert normalized_surface_dice(gt, pred, s, 2.0) == pytest.approx(ref, abs=1e-6)


def test_hd95_and_msd_agree_with_deepmind_surface_distance():
    # DeepMind's release 0.1 writes np.Inf (gone in NumPy 2) for an empty mask: non-empty masks only
    sdp = pytest.importorskip("surface_distance")

    rng = np.random.default_rng(4)
    cases = [shifted_boxes(3), shifted_boxes(14, shape=(30, 16, 16))]
    for _ in range(3):
        cases.append((ndimage.binary_opening(rng.random((24, 22, 20)) < 0.55),
                      ndimage.binary_opening(rng.random((24, 22, 20)) < 0.55)))
    for gt, pred in cases:
        s = tuple(rng.uniform(0.5, 3.0, 3))
        ref = sdp.compute_surface_distances(gt, pred, s)
        sm = surface_metrics(gt, pred, s)
        assert sm.hd95 == pytest.approx(sdp.compute_robust_hausdorff(ref, 95), abs=1e-6)
        assert sm.msd == pytest.approx(float(np.mean(sdp.compute_average_surface_distance(ref))), abs=1e-6)
        assert surface_distances(gt, pred, s).directed_mean_distances() == pytest.approx(
            sdp.compute_average_surface_distance(ref), abs=1e-6)
