"""Lifted structured loss (Song et al., CVPR 2016), negatives from hard negative pair mining (docs/pair_losses.md)."""
from mxnet.gluon.loss import _apply_weighting

from .logsumexp import masked_logsumexp
from .mining import mined_distances, outer, pair_masks
from .pair_loss import PairLoss


class LiftedStructureLoss(PairLoss):
    """``loss(embeddings (B, d), labels (B,)) -> (1,)``: over the positive pairs P (i < j, one label),

        J_ij = log(sum_{k: y_k != y_i} exp(m - Dn_ik) + sum_{l: y_l != y_j} exp(m - Dn_jl)) + D_ij
        loss = 1 / (2 |P|) * sum_{(i, j) in P} relu(J_ij)^2

    with m = ``margin``, D the originals' distances and Dn the mined negative pair distances
    (loss/mining.py; = D without EE). A batch without positive pairs gives 0.
    """

    def __init__(self, margin=1.0, **kwargs):
        super().__init__(**kwargs)
        self.margin = margin

    def hybrid_forward(self, F, embeddings, labels):
        dist, mined = mined_distances(F, self.expansion, embeddings)
        positive, negative = pair_masks(F, labels)
        # J_ij = logaddexp(r_i, r_j) + D_ij with r_i the log-sum-exp over the negatives of i
        r = masked_logsumexp(F, self.margin - mined, negative)
        rows = outer(F, r, F.ones_like(r))
        cols = F.transpose(rows)
        top = F.BlockGrad(F.maximum(rows, cols))
        lifted = top + F.log(F.exp(rows - top) + F.exp(cols - top)) + dist     # J (B, B)
        # J is symmetric: the ordered pairs count each unordered one twice, in the sum and in |P|
        count = F.sum(positive)
        loss = F.sum(F.square(F.relu(lifted)) * positive) / (2 * F.maximum(count, F.ones_like(count)))
        return _apply_weighting(F, loss, self._weight, None)
