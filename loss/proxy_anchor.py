"""Proxy-Anchor loss (Kim et al., CVPR 2020): docs/see.md."""
import mxnet as mx
from mxnet.gluon import HybridBlock


# While alpha (1 + |delta|) is at most this, exp(alpha (c +- delta)) with |c| <= 1 stays below e^60 and
# no sum of them over rows overflows float32: the loss needs no shift (docs/see.md: alpha = 32, delta = 0.1).
MAX_UNSHIFTED_EXPONENT = 60.0


def log1p_sum_exp(F, a, member):
    """``log(1 + sum_i member[i, p] * exp(a[i, p]))`` over axis 0: (B, C) -> (C,), for any alpha.

    Shifted by m_p = max(0, max over members of a) so that no exp overflows whatever alpha is;
    non-members become -inf before the exp, so neither they nor their gradients can be inf or NaN.
    """
    a = F.where(member, a, F.zeros_like(a) - float('inf'))
    m = F.BlockGrad(F.relu(F.max(a, axis=0)))        # a constant shift: the value is exact without its gradient
    return m + F.log(F.exp(-m) + F.sum(F.exp(F.broadcast_sub(a, m)), axis=0))


def proxy_anchor(F, x, labels, proxies, alpha, margin, num_classes):
    """The loss of docs/see.md, shape (1,), for embeddings x (B, d), labels (B,), proxies P (C, d)."""
    cos = F.dot(F.L2Normalization(x, mode='instance'), F.L2Normalization(proxies, mode='instance'),
                transpose_b=True)                                                       # (B, C)
    return proxy_anchor_from_cosines(F, cos, labels, alpha, margin, num_classes)


def proxy_anchor_from_cosines(F, cos, labels, alpha, margin, num_classes):
    """The loss of docs/see.md, shape (1,), from the cosines c(x, p) (B, C) and the labels (B,) (of
    cos' dtype):

        L = 1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (c(x, p) - delta)))
          + 1/C    sum_{p in P}  log(1 + sum_{x in X_p-} exp( alpha (c(x, p) + delta)))

    delta = margin; P+ = the proxies with a positive in the batch. Every (B, C) operation counts on
    this CPU (SEE runs it on 3x the batch), hence the sums over rows as products with ones (MXNet's
    reductions are ~3x slower) and, up to MAX_UNSHIFTED_EXPONENT, no shift and the positive term from
    the B picked cosines (one positive per row).
    """
    positive = F.broadcast_equal(F.reshape(labels, (-1, 1)), F.contrib.arange_like(cos, axis=1))   # (B, C)
    ones = F.ones_like(F.reshape(labels, (1, -1)))                                                  # (1, B)
    if alpha * (1 + abs(margin)) <= MAX_UNSHIFTED_EXPONENT:
        own = F.reshape(F.pick(cos, labels, axis=1), (1, -1))                                       # (1, B)
        pos_term = F.log1p(F.dot(F.exp(-alpha * (own - margin)), positive))                         # (1, C)
        neg_term = F.log1p(F.dot(ones, F.exp(alpha * (cos + margin)) * (1 - positive)))            # (1, C)
    else:
        pos_term = log1p_sum_exp(F, -alpha * (cos - margin), positive)                              # (C,)
        neg_term = log1p_sum_exp(F, alpha * (cos + margin), 1 - positive)                           # (C,)
    with_positive = F.sum(F.dot(ones, positive) > 0)                                                # |P+| >= 1
    return F.sum(pos_term) / with_positive + F.sum(neg_term) / num_classes


class ProxyAnchorLoss(HybridBlock):
    """``loss(embeddings (B, d), labels (B,)) -> (1,)``: Proxy-Anchor with its proxies P (C, d).

    ``labels`` are class indices 0..C-1 of any dtype (the loaders give int32). The Parameter
    ``proxies`` is initialised as the release does, Kaiming-normal fan-out: N(0, 2 / C) for a
    (C, d) matrix (``mx.init.MSRAPrelu('out', slope=0)``); the release trains it with lr x 100.
    """

    def __init__(self, num_classes, embed_dim, margin=0.1, alpha=32, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.margin = margin
        self.alpha = alpha
        with self.name_scope():
            self.proxies = self.params.get('proxies', shape=(self.num_classes, embed_dim),
                                           init=mx.init.MSRAPrelu(factor_type='out', slope=0))

    def set_epoch(self, epoch):
        """Called at the start of every epoch (0-based); SEE schedules its expansion by it."""

    def synthetic_negative_fraction(self, embeddings, labels):
        """None: the proxy losses mine no negative pairs (main.py logs the share for the pair losses)."""
        return None

    def forward(self, embeddings, labels, *args):
        # args: further inputs of a subclass's graph (SEE's random numbers)
        if isinstance(labels, mx.nd.NDArray):
            check_labels(labels, self.num_classes)
            # one_hot works on float indices; a float label keeps one dtype in the graph
            labels = labels.astype(embeddings.dtype, copy=False)
        return super().forward(embeddings, labels, *args)

    def hybrid_forward(self, F, embeddings, labels, proxies):
        return proxy_anchor(F, embeddings, labels, proxies, self.alpha, self.margin, self.num_classes)


def check_labels(labels, num_classes):
    """A label outside 0..C-1 would silently make an all-zero one-hot row: refuse it."""
    y = labels.asnumpy()
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError('Proxy-Anchor labels must be class indices 0..%d, got values in [%s, %s]: '
                         'the training classes must be numbered 0..C-1' % (num_classes - 1, y.min(), y.max()))
