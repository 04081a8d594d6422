"""BFS-Net building blocks: centre maps (eq. 1), L_BF (eq. 4/5), peak response maps, peak
merging, instance assignment, and the bad inputs each named with the sample and the fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fewlabel.blocks import block_grid
from fewlabel.errors import ConfigError, InputDataError
from fewlabel.segmentation.bfs.centres import centre_map, centre_map_block, check_centres
from fewlabel.segmentation.bfs.instances import assign_instances, merge_peaks
from fewlabel.segmentation.bfs.prm import (
    Response,
    assign_pseudo_labels,
    click_f1,
    excitation_backprop,
    image_contrast,
    peak_response_maps,
    strongest_response,
    tune_threshold,
)
from fewlabel.segmentation.bfs.refine import bf_loss
from fewlabel.segmentation.bfs.s1 import s1_loss, s1_peaks


# --------------------------------------------------------------------------- centre maps
def test_centre_map_zero_on_voronoi_border_and_one_at_centres():
    shape, voxel = (5, 20, 30), (1.0, 1.0, 1.0)
    points = np.array([[2, 10, 10], [2, 10, 19]], dtype=float)  # bisector at x = 14.5
    p = centre_map(points, shape, voxel, k=2.0, d_m=6.0)
    assert p[2, 10, 10] == pytest.approx(1.0) and p[2, 10, 19] == pytest.approx(1.0)
    assert np.all(p[:, :, 14] == 0) and np.all(p[:, :, 15] == 0)  # the band between the cells
    assert p[2, 10, 13] == pytest.approx(np.exp(-2.0 * 3 / 6.0), rel=1e-5)
    assert p[2, 10, 3] == 0  # D = 7 µm > d_m
    assert p.max() <= 1 and p.min() >= 0


def test_centre_map_distance_is_in_micrometres():
    shape, voxel = (9, 9, 9), (2.0, 0.5, 0.5)
    points = np.array([[4, 4, 4], [4, 4, 8]], dtype=float)
    p = centre_map(points, shape, voxel, k=1.0, d_m=2.5)
    # one z step = 2 µm, one x step = 0.5 µm: same voxel offset, different value
    assert p[5, 4, 4] == pytest.approx(np.exp(-2.0 / 2.5), rel=1e-5)
    assert p[4, 4, 3] == pytest.approx(np.exp(-0.5 / 2.5), rel=1e-5)
    assert p[6, 4, 4] == 0  # 4 µm along z > d_m


def test_centre_map_chunked_equals_whole():
    rng = np.random.default_rng(0)
    shape, voxel = (10, 33, 27), (1.5, 0.5, 0.5)
    points = rng.uniform([0, 0, 0], np.array(shape) - 1, size=(7, 3))
    whole = centre_map(points, shape, voxel, k=2.0, d_m=3.0)
    out = np.zeros(shape, np.float32)
    for block in block_grid(shape, (4, 8, 16)):
        out[block] = centre_map_block(block, points, shape, voxel, k=2.0, d_m=3.0)
    np.testing.assert_array_equal(out, whole)


@pytest.mark.parametrize(
    ("points", "d_m", "error", "words"),
    [
        ([[2, 5, 5]], 3.0, InputDataError, ("at least two", "click")),
        ([[2, 5, 5], [2, 5, 40]], 3.0, InputDataError, ("outside", "0-based")),
        ([[2, 5, 5], [2, 5, 9]], 0.4, ConfigError, ("d_m", "smaller than a voxel")),
    ],
)
def test_centre_map_bad_inputs_name_sample_and_fix(points, d_m, error, words):
    with pytest.raises(error) as info:
        check_centres(np.array(points, float), (5, 10, 10), (1.0, 0.5, 0.5), d_m, sample="emb3")
    text = str(info.value)
    assert "emb3" in text and all(w in text for w in words)
    assert info.value.fix


# --------------------------------------------------------------------------- S1
def test_s1_loss_focal_term_only_near_centres():
    target = torch.zeros(1, 1, 4, 8, 8)
    logits = torch.zeros_like(target)
    plain = s1_loss(logits, target, focal_weight=5.0)
    target[0, 0, 2, 4, 4] = 1.0
    with_centre = s1_loss(logits, target, focal_weight=5.0)
    without_focal = s1_loss(logits, target, focal_weight=0.0)
    assert plain == pytest.approx(float(np.log(2)), rel=1e-5)
    assert with_centre > without_focal


def test_s1_without_peak_is_a_clear_error():
    with pytest.raises(InputDataError) as info:
        s1_peaks(
            np.full((4, 8, 8), 0.1, np.float32),
            (1, 1, 1),
            threshold=0.3,
            min_distance_um=1.0,
            sample="emb7",
        )
    text = str(info.value)
    assert "emb7" in text and "no centre" in text and "peak_threshold" in text


# --------------------------------------------------------------------------- L_BF
def _ball(n: int, radius: float, shift: int = 0) -> np.ndarray:
    z, y, x = np.mgrid[:n, :n, :n] - n / 2
    return (np.sqrt(z * z + y * y + (x - shift) ** 2) < radius).astype(np.float32)


@pytest.mark.parametrize("guide", ["log", "gradient"])
def test_bf_loss_prefers_mask_edge_on_image_edge(guide):
    n = 36
    z, y, x = np.mgrid[:n, :n, :n] - n / 2
    r = np.sqrt(z * z + y * y + x * x)
    # label-free: a thin membrane (LoG ridge); fluorescence: a bright ball (gradient ridge)
    image = np.exp(-0.5 * (r - 9) ** 2) if guide == "log" else (r < 9).astype(float)
    img = torch.tensor(image, dtype=torch.float32)[None, None]
    aligned = bf_loss(torch.tensor(_ball(n, 9))[None, None], img, guide=guide)
    shifted = bf_loss(torch.tensor(_ball(n, 9, shift=4))[None, None], img, guide=guide)
    assert aligned < shifted


def test_bf_loss_is_differentiable():
    seg = torch.rand(1, 1, 6, 16, 16, requires_grad=True)
    img = torch.rand(1, 1, 6, 16, 16)
    bf_loss(seg, img, voxel_size=(2.0, 1.0, 1.0)).backward()
    assert seg.grad is not None and torch.isfinite(seg.grad).all() and seg.grad.abs().sum() > 0


# --------------------------------------------------------------------------- PRM
class _Local(torch.nn.Module):
    """Output = 3x3x3 box sum of the input (+ BatchNorm, which must stay in eval mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 3, padding=1, bias=False)
        torch.nn.init.constant_(self.conv.weight, 1.0)
        self.norm = torch.nn.BatchNorm3d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


