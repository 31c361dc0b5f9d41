"""Proxy-Anchor with spherical embedding expansion (SEE): docs/see.md."""
import math

import numpy as np
import mxnet as mx

from .proxy_anchor import ProxyAnchorLoss, proxy_anchor_from_cosines
from .spherical_expansion import expansion_basis, gaussian


def selected_fraction(epoch, epochs, max_thresh, min_thresh):
    """t of docs/see.md: min_thresh at epoch 0 rising along a half cosine to max_thresh at
    min(epochs, 200), then constant.

        t = max_thresh - (max_thresh - min_thresh) (cos(pi min(epoch, 200) / min(epochs, 200)) + 1) / 2
    """
    progress = min(epoch, 200) / min(epochs, 200)
    return max_thresh - (max_thresh - min_thresh) * (math.cos(math.pi * progress) + 1) / 2


class SEEProxyAnchorLoss(ProxyAnchorLoss):
    """``loss(embeddings (B, d), labels (B,)) -> (1,)``: PA(batch) + lambda PA(synthetic points).

    The k = round(t B) rows with the highest cosine to their own proxy are expanded into
    n = ``n_expansion`` points each (spherical_expansion, from the detached embedding and proxy),
    labelled with the row's class. The synthetic term shares the ``proxies`` Parameter and trains
    only it: the embeddings' gradient is that of the plain PA term. Call ``set_epoch(epoch)`` at the
    start of every epoch (0-based) of a run of ``epochs`` epochs to follow the schedule of t. The
    random directions come from NumPy's global generator (``spherical_expansion.gaussian``).
    """

    def __init__(self, num_classes, embed_dim, n_expansion=8, lambda_=0.2, max_thresh=0.4, min_thresh=0.0,
                 epochs=100, margin=0.1, alpha=32, **kwargs):
        super().__init__(num_classes, embed_dim, margin, alpha, **kwargs)
        if epochs < 1 or not 0 <= min_thresh <= max_thresh <= 1:
            raise ValueError('SEE needs epochs >= 1 and 0 <= min_thresh <= max_thresh <= 1, got %d, %s, %s'
                             % (epochs, min_thresh, max_thresh))
        if not 1 <= n_expansion <= embed_dim - 2:
            raise ValueError('SEE needs 1 <= n_expansion <= embed_dim - 2, got %d and %d'
                             % (n_expansion, embed_dim))
        self.n_expansion = int(n_expansion)
        self.lambda_ = lambda_
        self.max_thresh, self.min_thresh, self.epochs = max_thresh, min_thresh, epochs
        self.top_k = None        # the k the hybridised graph was built for
        self.set_epoch(0)

    def set_epoch(self, epoch):
        self.fraction = selected_fraction(epoch, self.epochs, self.max_thresh, self.min_thresh)

    def forward(self, embeddings, labels):
        if not isinstance(embeddings, mx.nd.NDArray):
            return super().forward(embeddings, labels)
        top_k = int(np.round(embeddings.shape[0] * self.fraction))        # as the release rounds
        if top_k != self.top_k:
            # k fixes the number of synthetic rows, a shape in the hybridised graph: rebuild it
            self.top_k = top_k
            self._clear_cached_op()
        if not top_k or self.n_expansion == 1:
            return super().forward(embeddings, labels)
        # the random numbers of the expansion, drawn outside the graph (spherical_expansion.gaussian)
        noise = gaussian((top_k, self.n_expansion - 1, embeddings.shape[1]), embeddings.dtype,
                         embeddings.context)
        return super().forward(embeddings, labels, noise)

    def hybrid_forward(self, F, embeddings, labels, noise=None, proxies=None):
        x = F.L2Normalization(embeddings, mode='instance')
        P = F.L2Normalization(proxies, mode='instance')                                  # (C, d)
        cos = F.dot(x, P, transpose_b=True)                                              # (B, C)
        loss = proxy_anchor_from_cosines(F, cos, labels, self.alpha, self.margin, self.num_classes)
        if not self.top_k:
            return loss
        n = self.n_expansion
        z, w = F.BlockGrad(x), F.BlockGrad(F.take(P, labels))                            # (B, d), own proxy
        top = F.topk(F.BlockGrad(F.pick(cos, labels, axis=1)), k=self.top_k)             # (k,) rows by z.w
        weights, basis = expansion_basis(F, F.take(z, top), F.take(w, top), noise, n)    # (k, n, n), (k, n, d)
        # The points batch_dot(weights, basis) are unit vectors: their cosines to the proxies are the
        # weights times the basis' cosines. The (k, n, d) points are never formed; the proxies get the
        # same gradient.
        point_cos = F.batch_dot(weights, F.dot(basis, P, transpose_b=True))              # (k, n, C)
        point_labels = F.repeat(F.take(labels, top), repeats=n)                          # (k n,) row-major
        synthetic = proxy_anchor_from_cosines(F, F.reshape(point_cos, (-1, self.num_classes)), point_labels,
                                              self.alpha, self.margin, self.num_classes)
        return loss + self.lambda_ * synthetic
