"""Proxy-Anchor loss (Kim et al., CVPR 2020): SPEC section 5."""
import mxnet as mx
from mxnet.gluon import HybridBlock


def log1p_sum_exp(F, a, member):
    """``log(1 + sum_i member[i, p] * exp(a[i, p]))`` over axis 0: (B, C) -> (C,).

    Shifted by m_p = max(0, max over members of a) so that no exp overflows whatever alpha is;
    non-members become -inf before the exp, so neither they nor their gradients can be inf or NaN.
    """
    a = F.where(member, a, F.zeros_like(a) - float('inf'))
    m = F.BlockGrad(F.relu(F.max(a, axis=0)))        # a constant shift: the value is exact without its gradient
    return m + F.log(F.exp(-m) + F.sum(F.exp(F.broadcast_sub(a, m)), axis=0))


def proxy_anchor(F, x, labels, proxies, alpha, margin, num_classes):
    """The loss of SPEC section 5, shape (1,), for embeddings x (B, d), labels (B,), proxies P (C, d):

        L = 1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (c(x, p) - delta)))
          + 1/C    sum_{p in P}  log(1 + sum_{x in X_p-} exp( alpha (c(x, p) + delta)))

    c = cosine similarity, delta = margin; P+ = the proxies with a positive in the batch.
    """
    cos = F.dot(F.L2Normalization(x, mode='instance'), F.L2Normalization(proxies, mode='instance'),
                transpose_b=True)                                                       # (B, C)
    # one_hot is float32; where() gives the mask the dtype of cos (float64 in the tests)
    positive = F.where(F.one_hot(labels, num_classes), F.ones_like(cos), F.zeros_like(cos))
    pos_term = log1p_sum_exp(F, -alpha * (cos - margin), positive)                       # (C,)
    neg_term = log1p_sum_exp(F, alpha * (cos + margin), 1 - positive)                    # (C,)
    with_positive = F.sum(F.sum(positive, axis=0) > 0)                                   # |P+| >= 1
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

    def forward(self, embeddings, labels):
        if isinstance(labels, mx.nd.NDArray):
            check_labels(labels, self.num_classes)
            # one_hot works on float indices; a float label keeps one dtype in the graph
            labels = labels.astype(embeddings.dtype, copy=False)
        return super().forward(embeddings, labels)

    def hybrid_forward(self, F, embeddings, labels, proxies):
        return proxy_anchor(F, embeddings, labels, proxies, self.alpha, self.margin, self.num_classes)


def check_labels(labels, num_classes):
    """A label outside 0..C-1 would silently make an all-zero one-hot row: refuse it."""
    y = labels.asnumpy()
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError('Proxy-Anchor labels must be class indices 0..%d, got values in [%s, %s]: '
                         'the training classes must be numbered 0..C-1' % (num_classes - 1, y.min(), y.max()))
