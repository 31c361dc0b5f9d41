"""Embedding Expansion (Ko & Gu, CVPR 2020): docs/embedding_expansion.md.

The sampler lays a batch out so that rows 2k and 2k+1 share a class; each row i has the partner
p(i) = i+1 (i even) or i-1 (i odd). For n = ``n_inner_pts`` and k = 1..n, EE synthesises

    s_k(i) = (k * e[p(i)] + (n+1-k) * e[i]) / (n+1)                  (optionally L2-normalised)

the n points that divide the segment e[i] -> e[p(i)] into n+1 equal parts, nearest to e[i] first.
Every synthetic point is a combination of two originals, so this module also exposes that form,
x_k(i) = A_k[i] e[i] + B_k[i] e[p(i)], which lets the losses mine all (n+1)^2 pairs of two groups
from the B x B Gram matrix of the originals instead of an (n+1)B x (n+1)B one (see loss/mining.py).
"""
import numpy as np
import mxnet as mx
from mxnet.gluon import HybridBlock

# the largest n_inner_pts: the mining's graph has (n+1)^2 / 2 B x B blocks (n = 1000 never finishes)
MAX_INNER_PTS = 32

# mx.nd.L2Normalization's epsilon (mode 'instance'): x / sqrt(sum(x^2) + eps).
L2_EPS = 1e-10


def partner(F, x):
    """Rows swapped pairwise: (B, ...) -> (B, ...) with row i holding x[p(i)]."""
    # two slices and a concat: MXNet's reverse is a few times slower, forward and backward
    pairs = F.reshape(x, (-4, -1, 2, -2))
    return F.reshape(F.concat(F.slice_axis(pairs, axis=1, begin=1, end=2),
                              F.slice_axis(pairs, axis=1, begin=0, end=1), dim=1), (-3, -2))


def check_pairs(labels, n_inner_pts, needed_by='Embedding Expansion'):
    """Refuse a batch that EE (or ``needed_by``, another user of the pairs) would silently misread.

    labels: (B,) NDArray or array. Raises ValueError when B is odd or a pair (2k, 2k+1) differs;
    checks nothing when n_inner_pts = 0.
    """
    if n_inner_pts == 0:
        return
    y = labels.asnumpy() if isinstance(labels, mx.nd.NDArray) else np.asarray(labels)
    if y.shape[0] % 2:
        raise ValueError('%s needs an even batch (pairs 2k, 2k+1 of one class); '
                         'got %d rows: use an even --num_instances' % (needed_by, y.shape[0]))
    bad = np.flatnonzero(y[0::2] != y[1::2])
    if bad.size:
        k = int(bad[0])
        raise ValueError('%s pairs rows 2k and 2k+1, but rows %d and %d have labels %s '
                         'and %s: the batch must hold num_instances (even) consecutive images per class'
                         % (needed_by, 2 * k, 2 * k + 1, y[2 * k], y[2 * k + 1]))


class EmbeddingExpansion(HybridBlock):
    """EE layer: ``block(embeddings (B, d), labels (B,)) -> (points ((n+1)B, d), labels ((n+1)B,))``.

    Output order (docs/embedding_expansion.md): the B originals, then group k=1 (s_1(0..B-1)), ..., group k=n;
    labels repeat ``labels`` for every group. ``n_inner_pts = 0`` returns the inputs unchanged.
    """

    def __init__(self, n_inner_pts, l2_norm=True, **kwargs):
        super().__init__(**kwargs)
        if n_inner_pts < 0:
            raise ValueError('n_inner_pts must be >= 0, got %d' % n_inner_pts)
        if n_inner_pts > MAX_INNER_PTS:
            raise ValueError('n_inner_pts must be at most %d (the mining compares (n+1)^2 / 2 blocks per batch), '
                             'got %d' % (MAX_INNER_PTS, n_inner_pts))
        self.n_inner_pts = int(n_inner_pts)
        self.l2_norm = bool(l2_norm)

    def forward(self, embeddings, labels):
        if isinstance(labels, mx.nd.NDArray):
            check_pairs(labels, self.n_inner_pts)
        return super().forward(embeddings, labels)

    def hybrid_forward(self, F, embeddings, labels):
        n = self.n_inner_pts
        if n == 0:
            return embeddings, labels
        mate = partner(F, embeddings)
        # One op per group keeps the input's dtype (F.arange would force float32).
        points = F.concat(*[(k * mate + (n + 1 - k) * embeddings) / (n + 1) for k in range(1, n + 1)],
                          dim=0)                                       # (nB, d), group-major
        if self.l2_norm:
            points = F.L2Normalization(points, mode='instance', eps=L2_EPS)
        return F.concat(embeddings, points, dim=0), F.tile(labels, reps=(n + 1,))

    def factors(self, F, norm, cross):
        """The expanded points in factor form, without building them.

        norm: |e_i|^2 and cross: e_i . e_p(i), each (B,) (the diagonals of the originals' Gram
        matrix and of its partner permutation). Returns a list over groups k = 0..n of
        ``(A_k, B_k, sq_k)``, each (B,): the k-th point of row i is x_k(i) = A_k[i] e[i] + B_k[i] e[p(i)]
        and |x_k(i)|^2 = sq_k[i]. Group 0 is the originals.
        """
        n = self.n_inner_pts
        mate_norm = partner(F, norm)
        out = [(F.ones_like(norm), F.zeros_like(norm), norm)]
        for k in range(1, n + 1):
            a, b = (n + 1 - k) / (n + 1), k / (n + 1)
            q = a * a * norm + 2 * a * b * cross + b * b * mate_norm
            if self.l2_norm:
                scale = F.rsqrt(q + L2_EPS)
                out.append((a * scale, b * scale, q * F.square(scale)))
            else:
                out.append((F.ones_like(norm) * a, F.ones_like(norm) * b, q))
        return out
