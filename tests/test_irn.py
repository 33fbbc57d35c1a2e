"""IRN's relation network and random walk: pairs, pair labels, affinities and loss against hand-computed values,
the walk against the dense matrix-power reference and on a toy scene, and a boundary network that learns."""
import math

import numpy as np
import pytest
import torch

from textwsss.irn import (BoundaryNet, line_path, pair_index, pair_labels, propagate, propagate_dense,
                          relation_loss, search_offsets, seeds_at_stride, walk_labels)
from textwsss.irn.random_walk import walk_scores


def _pairs_as_sets(index, labels):
    pairs = [frozenset(p) for p in zip(index.src.tolist(), index.dst.tolist())]
    return {name: {p for p, m in zip(pairs, getattr(labels, name).tolist()) if m} for name in ("bg_pos", "fg_pos", "neg")}


@pytest.mark.parametrize("h, w, r", [(6, 7, 3), (3, 2, 5), (1, 5, 5)])
def test_pairs_are_every_in_grid_pair_within_the_radius_once(h, w, r):
    index = pair_index(h, w, r)
    # plain reference: all unordered pixel pairs closer than r
    expected = {frozenset((y1 * w + x1, y2 * w + x2)) for y1 in range(h) for x1 in range(w) for y2 in range(h)
                for x2 in range(w) if 0 < (y1 - y2) ** 2 + (x1 - x2) ** 2 < r * r}
    got = [frozenset(p) for p in zip(index.src.tolist(), index.dst.tolist())]
    assert len(got) == len(set(got)) == index.n_pairs
    assert set(got) == expected
    assert len(search_offsets(10)) == (sum(1 for y in range(-9, 10) for x in range(-9, 10) if 0 < x * x + y * y < 100)
                                       // 2)


def test_line_path_hand_computed():
    # the diagonal keeps the pixels within one pixel of the line, not its whole bounding box
    assert sorted(map(tuple, line_path(2, 2).tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2)]
    assert line_path(0, 3).tolist() == [[0, 0], [0, 1], [0, 2], [0, 3]]
    path = line_path(2, -3)
    assert path[0].tolist() == [0, 0] and path[-1].tolist() == [2, -3]


def test_pair_labels_hand_computed():
    seeds = np.array([[0, 0, 1],
                      [255, 1, 2]])
    # flat pixels: 0 1 2 / 3 4 5; radius 2 relates the 8-neighbours
    index = pair_index(2, 3, 2)
    sets = _pairs_as_sets(index, pair_labels(seeds, index, num_labels=3))
    f = frozenset
    assert sets["bg_pos"] == {f((0, 1))}
    assert sets["fg_pos"] == {f((2, 4))}
    assert sets["neg"] == {f((1, 2)), f((4, 5)), f((1, 4)), f((2, 5)), f((0, 4)), f((1, 5))}
    labelled = set().union(*sets.values())
    all_pairs = {f(p) for p in zip(index.src.tolist(), index.dst.tolist())}
    assert all_pairs - labelled == {f((3, 4)), f((0, 3)), f((1, 3))}  # the pairs touching the ignored pixel


def test_pair_labels_reject_bad_seeds():
    index = pair_index(2, 3, 2)
    with pytest.raises(ValueError, match="labels 0..2"):
        pair_labels(np.array([[0, 0, 7], [0, 1, 2]]), index, num_labels=3)
    with pytest.raises(ValueError, match="expected shape"):
        pair_labels(np.zeros((3, 3), int), index)


def test_seeds_at_stride_take_every_fourth_pixel():
    seeds = np.arange(10 * 9).reshape(10, 9) % 7
    reduced = seeds_at_stride(seeds, 4)
    assert reduced.shape == (3, 3)
    assert reduced[2, 1] == seeds[8, 4]


def test_affinity_across_a_boundary_hand_computed():
    index = pair_index(1, 5, 5)
    boundary = torch.tensor([[0.1, 0.2, 0.9, 0.3, 0.0]])
    aff = dict(zip(zip(index.src.tolist(), index.dst.tolist()), index.affinity(boundary).tolist()))
    assert aff[(0, 4)] == pytest.approx(1 - 0.9)  # across the boundary pixel
    assert aff[(0, 1)] == pytest.approx(1 - 0.2)  # both ends count
    assert aff[(3, 4)] == pytest.approx(1 - 0.3)
    # the diagonal (0,0)->(2,2) of a 3x3 map passes by (0,2) and (2,0) without touching them
    boundary = torch.tensor([[0.0, 0.1, 0.9],
                             [0.0, 0.2, 0.0],
                             [0.9, 0.0, 0.0]])
    index = pair_index(3, 3, 5)
    aff = dict(zip(zip(index.src.tolist(), index.dst.tolist()), index.affinity(boundary[None])[0].tolist()))
    assert aff[(0, 8)] == pytest.approx(0.8)
    boundary[1, 2] = 0.7
    aff = dict(zip(zip(index.src.tolist(), index.dst.tolist()), index.affinity(boundary)[:].tolist()))
    assert aff[(0, 8)] == pytest.approx(0.3)
    assert aff[(2, 6)] == pytest.approx(0.1)  # the other diagonal: its two ends are boundaries


def test_loss_hand_computed():
    aff = torch.tensor([[0.9, 0.5, 0.2, 0.8]])
    bg, fg, neg = (torch.tensor([m]) for m in ([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]))
    losses = relation_loss(aff, bg, fg, neg)
    bg_term = -math.log(0.9 + 1e-5) / (1 + 1e-5)
    fg_term = -math.log(0.5 + 1e-5) / (1 + 1e-5)
    neg_term = (-math.log(1 + 1e-5 - 0.2) - math.log(1 + 1e-5 - 0.8)) / (2 + 1e-5)
    assert losses["bg_pos"].item() == pytest.approx(bg_term, rel=1e-6)
    assert losses["fg_pos"].item() == pytest.approx(fg_term, rel=1e-6)
    assert losses["neg"].item() == pytest.approx(neg_term, rel=1e-6)
    # (pos + neg) / 2 with pos = bg/2 + fg/2: about (0.0527 + 0.3466 + 0.9163) / 2
    assert losses["total"].item() == pytest.approx((bg_term / 2 + fg_term / 2 + neg_term) / 2, rel=1e-6)
    assert losses["total"].item() == pytest.approx(0.6578, abs=1e-4)
    empty = relation_loss(aff, torch.zeros_like(bg), fg, neg)
    assert empty["bg_pos"].item() == 0.0  # no pairs of a kind: 0, not NaN


def _dense_by_hand(cams, boundary, beta, exp_times, radius):
    """An independent reference: A from plain loops over pixel pairs and their line paths, numpy matrix powers."""
    h, w = boundary.shape
    b = boundary.numpy().astype(np.float64)
    n = h * w
    a = np.eye(n)
    for y1 in range(h):
        for x1 in range(w):
            for y2 in range(h):
                for x2 in range(w):
                    dy, dx = y2 - y1, x2 - x1
                    if not 0 < dy * dy + dx * dx < radius * radius:
                        continue
                    on_path = [b[y1 + py, x1 + px] for py in range(min(0, dy), max(0, dy) + 1)
                               for px in range(min(0, dx), max(0, dx) + 1) if (dy * px - dx * py) ** 2 < dy * dy + dx * dx]
                    a[y1 * w + x1, y2 * w + x2] = (1 - max(on_path)) ** beta
    t = a / a.sum(0, keepdims=True)
    x = (cams.numpy() * (1 - b)).reshape(len(cams), -1)
    return (x @ np.linalg.matrix_power(t, 2 ** exp_times)).reshape(cams.shape)


def test_fast_walk_equals_dense_reference():
    g = torch.Generator().manual_seed(0)
    boundary = torch.rand(7, 9, generator=g) ** 3
    cams = torch.rand(2, 7, 9, generator=g)
    fast = propagate(cams, boundary, beta=10, exp_times=5, radius=5)
    dense = propagate_dense(cams, boundary, beta=10, exp_times=5, radius=5)
    by_hand = _dense_by_hand(cams, boundary, 10, 5, 5)
    np.testing.assert_allclose(dense.numpy(), by_hand, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fast.numpy(), by_hand, rtol=1e-9, atol=1e-12)
    labels = walk_labels(cams, [3, 7], boundary, (26, 33), beta=10, exp_times=5, bg_threshold=0.3)
    dense_labels = walk_labels(cams, [3, 7], boundary, (26, 33), beta=10, exp_times=5, bg_threshold=0.3, dense=True)
    np.testing.assert_array_equal(labels, dense_labels)
    assert set(np.unique(labels)) <= {0, 3, 7} and len(np.unique(labels)) >= 2


def test_walk_stays_inside_a_strong_boundary_and_fills_weak_cams():
    h = w = 16
    boundary = torch.zeros(h, w)
    boundary[3, 3:12] = boundary[11, 3:12] = boundary[3:12, 3] = boundary[3:12, 11] = 1.0  # a closed ring
    cams = torch.zeros(1, h, w)
    cams[0, 4:11, 4:7] = 1.0  # confident on the left part of the object
    cams[0, 4:11, 7:11] = 0.1  # weak on the rest: background for a threshold of 0.25
    scores = walk_scores(cams, boundary, (4 * h, 4 * w), bg_threshold=0.25, beta=10, exp_times=8)
    labels = walk_labels(cams, [5], boundary, (4 * h, 4 * w), bg_threshold=0.25, beta=10, exp_times=8)
    inside = np.zeros((4 * h, 4 * w), bool)
    inside[4 * 4:4 * 11, 4 * 4:4 * 11] = True
    assert (labels[inside] == 5).all()  # the weak part is filled
    ring = np.zeros_like(inside)
    ring[4 * 2:4 * 13, 4 * 2:4 * 13] = True
    assert (labels[~ring] == 0).all()  # nothing leaks out
    assert scores[1].numpy()[~ring].max() < 1e-6
    # without the ring the same CAMs spread outside
    open_labels = walk_labels(cams, [5], torch.zeros(h, w), (4 * h, 4 * w), bg_threshold=0.25, beta=10, exp_times=8)
    assert (open_labels[~ring] == 5).any()


def test_walk_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="boundary map's size"):
        propagate(torch.zeros(1, 4, 5), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="keys"):
        walk_labels(torch.zeros(2, 4, 4), [1], torch.zeros(4, 4), (16, 16))
    with pytest.raises(ValueError, match="beta"):
        propagate(torch.zeros(1, 4, 4), torch.zeros(4, 4), beta=0)


