"""Triplet loss with the hardest positive and the hardest negative pair (HPHN): docs/mining.md."""
import mxnet as mx
from mxnet.gluon.loss import _apply_weighting

from .mining import hard_max, hard_min, label_masks, mined_distances, mined_distances_by_source
from .pair_loss import PairLoss, share

# Stands in for "no negative": an anchor whose batch holds no other class contributes 0.
NO_NEGATIVE = 1e12

NEGATIVE_GRADS = ('release', 'exact')


class HPHNTripletLoss(PairLoss):
    """``loss(embeddings (B, d), labels (B,)) -> (B,)``, the loss of every original anchor i:

        d_ap(i) = max_{j < B, y_j = y_i} D(e_i, e_j)                      hardest positive, originals
        d_an(i) = min_{a in G(i)} min_{b: y_b != y_i} D(a, b)             hardest negative pair
        loss(i) = relu(d_ap - d_an + margin)   or, with soft_margin, log(1 + exp(d_ap - d_an))

    where b runs over the originals and the n = ``n_inner_pts`` synthetic points of every row
    (EmbeddingExpansion, ``l2_norm`` normalising them). Gradients flow through the synthetic points.
    ``num_instances`` is the sampler's images per class; with EE it must be even.

    ``negative_grad`` (values are the same either way):
      'release' (default): the gradient of d_an(i) is doubled whenever the hardest negative point b
          is synthetic. The official release stores every synthetic point twice
          (s_k(j) = s_{n+1-k}(p(j)), bit-identical) and its reduce-min sends the gradient to both
          copies; its published numbers were trained so (docs/mining.md section 2.8).
      'exact': the derivative of the loss as written: one copy.
    """

    def __init__(self, margin=0.2, soft_margin=False, negative_grad='release', **kwargs):
        super().__init__(**kwargs)
        if negative_grad not in NEGATIVE_GRADS:
            raise ValueError('negative_grad must be one of %s, got %r' % (', '.join(NEGATIVE_GRADS), negative_grad))
        self.margin = margin
        self.soft_margin = soft_margin
        self.negative_grad = negative_grad

    def _hardest(self, F, embeddings, labels):
        """(d_ap, d_an, synthetic), each (B,): synthetic is 1 where b of the hardest pair is synthetic."""
        same, _ = label_masks(F, labels)
        if self.expansion.n_inner_pts == 0:
            dist, _ = mined_distances(F, self.expansion, embeddings)
            d_an = hard_min(F, F.where(same, F.ones_like(dist) * NO_NEGATIVE, dist))
            return hard_max(F, dist * same), d_an, F.zeros_like(d_an)
        dist, from_original, from_synthetic = mined_distances_by_source(F, self.expansion, embeddings)
        no_negative = F.ones_like(dist) * NO_NEGATIVE
        d_original = hard_min(F, F.where(same, no_negative, from_original))
        d_synthetic = hard_min(F, F.where(same, no_negative, from_synthetic))
        synthetic = F.broadcast_lesser(d_synthetic, d_original)
        if self.negative_grad == 'release':
            d_synthetic = 2 * d_synthetic - F.BlockGrad(d_synthetic)     # same value, twice the gradient
        return hard_max(F, dist * same), F.where(synthetic, d_synthetic, d_original), synthetic

    def hybrid_forward(self, F, embeddings, labels):
        d_ap, d_an, _ = self._hardest(F, embeddings, labels)
        if self.soft_margin:
            loss = F.Activation(d_ap - d_an, act_type='softrelu')   # log(1 + exp(x)), overflow-safe
        else:
            loss = F.relu(d_ap - d_an + self.margin)
        return _apply_weighting(F, loss, self._weight, None)

    def synthetic_negative_fraction(self, embeddings, labels):
        """Share of the anchors with a negative whose hardest negative point b is synthetic; None
        without EE. embeddings (B, d), labels (B,) NDArrays; no gradient."""
        if self.expansion.n_inner_pts == 0:
            return None
        labels = labels.astype(embeddings.dtype, copy=False)
        _, d_an, synthetic = self._hardest(mx.nd, embeddings.detach(), labels)
        has_negative = d_an < NO_NEGATIVE / 2
        return share(synthetic, has_negative)
