"""Common base of the pair-based losses with Embedding Expansion (SPEC section 3)."""
import mxnet as mx
from mxnet.gluon.loss import Loss

from .embedding_expansion import EmbeddingExpansion, check_pairs


class PairLoss(Loss):
    """A gluon Loss ``loss(embeddings (B, d), labels (B,))`` whose negative terms may read EE.

    Holds ``self.expansion``, an EmbeddingExpansion of ``n_inner_pts`` points (``l2_norm``
    normalising them), for loss/mining.py. ``num_instances`` is the sampler's images per class; it
    must be even when rows 2k and 2k+1 are paired: with EE, or always when ``always_paired``.
    """

    # name of a loss that pairs rows 2k, 2k+1 even without EE (N-pair), for the error messages
    always_paired = None

    def __init__(self, num_instances=2, n_inner_pts=0, l2_norm=True, weight=None, batch_axis=0, **kwargs):
        super().__init__(weight, batch_axis, **kwargs)
        if n_inner_pts > 0 and num_instances % 2:
            raise ValueError('Embedding Expansion pairs consecutive images of a class: num_instances must '
                             'be even when n_inner_pts > 0, got %d' % num_instances)
        if self.always_paired and num_instances % 2:
            raise ValueError('%s pairs consecutive images of a class: num_instances must be even, got %d'
                             % (self.always_paired, num_instances))
        self.num_instances = num_instances
        with self.name_scope():
            self.expansion = EmbeddingExpansion(n_inner_pts, l2_norm)

    def forward(self, embeddings, labels):
        if isinstance(labels, mx.nd.NDArray):
            n = self.expansion.n_inner_pts
            if self.always_paired and n == 0:
                check_pairs(labels, 1, self.always_paired)
            else:
                check_pairs(labels, n)
            # the label masks multiply distances: one dtype for both (loaders give int32 labels)
            labels = labels.astype(embeddings.dtype, copy=False)
        return super().forward(embeddings, labels)
