"""Multi-Similarity loss (Wang et al., CVPR 2019), negatives from hard negative pair mining (docs/pair_losses.md)."""
from mxnet.gluon.loss import _apply_weighting

from .logsumexp import MASKED, masked_logsumexp
from .mining import mined_similarities, pair_masks
from .pair_loss import PairLoss


class MultiSimilarityLoss(PairLoss):
    """``loss(embeddings (B, d), labels (B,)) -> (1,)``, the sum over anchors i divided by B of

        1/alpha log(1 + sum_{j in P_i} exp(-alpha (S_ij - lambda)))
        + 1/beta log(1 + sum_{k in N_i} exp(beta (Sn_ik - lambda)))

    with lambda = ``base``. Pair mining with epsilon: P_i holds the positives j != i with
    S_ij - epsilon < max_{k: y_k != y_i} Sn_ik, N_i the negatives with
    Sn_ik + epsilon > min_{j != i, y_j = y_i} S_ij. S holds the originals' inner products, Sn the
    mined ones (loss/mining.py; = S without EE). The selection passes no gradient. P_i is empty
    exactly when N_i is (each condition implies a member of the other set), and an anchor with
    both empty contributes log 1 = 0.
    """

    mines = 'similarities'

    def __init__(self, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.beta, self.base, self.epsilon = alpha, beta, base, epsilon

    def hybrid_forward(self, F, embeddings, labels):
        sim, mined = mined_similarities(F, self.expansion, embeddings)
        positive, negative = pair_masks(F, labels)
        # the mining thresholds, min positive S and max negative Sn per anchor: an anchor without
        # positives gets lowest = -MASKED and keeps no negative, one without negatives the reverse
        lowest = F.BlockGrad(-F.max(F.where(positive, -sim, F.ones_like(sim) * MASKED), axis=1))
        highest = F.BlockGrad(F.max(F.where(negative, mined, F.ones_like(mined) * MASKED), axis=1))
        keep_pos = positive * F.broadcast_lesser(sim - self.epsilon, highest.expand_dims(1))
        keep_neg = negative * F.broadcast_greater(mined + self.epsilon, lowest.expand_dims(1))
        pos = masked_logsumexp(F, -self.alpha * (sim - self.base), keep_pos, plus_one=True) / self.alpha
        neg = masked_logsumexp(F, self.beta * (mined - self.base), keep_neg, plus_one=True) / self.beta
        loss = F.mean(pos + neg)
        return _apply_weighting(F, loss, self._weight, None)
