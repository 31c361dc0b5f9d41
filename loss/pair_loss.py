"""Common base of the pair-based losses with Embedding Expansion (docs/pair_losses.md)."""
import mxnet as mx
from mxnet.gluon.loss import Loss

from .embedding_expansion import EmbeddingExpansion, check_pairs
from .mining import label_masks, mined_distances, mined_similarities


def share(flags, valid):
    """sum(flags * valid) / sum(valid) as a float (0 when nothing is valid); NDArrays of one shape."""
    count = float(valid.sum().asscalar())
    return float((flags * valid).sum().asscalar()) / count if count else 0.0


class PairLoss(Loss):
    """A gluon Loss ``loss(embeddings (B, d), labels (B,))`` whose negative terms may read EE.

    Holds ``self.expansion``, an EmbeddingExpansion of ``n_inner_pts`` points (``l2_norm``
    normalising them), for loss/mining.py. ``num_instances`` is the sampler's images per class; it
    must be even when rows 2k and 2k+1 are paired: with EE, or always when ``always_paired``.
    """

    # name of a loss that pairs rows 2k, 2k+1 even without EE (N-pair), for the error messages
    always_paired = None
    # which mined matrix the negative terms read: 'distances' (Dn) or 'similarities' (Sn)
    mines = 'distances'

    def __init__(self, num_instances=2, n_inner_pts=0, l2_norm=True, weight=None, batch_axis=0, **kwargs):
        super().__init__(weight, batch_axis, **kwargs)
        self.check_layout(num_instances, n_inner_pts)
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

    @classmethod
    def check_layout(cls, num_instances, n_inner_pts):
        """ValueError unless the sampler's num_instances images per class suit this loss: even when
        rows 2k, 2k+1 are paired (with EE, or always for N-pair). main.py calls it before loading data."""
        if n_inner_pts > 0 and num_instances % 2:
            raise ValueError('Embedding Expansion pairs consecutive images of a class: num_instances must '
                             'be even when n_inner_pts > 0, got %d' % num_instances)
        if cls.always_paired and num_instances % 2:
            raise ValueError('%s pairs consecutive images of a class: num_instances must be even, got %d'
                             % (cls.always_paired, num_instances))

    def set_epoch(self, epoch):
        """Called at the start of every epoch (0-based); the pair losses have no schedule."""

    def synthetic_negative_fraction(self, embeddings, labels):
        """Share of the negative pairs (i, j), y_i != y_j, whose mined value comes from a pair with a
        synthetic point (Dn < D, or Sn > S); None without EE. embeddings (B, d), labels (B,)
        NDArrays; no gradient."""
        if self.expansion.n_inner_pts == 0:
            return None
        embeddings = embeddings.detach()
        _, negative = label_masks(mx.nd, labels.astype(embeddings.dtype, copy=False))
        if self.mines == 'similarities':
            sim, mined = mined_similarities(mx.nd, self.expansion, embeddings)
            return share(mined > sim, negative)
        dist, mined = mined_distances(mx.nd, self.expansion, embeddings)
        return share(mined < dist, negative)
