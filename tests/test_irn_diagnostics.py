"""The random-walk study's measuring pieces (irn/diagnostics.py) and the walk at several lengths at once, against
hand-computed values and the dense reference."""
import numpy as np
import pytest
import torch

from textwsss.irn.diagnostics import BoundaryScore, mask_boundary, pair_agreement
from textwsss.irn.pairs import pair_index
from textwsss.irn.random_walk import propagate_dense, propagate_stages, walked_maps


def test_mask_boundary_marks_label_changes_and_the_void_outline_per_cell():
    mask = np.zeros((8, 8), np.uint8)
    mask[:, 4:] = 1  # the change lies between pixel columns 3 and 4: marked on column 3, in the left cells
    mask[6, 6] = 255
    # cell (1, 1) holds the void pixel (and the label changes around it)
    assert mask_boundary(mask).tolist() == [[1, 0], [1, 1]]
    assert mask_boundary(np.full((5, 5), 3, np.uint8)).tolist() == [[0, 0], [0, 0]]  # padded, not wrapped
    bottom = np.zeros((5, 3), np.uint8)
    bottom[4, :] = 2  # a change between rows 3 and 4: row 3 lies in the first cell row
    assert mask_boundary(bottom, stride=2).tolist() == [[0, 0], [1, 1], [0, 0]]
    with pytest.raises(ValueError, match="mask"):
        mask_boundary(np.zeros((2, 2, 3), np.uint8))


def test_pair_agreement_counts_against_hand_labelled_pairs():
    # 2 x 2 grid, radius 2: pairs (0,1) (2,3) across, (0,2) (1,3) down, (0,3) and (1,2) diagonal
    seeds = np.array([[1, 1], [0, 255]])
    truth = np.array([[1, 0], [0, 0]])
    # seeds: (0,1) positive; (0,2), (1,2) negative; the three pairs touching 255 unlabelled
    # truth: (0,1) (0,2) (0,3) negative, (2,3) (1,2) (1,3) positive: every pair related
    assert pair_agreement(seeds, truth, pair_index(2, 2, 2)) == {"pos": 1, "pos_true": 0, "neg": 2, "neg_true": 1,
                                                                 "related": 6}
    # a pair the truth cannot judge (void) counts nowhere
    truth_void = np.array([[255, 0], [0, 0]])
    got = pair_agreement(seeds, truth_void, pair_index(2, 2, 2))
    assert got == {"pos": 0, "pos_true": 0, "neg": 1, "neg_true": 0, "related": 3}


def test_boundary_score_auc_and_means_by_hand():
    score = BoundaryScore()
    score.update(np.array([[0.9, 0.2], [0.5, 0.5]]), np.array([[1, 0], [1, 0]]))
    # boundary cells {0.9, 0.5} against {0.2, 0.5}: 3 wins and one tie of 4 comparisons
    assert score.auc() == pytest.approx(0.875)
    s = score.summary()
    assert s["mean_on_boundary"] == pytest.approx(0.7) and s["mean_elsewhere"] == pytest.approx(0.35)
    assert (s["boundary_cells"], s["other_cells"]) == (2, 2)
    # two images accumulate as one
    rng = np.random.default_rng(0)
    b, t = rng.random((2, 6, 6)), rng.random((2, 6, 6)) > 0.7
    one, two = BoundaryScore(), BoundaryScore()
    one.update(b.reshape(12, 6), t.reshape(12, 6))
    two.update(b[0], t[0])
    two.update(b[1], t[1])
    assert one.auc() == pytest.approx(two.auc())
    # the plain pairwise count
    pos, neg = b[t], b[~t]
    expected = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert one.auc() == pytest.approx(expected, abs=2e-3)  # bins of 1/1000
    assert BoundaryScore().auc() is None
    with pytest.raises(ValueError, match="differ"):
        score.update(np.zeros((2, 2)), np.zeros((3, 2)))


def test_propagate_stages_equals_the_dense_walk_at_every_length():
    g = torch.Generator().manual_seed(0)
    boundary = torch.rand(6, 7, generator=g)
    cams = torch.rand(2, 6, 7, generator=g)
    stages = propagate_stages(cams, boundary, beta=3.0, exp_times=[0, 1, 3], radius=3)
    assert sorted(stages) == [0, 1, 3]
    assert not torch.allclose(stages[0], cams.double() * (1 - boundary.double()))  # 2^0: one step, not none
    for e in (0, 1, 3):
        assert torch.allclose(stages[e], propagate_dense(cams, boundary, beta=3.0, exp_times=e, radius=3), atol=1e-10)
    with pytest.raises(ValueError, match="exp_times"):
        propagate_stages(cams, boundary, exp_times=[2, -1])


def test_walked_maps_upsample_crop_and_share_one_maximum():
    rw = torch.stack([torch.full((2, 2), 2.0), torch.full((2, 2), 1.0)])
    up = walked_maps(rw, (7, 5))
    assert up.shape == (2, 7, 5)
    assert torch.allclose(up[0], torch.ones(7, 5, dtype=torch.float64))
    assert torch.allclose(up[1], torch.full((7, 5), 0.5, dtype=torch.float64))  # the common maximum, not its own
