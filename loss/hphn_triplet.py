"""Triplet loss with the hardest positive and the hardest negative pair (HPHN): SPEC section 2."""
import mxnet as mx
from mxnet.gluon.loss import Loss, _apply_weighting

from .embedding_expansion import EmbeddingExpansion, check_pairs
from .mining import hard_max, hard_min, label_masks, mined_distances

# Stands in for "no negative": an anchor whose batch holds no other class contributes 0.
NO_NEGATIVE = 1e12


class HPHNTripletLoss(Loss):
    """``loss(embeddings (B, d), labels (B,)) -> (B,)``, the loss of every original anchor i:

        d_ap(i) = max_{j < B, y_j = y_i} D(e_i, e_j)                      hardest positive, originals
        d_an(i) = min_{a in G(i)} min_{b: y_b != y_i} D(a, b)             hardest negative pair
        loss(i) = relu(d_ap - d_an + margin)   or, with soft_margin, log(1 + exp(d_ap - d_an))

    where b runs over the originals and the n = ``n_inner_pts`` synthetic points of every row
    (EmbeddingExpansion, ``l2_norm`` normalising them). Gradients flow through the synthetic points.
    ``num_instances`` is the sampler's images per class; with EE it must be even.
    """

    def __init__(self, margin=0.2, soft_margin=False, weight=None, batch_axis=0, num_instances=2,
                 n_inner_pts=0, l2_norm=True, **kwargs):
        super().__init__(weight, batch_axis, **kwargs)
        if n_inner_pts > 0 and num_instances % 2:
            raise ValueError('Embedding Expansion pairs consecutive images of a class: num_instances must '
                             'be even when n_inner_pts > 0, got %d' % num_instances)
        self.margin = margin
        self.soft_margin = soft_margin
        self.num_instances = num_instances
        with self.name_scope():
            self.expansion = EmbeddingExpansion(n_inner_pts, l2_norm)

    def forward(self, embeddings, labels):
        if isinstance(labels, mx.nd.NDArray):
            check_pairs(labels, self.expansion.n_inner_pts)
            # the label masks multiply distances: one dtype for both (loaders give int32 labels)
            labels = labels.astype(embeddings.dtype, copy=False)
        return super().forward(embeddings, labels)

    def hybrid_forward(self, F, embeddings, labels):
        dist, mined = mined_distances(F, self.expansion, embeddings)
        same, _ = label_masks(F, labels)
        d_ap = hard_max(F, dist * same)
        d_an = hard_min(F, F.where(same, F.ones_like(mined) * NO_NEGATIVE, mined))
        if self.soft_margin:
            loss = F.Activation(d_ap - d_an, act_type='softrelu')   # log(1 + exp(x)), overflow-safe
        else:
            loss = F.relu(d_ap - d_an + self.margin)
        return _apply_weighting(F, loss, self._weight, None)
