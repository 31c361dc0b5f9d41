"""Multi-class N-pair loss (Sohn, NeurIPS 2016), negatives from hard negative pair mining (docs/pair_losses.md)."""
from mxnet.gluon.loss import _apply_weighting

from .logsumexp import masked_logsumexp
from .mining import label_masks, mined_similarities
from .pair_loss import PairLoss


def anchors_positives(F, x):
    """Rows 2k (anchors) by columns 2k+1 (their positives) of a (B, B) matrix -> (B/2, B/2)."""
    return F.slice(x, begin=(0, 1), end=(None, None), step=(2, 2))


class NPairLoss(PairLoss):
    """``loss(embeddings (B, d), labels (B,)) -> (1,)``. Anchor f_i = row i = 2k, its positive
    f_i+ = row 2k+1; the mean over anchors of

        log(1 + sum_{j: y_j != y_i} exp(f_i.f_j+ - f_i.f_i+))

    j running over the other anchors (pairs of the anchor's own class are not negatives), plus
    ``l2_reg`` * the mean over rows of |f|^2. f_i.f_i+ reads the originals' S, f_i.f_j+ the mined
    Sn[i, j+] (loss/mining.py; = S without EE).

    l2_reg = 0.002 is Sohn's value. It keeps unnormalised embeddings from growing; on the model's
    L2-normalised ones the penalty is the constant 0.002 and passes no gradient.
    """

    mines = 'similarities'
    always_paired = 'The N-pair loss'

    def __init__(self, l2_reg=0.002, **kwargs):
        super().__init__(**kwargs)
        self.l2_reg = l2_reg

    def hybrid_forward(self, F, embeddings, labels):
        sim, mined = mined_similarities(F, self.expansion, embeddings)
        positive = F.diag(anchors_positives(F, sim))                  # f_i . f_i+   (B/2,)
        logits = F.broadcast_sub(anchors_positives(F, mined), positive.expand_dims(1))
        _, negative = label_masks(F, F.slice(labels, begin=(0,), end=(None,), step=(2,)))
        loss = F.mean(masked_logsumexp(F, logits, negative, plus_one=True))
        loss = loss + self.l2_reg * F.mean(F.diag(sim))                # mean |f|^2
        return _apply_weighting(F, loss, self._weight, None)
