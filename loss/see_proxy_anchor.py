"""Proxy-Anchor with spherical embedding expansion (SEE): SPEC section 5."""
import math

import numpy as np
import mxnet as mx

from .proxy_anchor import ProxyAnchorLoss, proxy_anchor
from .spherical_expansion import SphericalExpansion


def selected_fraction(epoch, epochs, max_thresh, min_thresh):
    """t of SPEC section 5: min_thresh at epoch 0 rising along a half cosine to max_thresh at
    min(epochs, 200), then constant.

        t = max_thresh - (max_thresh - min_thresh) (cos(pi min(epoch, 200) / min(epochs, 200)) + 1) / 2
    """
    progress = min(epoch, 200) / min(epochs, 200)
    return max_thresh - (max_thresh - min_thresh) * (math.cos(math.pi * progress) + 1) / 2


class SEEProxyAnchorLoss(ProxyAnchorLoss):
    """``loss(embeddings (B, d), labels (B,)) -> (1,)``: PA(batch) + lambda PA(synthetic points).

    The k = round(t B) rows with the highest cosine to their own proxy are expanded into
    n = ``n_expansion`` points each (SphericalExpansion, from the detached embedding and proxy),
    labelled with the row's class. The synthetic term shares the ``proxies`` Parameter and trains
    only it: the embeddings' gradient is that of the plain PA term. Call ``set_epoch(epoch)`` at the
    start of every epoch (0-based) of a run of ``epochs`` epochs to follow the schedule of t.
    """

    def __init__(self, num_classes, embed_dim, n_expansion=8, lambda_=0.2, max_thresh=0.4, min_thresh=0.0,
                 epochs=100, margin=0.1, alpha=32, **kwargs):
        super().__init__(num_classes, embed_dim, margin, alpha, **kwargs)
        if epochs < 1 or not 0 <= min_thresh <= max_thresh <= 1:
            raise ValueError('SEE needs epochs >= 1 and 0 <= min_thresh <= max_thresh <= 1, got %d, %s, %s'
                             % (epochs, min_thresh, max_thresh))
        self.lambda_ = lambda_
        self.max_thresh, self.min_thresh, self.epochs = max_thresh, min_thresh, epochs
        with self.name_scope():
            self.expansion = SphericalExpansion(n_expansion)
        self.top_k = None        # the k the hybridised graph was built for
        self.set_epoch(0)

    def set_epoch(self, epoch):
        self.fraction = selected_fraction(epoch, self.epochs, self.max_thresh, self.min_thresh)

    def forward(self, embeddings, labels):
        if isinstance(embeddings, mx.nd.NDArray):
            top_k = int(np.round(embeddings.shape[0] * self.fraction))    # as the release rounds
            if top_k != self.top_k:
                # k fixes the number of synthetic rows, a shape in the hybridised graph: rebuild it
                self.top_k = top_k
                self._clear_cached_op()
        return super().forward(embeddings, labels)

    def hybrid_forward(self, F, embeddings, labels, proxies):
        loss = proxy_anchor(F, embeddings, labels, proxies, self.alpha, self.margin, self.num_classes)
        if not self.top_k:
            return loss
        z = F.BlockGrad(F.L2Normalization(embeddings, mode='instance'))                    # (B, d)
        w = F.BlockGrad(F.take(F.L2Normalization(proxies, mode='instance'), labels))       # (B, d) own proxy
        top = F.topk(F.sum(z * w, axis=1), k=self.top_k)                                    # (k,) row indices
        points = self.expansion(F.take(z, top), F.take(w, top))                             # (k, n, d)
        point_labels = F.repeat(F.take(labels, top), repeats=self.expansion.n_expansion)  # (k n,) row-major
        synthetic = proxy_anchor(F, F.reshape(points, (-3, 0)), point_labels, proxies, self.alpha, self.margin,
                                 self.num_classes)
        return loss + self.lambda_ * synthetic
