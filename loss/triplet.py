"""Triplet loss over every triplet of the batch, negatives from hard negative pair mining (docs/pair_losses.md)."""
from mxnet.gluon.loss import _apply_weighting

from .mining import mined_distances, pair_masks
from .pair_loss import PairLoss

# Stands in for the positive "a itself": below every negative, its hinges are all inactive.
SELF = -1e12


def hinge_sum(F, values, is_neg):
    """sum_a sum_{p, n} relu(values[a, p] - values[a, n]) over the columns p with is_neg[a, p] = 0
    and n with is_neg[a, n] = 1; values, is_neg (A, C). No A x C x C tensor:

    sorting each row gives, for every p, the n below it (the active hinges): their count c_p and
    the sum s_p of their values, as exclusive cumulative sums (a GEMM with a strictly upper
    triangular matrix). The row's hinges sum to sum_p (c_p values_p - s_p), linear in the values
    for a fixed order: the order carries no gradient, the values carry the exact one.
    """
    order = F.argsort(F.BlockGrad(values), axis=1, dtype='int32')
    # flat index of entry (a, order[a, q]): a * C + order[a, q], where a * C = (a * C + q) - q
    entry = F.reshape_like(F.contrib.arange_like(F.reshape(order, -1)), order)
    flat = F.broadcast_sub(entry, F.contrib.arange_like(order, axis=1).expand_dims(0)) + order
    values = F.take(F.reshape(values, -1), flat)
    is_neg = F.take(F.reshape(is_neg, -1), flat)
    col = F.contrib.arange_like(values, axis=1)
    before = F.broadcast_lesser(col.expand_dims(1), col.expand_dims(0))      # [q' < q]
    count, total = F.dot(is_neg, before), F.dot(is_neg * values, before)
    return F.sum((1 - is_neg) * (count * values - total))


class TripletLoss(PairLoss):
    """``loss(embeddings (B, d), labels (B,)) -> (1,)``, the mean over all valid triplets of

        relu(D(a, p) - Dn(a, n) + margin)

    a valid triplet being an anchor a, a positive p != a of its label and a negative n of another
    label, all rows of the batch. D(a, p) is the originals' distance; Dn(a, n) the mined negative
    pair distance (loss/mining.py; = D without EE). The mean counts every valid triplet, inactive
    ones too, as the issue asks; a batch without any valid triplet gives 0.
    """

    def __init__(self, margin=0.2, **kwargs):
        super().__init__(**kwargs)
        self.margin = margin

    def hybrid_forward(self, F, embeddings, labels):
        dist, mined = mined_distances(F, self.expansion, embeddings)
        positive, negative = pair_masks(F, labels)
        # each column of row a is a positive, a negative or a itself
        values = F.where(negative, mined, F.where(positive, dist + self.margin, F.ones_like(dist) * SELF))
        count = F.sum(F.sum(positive, axis=1) * F.sum(negative, axis=1))
        loss = hinge_sum(F, values, negative) / F.maximum(count, F.ones_like(count))
        return _apply_weighting(F, loss, self._weight, None)
