"""Spherical embedding expansion around the class proxy (SEE): SPEC section 5, vectorised over the batch.

For a unit embedding z and the unit proxy w of its class:

    M = (z.w) w,   r = z - M,   u1 = r / |r|
    v_1..v_n       n random directions, orthonormal and orthogonal to w and u1 (Gram-Schmidt)
    s_j = -u1 / n + sqrt((n+1)/n) (v_j - mean_k v_k),   j = 1..n
    x_j = M + |r| s_j

{u1, s_1..s_n} is a regular simplex (unit vectors, pairwise inner products -1/n) in the span of
{u1, v_1..v_n}, orthogonal to w, with u1 as a vertex. So every x_j is a unit vector at the same
cosine to w as z, spread evenly around the proxy axis. The release builds a similar simplex from
lower-triangular weights, one sample at a time, in a Python loop; here every step is one batched op,
and Gram-Schmidt loops over the n directions only.
"""
from mxnet.gluon import HybridBlock

# Below this |r|, z lies on the proxy axis (z = +-w up to rounding) and r has no usable direction.
PARALLEL_EPS = 1e-6


def orthonormalise(F, basis, g):
    """Gram-Schmidt of g (B, d) against the orthonormal rows of basis (B, k, d): a unit (B, d).

    Two passes ("twice is enough", Giraud et al. 2005) keep float32 rows orthogonal to ~1e-7.
    """
    for _ in range(2):
        coef = F.batch_dot(basis, F.expand_dims(g, 2))                              # (B, k, 1)
        g = g - F.reshape(F.batch_dot(basis, coef, transpose_a=True), (0, -1))      # (B, d)
    return F.L2Normalization(g, mode='instance')


class SphericalExpansion(HybridBlock):
    """``block(z (B, d), w (B, d)) -> x (B, n, d)``: n = ``n_expansion`` synthetic points per row.

    z are unit embeddings and w the unit proxies of their classes. Both are detached: the points
    carry no gradient. When z is parallel to w (|r| < 1e-6), u1 is a random direction orthogonal
    to w, so the points stay finite and lie within |r| of M (they equal M = z when z = +-w).
    """

    def __init__(self, n_expansion=8, **kwargs):
        super().__init__(**kwargs)
        if n_expansion < 1:
            raise ValueError('n_expansion must be >= 1, got %d' % n_expansion)
        self.n_expansion = int(n_expansion)

    def hybrid_forward(self, F, z, w):
        n = self.n_expansion
        z, w = F.BlockGrad(z), F.BlockGrad(w)
        M = F.broadcast_mul(F.sum(z * w, axis=1, keepdims=True), w)                 # (B, d)
        r = z - M
        r_norm = F.norm(r, axis=1, keepdims=True)                                   # (B, 1) = |r|
        # n+1 Gaussian rows in z's dtype: the first replaces r when z is on the proxy axis
        g = F.random.normal_like(F.tile(F.expand_dims(z, 1), reps=(1, n + 1, 1)))   # (B, n+1, d)
        g = F.split(g, num_outputs=n + 1, axis=1, squeeze_axis=True)
        r_dir = F.where(F.broadcast_like(r_norm > PARALLEL_EPS, r), r, g[0])
        basis = F.expand_dims(w, 1)                                                 # (B, 1, d)
        for k in range(n + 1):
            unit = orthonormalise(F, basis, r_dir if k == 0 else g[k])
            basis = F.concat(basis, F.expand_dims(unit, 1), dim=1)                  # (B, k+2, d)
        u1 = F.slice_axis(basis, axis=1, begin=1, end=2)                            # (B, 1, d)
        v = F.slice_axis(basis, axis=1, begin=2, end=None)                          # (B, n, d)
        s = F.broadcast_add(-u1 / n, ((n + 1.0) / n) ** 0.5 * F.broadcast_sub(v, F.mean(v, axis=1, keepdims=True)))
        return F.broadcast_add(F.expand_dims(M, 1), F.broadcast_mul(F.expand_dims(r_norm, 1), s))