def test_peak_response_maps_one_map_per_peak_in_bounded_crops():
    image = np.zeros((10, 40, 40), np.float32)
    peaks = np.array([[5, 5, 5], [5, 30, 30], [2, 20, 10]])
    net = _Local()
    net.train()  # PRM must switch it to eval itself
    maps = list(
        peak_response_maps(net, image, peaks, crop=(6, 16, 16), batch_size=2, backprop="gradient")
    )
    assert [m.peak for m in maps] == [0, 1, 2]
    assert not net.training
    for m, p in zip(maps, peaks, strict=True):
        assert tuple(s.stop - s.start for s in m.window) == (6, 16, 16)
        assert m.values.max() == pytest.approx(1.0)
        support = np.argwhere(m.values > 0) + [s.start for s in m.window]
        assert np.all(np.abs(support - p) <= 1)  # the 3x3x3 receptive field of its peak only
    labels, best = assign_pseudo_labels(maps, image.shape, 0.5)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    assert labels[5, 30, 30] == 2 and best.max() == pytest.approx(1.0)


def test_threshold_tuned_on_clicks_is_the_middle_of_the_best_plateau():
    image = np.zeros((8, 24, 24), np.float32)
    peaks = np.array([[4, 6, 6], [4, 17, 17]])
    maps = list(peak_response_maps(_Local(), image, peaks, crop=(8, 12, 12), backprop="gradient"))
    maps[1].values *= 0.6  # a weaker response: its instance vanishes above 0.6
    clicks = peaks.astype(float)
    labels, best = strongest_response(maps, image.shape)
    t, rows = tune_threshold(labels, best, clicks, (0.1, 0.3, 0.5, 0.7))
    assert [r["f1"] for r in rows][:3] == [1.0, 1.0, 1.0] and rows[3]["f1"] < 1.0
    assert t == 0.3
    labels, _ = assign_pseudo_labels(maps, image.shape, t)
    assert click_f1(labels, clicks[:1])["fp"] == 1  # an instance without a click


