"""Triplet loss over every triplet of the batch, negatives from hard negative pair mining (SPEC section 3)."""
from mxnet.gluon.loss import _apply_weighting

from .mining import mined_distances, pair_masks
from .pair_loss import PairLoss

# Moves an invalid positive below, an invalid negative above every real distance.
INVALID = 1e12


def hinge_sum(F, ap, an):
    """sum_{a, p, n} relu(ap[a, p] - an[a, n]) from ap, an (A, P), (A, N), without the A x P x N tensor.

    Sorting each row of [ap, an] gives, for every positive, the negatives below it (the active
    hinges): their count c and sum s, as exclusive cumulative sums (a GEMM with a strictly upper
    triangular matrix). Then the row's hinges sum to sum_p (c_p ap_p - s_p), which is linear in ap
    and an for fixed counts: the order carries no gradient, the values carry the exact one.
    """
    values = F.concat(ap, an, dim=1)
    is_neg = F.concat(F.zeros_like(ap), F.ones_like(an), dim=1)
    order = F.argsort(F.BlockGrad(values), axis=1, dtype='int32')
    rows = F.cast(F.broadcast_like(F.contrib.arange_like(values, axis=0).expand_dims(1), values), 'int32')
    where = F.stack(rows, order)
    values, is_neg = F.gather_nd(values, where), F.gather_nd(is_neg, where)
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
        ap = F.where(positive, dist + self.margin, F.ones_like(dist) * -INVALID)
        an = F.where(negative, mined, F.ones_like(mined) * INVALID)
        count = F.sum(F.sum(positive, axis=1) * F.sum(negative, axis=1))
        loss = hinge_sum(F, ap, an) / F.maximum(count, F.ones_like(count))
        return _apply_weighting(F, loss, self._weight, None)