def _scene(rng, size=48):
    """Two flat colours split by a vertical or horizontal line at a random place (seeds: class 1 | background)."""
    pos = int(rng.integers(12, size - 12)) // 4 * 4
    c1 = rng.random(3)
    c2 = rng.random(3)
    while np.abs(c1 - c2).sum() < 0.6:
        c2 = rng.random(3)
    image = np.empty((size, size, 3))
    seeds = np.zeros((size, size), np.uint8)
    image[:, :pos], image[:, pos:] = c1, c2
    seeds[:, :pos] = 1
    if rng.random() < 0.5:
        image, seeds = image.transpose(1, 0, 2), seeds.T
    image = np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1)
    return torch.from_numpy(image.transpose(2, 0, 1).copy()).float(), np.ascontiguousarray(seeds)


def _border_mask(seeds4):
    edge = np.zeros(seeds4.shape, bool)
    for axis in (0, 1):
        change = np.diff(seeds4.astype(int), axis=axis) != 0
        lo = [slice(None)] * 2
        hi = [slice(None)] * 2
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        edge[tuple(lo)] |= change
        edge[tuple(hi)] |= change
    return edge


def test_boundary_network_learns_the_border_of_two_regions():
    from textwsss.irn.step import RelationSamples, irn_step
    from textwsss.models.backbones import build_backbone
    from textwsss.training.loop import TrainConfig, fit

    rng = np.random.default_rng(0)
    scenes = [_scene(rng) for _ in range(8)]
    torch.manual_seed(0)
    net = BoundaryNet(build_backbone("efficientnet_lite0", "imagenet", 16, dilate=False))
    frozen = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    data = RelationSamples([s[0] for s in scenes], [s[1] for s in scenes], radius=5)
    fit(net, data, irn_step(5), net.param_groups(), TrainConfig(epochs=8, batch_size=4, lr=0.1, amp=False, seed=0))
    image, seeds = _scene(np.random.default_rng(5))
    net.eval()
    boundary = net.boundary(image[None])[0].numpy()
    border = _border_mask(seeds_at_stride(seeds, 4))
    assert boundary.shape == border.shape == (12, 12)
    assert boundary[border].mean() > 0.5
    assert boundary[~border].mean() < 0.15
    # the backbone stayed frozen: weights and BatchNorm statistics
    assert all(torch.equal(frozen[k], v) for k, v in net.backbone.state_dict().items())


def test_boundary_network_levels_and_resnet_geometry():
    from textwsss.models.backbones import build_backbone

    net = BoundaryNet(build_backbone("resnet50", "none", 16, dilate=False))
    assert len(net.reduce) == 5 and net.fuse.in_channels == 160  # IRN's five 32-channel levels
    logits = net(torch.rand(1, 3, 75, 50))
    assert logits.shape == (1, 1, 19, 13)
    trained = {id(p) for g in net.param_groups() for p in g["params"]}
    assert not any(id(p) in trained for p in net.backbone.parameters())