def test_excitation_backprop_of_one_convolution_shares_the_peak_by_positive_contribution():
    """PRM's rule on one conv: R(i) = a_i W+(p - i) / sum_j a_j W+(p - j), a = x - min(x)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 1, 3, padding=1, bias=True)
    weight = conv.weight.detach().numpy()[0, 0]
    assert (weight < 0).any() and (weight > 0).any()
    image = np.random.default_rng(0).random((6, 9, 9)).astype(np.float32)
    peak = np.array([[3, 4, 4]])
    (m,) = peak_response_maps(conv, image, peak, crop=(6, 9, 9), smooth_um=0.0)
    a = image - image.min()
    expected = np.zeros_like(a)
    expected[2:5, 3:6, 3:6] = a[2:5, 3:6, 3:6] * np.clip(weight, 0, None)
    expected /= expected.sum()  # the winning probabilities of the peak's inputs sum to 1
    np.testing.assert_allclose(m.values, expected / expected.max(), rtol=1e-4, atol=1e-6)
    (g,) = peak_response_maps(conv, image, peak, crop=(6, 9, 9), backprop="gradient")
    assert not np.allclose(g.values, m.values)  # the plain gradient is another map


def test_excitation_backprop_keeps_the_forward_values_and_restores_the_layers():
    from fewlabel.models.unet import UNet

    torch.manual_seed(0)
    net = UNet(dims=3, in_channels=1, out_channels=1, base_channels=4, depth=2).eval()
    x = torch.rand(1, 1, 8, 16, 16)
    with torch.no_grad():
        plain = net(x)
        with excitation_backprop(net):
            patched = net(x)
    torch.testing.assert_close(plain, patched)
    assert not any("forward" in vars(m) for m in net.modules())
    (m,) = peak_response_maps(net, x[0, 0].numpy(), np.array([[4, 8, 8]]), crop=(8, 16, 16))
    assert m.values.min() >= 0 and m.values.max() == pytest.approx(1.0)
    assert (m.values > 0).sum() > 27  # spread beyond the peak's neighbourhood


def test_image_contrast_is_otsus_between_class_variance_per_threshold():
    rng = np.random.default_rng(1)
    best = rng.random((6, 10, 10)).astype(np.float32)
    image = rng.random((6, 10, 10)).astype(np.float32)
    grid = (0.5, 0.1, 0.9)  # any order
    got = image_contrast(best, image, grid, slab=4)  # two z-slabs
    for t, value in zip(grid, got, strict=True):
        fg = best > t
        w1 = fg.mean()
        want = (1 - w1) * w1 * (image[fg].mean(dtype=float) - image[~fg].mean(dtype=float)) ** 2
        assert value == pytest.approx(want, rel=1e-6)


def test_contrast_rule_sizes_the_masks_by_the_image_within_the_click_plateau():
    """Two blobs of radius 4 in the image; responses fall off slowly beyond them: every
    threshold keeps one instance per click, the image picks the one whose masks fit the blobs."""
    shape = (12, 40, 40)
    clicks = np.array([[6.0, 10.0, 10.0], [6.0, 28.0, 28.0]])
    zz, yy, xx = np.indices(shape)
    dist = [np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) for c in clicks]
    image = ((dist[0] < 4) | (dist[1] < 4)).astype(np.float32)
    responses = [
        Response(peak=i, window=(slice(0, 12), slice(0, 40), slice(0, 40)), values=np.exp(-d / 4))
        for i, d in enumerate(dist)
    ]
    labels, best = strongest_response(responses, shape)
    grid = tuple(np.exp(-np.arange(1, 12) / 4))  # masks of radius 1..11
    t, rows = tune_threshold(labels, best, clicks, grid, image=image)
    assert all(r["f1"] == 1.0 for r in rows)
    assert t == pytest.approx(np.exp(-4 / 4))  # radius 4: the blobs
    t_median, _ = tune_threshold(labels, best, clicks, grid)
    assert t_median == pytest.approx(np.exp(-6 / 4))  # the plateau's middle, image-blind


def _old_assignment(responses, shape, threshold):
    """The previous implementation: every map pasted into a volume-sized stack, then argmax."""
    stack = np.zeros((len(responses), *shape), np.float32)
    for r in responses:
        stack[r.peak][r.window] = r.values
    best = stack.max(axis=0)
    labels = (stack.argmax(axis=0) + 1).astype(np.uint32)
    labels[best <= 0] = 0  # no map covers the voxel
    labels[best <= threshold] = 0
    return labels, best


def test_streamed_assignment_matches_the_volume_sized_one():
    rng = np.random.default_rng(3)
    shape = (10, 30, 30)
    responses = []
    for i in range(12):
        start = rng.integers(0, [5, 18, 18])
        window = tuple(slice(int(a), int(a) + n) for a, n in zip(start, (5, 12, 12), strict=True))
        values = rng.random((5, 12, 12)).astype(np.float32)
        values[values < 0.3] = 0.0
        responses.append(Response(peak=i, window=window, values=values))
    for t in (0.0, 0.25, 0.6):
        labels, best = assign_pseudo_labels(iter(responses), shape, t)  # a generator: one pass
        ref_labels, ref_best = _old_assignment(responses, shape, t)
        np.testing.assert_array_equal(best, ref_best)
        np.testing.assert_array_equal(labels, ref_labels)


# --------------------------------------------------------------------------- instances
def test_merge_peaks_score_weighted_in_micrometres():
    table = pd.DataFrame(
        {
            "z": [2.0, 3.0, 2.0],
            "y": [10.0, 10.0, 30.0],
            "x": [10.0, 10.0, 10.0],
            "score": [0.9, 0.3, 0.8],
        }
    )
    # z voxels are 2 µm: the first two peaks are 2 µm apart
    merged = merge_peaks(table, 2.5, (2.0, 0.5, 0.5))
    assert len(merged) == 2
    first = merged.iloc[0]
    assert first["z"] == pytest.approx((2 * 0.9 + 3 * 0.3) / 1.2)
    assert first["score"] == pytest.approx(0.9) and first["n_merged"] == 2
    assert len(merge_peaks(table, 1.5, (2.0, 0.5, 0.5))) == 3


def test_assign_instances_splits_touching_mask_and_is_chunk_safe():
    shape = (6, 20, 40)
    mask = np.zeros(shape, np.float32)
    mask[1:5, 5:15, 5:35] = 0.9  # one blob holding two cells
    centres = np.array([[3, 10, 12], [3, 10, 28]], float)
    whole = np.zeros(shape, np.uint32)
    n = assign_instances(
        mask,
        centres,
        whole,
        voxel_size=(1, 1, 1),
        mask_threshold=0.5,
        merge_distance_um=2.0,
        halo=(6, 20, 40),
    )
    assert n == 2 and whole[3, 10, 12] != whole[3, 10, 28]
    assert whole[3, 10, 19] == whole[3, 10, 12] and whole[3, 10, 21] == whole[3, 10, 28]

    class Chunked(np.ndarray):
        chunks = (3, 10, 20)

    blocked = np.zeros(shape, np.uint32).view(Chunked)
    assign_instances(
        mask,
        centres,
        blocked,
        voxel_size=(1, 1, 1),
        mask_threshold=0.5,
        merge_distance_um=2.0,
        halo=(6, 20, 30),
    )
    np.testing.assert_array_equal(np.asarray(blocked), whole)
