"""Spherical embedding expansion around the class proxy (SEE): SPEC section 5, vectorised over the batch.

For a unit embedding z and the unit proxy w of its class:

    M = (z.w) w,   r = z - M,   u1 = r / |r|
    v_1..v_n       n random directions, orthonormal and orthogonal to w and u1
    s_j = -u1 / n + sqrt((n+1)/n) (v_j - mean_k v_k),   j = 1..n
    x_j = M + |r| s_j

{u1, s_1..s_n} is a regular simplex (unit vectors, pairwise inner products -1/n) in the span of
{u1, v_1..v_n}, orthogonal to w, with u1 as a vertex. So every x_j is a unit vector at the same
cosine to w as z, spread evenly around the proxy axis. The release builds a similar simplex from
lower-triangular weights and Gram-Schmidt, one sample and one vector at a time, in Python; here the
n directions of all rows come from one batched QR: Gaussian vectors with w and u1 projected out,
orthonormalised by Cholesky QR (V = G L^-T for G^T G = L L^T), done twice so that float32 rows stay
orthogonal to ~1e-7 ("twice is enough", Fukaya et al. 2014).
"""
import mxnet as mx
from mxnet.gluon import HybridBlock

# L2Normalization's epsilon for u1: r / sqrt(|r|^2 + eps) is unit for |r| >> 1e-10 and 0 for r = 0.
TINY = 1e-20


def cholesky_qr(F, g):
    """Columns of g (B, d, n) -> orthonormal columns spanning the same space: g L^-T, g^T g = L L^T."""
    gram = F.batch_dot(g, g, transpose_a=True)                                       # (B, n, n)
    return F.linalg.trsm(F.linalg.potrf(gram), g, transpose=True, rightside=True)


class SphericalExpansion(HybridBlock):
    """``block(z (B, d), w (B, d)) -> x (B, n, d)``: n = ``n_expansion`` synthetic points per row.

    z are unit embeddings and w the unit proxies of their classes, d >= n + 2. Both are detached:
    the points carry no gradient. When z is parallel to w (r = 0), u1 = 0 and the points collapse
    to M = z; for tiny |r| they stay within |r| of M.
    """

    def __init__(self, n_expansion=8, **kwargs):
        super().__init__(**kwargs)
        if n_expansion < 1:
            raise ValueError('n_expansion must be >= 1, got %d' % n_expansion)
        self.n_expansion = int(n_expansion)

    def forward(self, z, w):
        if isinstance(z, mx.nd.NDArray) and z.shape[1] < self.n_expansion + 2:
            raise ValueError('%d directions orthogonal to the proxy and to z need embeddings of at least %d '
                             'dimensions, got %d' % (self.n_expansion, self.n_expansion + 2, z.shape[1]))
        return super().forward(z, w)

    def hybrid_forward(self, F, z, w):
        n = self.n_expansion
        z, w = F.BlockGrad(z), F.BlockGrad(w)
        M = F.broadcast_mul(F.sum(z * w, axis=1, keepdims=True), w)                       # (B, d)
        r = z - M
        r_norm = F.norm(r, axis=1, keepdims=True)                                         # (B, 1) = |r|
        # r projected off w once more: rounding leaves ~1e-7 of w in it, which u1 must not carry
        u1 = F.L2Normalization(r - F.broadcast_mul(F.sum(r * w, axis=1, keepdims=True), w), eps=TINY)
        axes = F.stack(w, u1, axis=1)                                                      # (B, 2, d)
        # n Gaussian columns per row, in z's dtype (the samplers without a template give float32)
        g = F.random.normal_like(F.broadcast_axis(F.expand_dims(z, 2), axis=2, size=n))   # (B, d, n)
        g = g - F.batch_dot(axes, F.batch_dot(axes, g), transpose_a=True)                 # off w and u1
        v = cholesky_qr(F, cholesky_qr(F, g))                                             # (B, d, n)
        # |r| sqrt((n+1)/n) (v_j - mean_k v_k) for all j as one product with the centring matrix
        ones = F.reshape(F.ones_like(F.slice_axis(g, axis=1, begin=0, end=1)), (0, -1))    # (B, n)
        centring = F.linalg.makediag(ones) - 1.0 / n                                      # (B, n, n)
        spread = F.batch_dot(F.broadcast_mul(centring, F.reshape(((n + 1.0) / n) ** 0.5 * r_norm, (-1, 1, 1))),
                             v, transpose_b=True)                                         # (B, n, d)
        # M + |r| s_j = M - |r| u1 / n + spread_j
        return F.broadcast_add(F.expand_dims(M - F.broadcast_mul(r_norm, u1) / n, 1), spread)
