"""IRN (Ahn, Cho, Kwak, CVPR 2019; METHODS.md section 3b): inter-pixel relations learnt from CRF seeds and the
random walk that turns stride-4 CAMs into full-coverage pseudo-labels.

- pairs.py: the pixel pairs within a radius on the stride-4 grid and the pixels on the path between them
- pair_labels.py: positive / negative pair labels from a seed map
- boundary_net.py: the boundary (edge) branch on a frozen backbone's multi-level features
- loss.py: IRN's affinity loss
- random_walk.py: the transition matrix and the walk, in a fast sparse form and the dense reference
"""
from .boundary_net import BoundaryNet, level_features
from .loss import relation_loss
from .pair_labels import PairLabels, pair_labels, seeds_at_stride
from .pairs import PairIndex, line_path, pair_index, search_offsets
from .random_walk import propagate, propagate_dense, walk_labels

__all__ = ["BoundaryNet", "PairIndex", "PairLabels", "level_features", "line_path", "pair_index", "pair_labels",
           "propagate", "propagate_dense", "relation_loss", "search_offsets", "seeds_at_stride", "walk_labels"]
