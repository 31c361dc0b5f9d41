"""Spherical embedding expansion around the class proxy (SEE): docs/see.md, vectorised over the batch.

For a unit embedding z and the unit proxy w of its class, docs/see.md builds

    M = (z.w) w,   r = z - M,   u1 = r / |r|
    v_1..v_n       n random orthonormal directions, orthogonal to w and u1 (Haar-distributed)
    s_j = -u1 / n + sqrt((n+1)/n) (v_j - mean_k v_k),   j = 1..n
    x_j = M + |r| s_j

{u1, s_1..s_n} is a regular simplex (unit vectors, pairwise inner products -1/n) orthogonal to w with
u1 as a vertex, so every x_j is a unit vector at the same cosine to w as z, spread evenly around the
proxy axis.

Here n - 1 random directions suffice, not n. In rows, (v_j - mean v)_j = H V with V the (n, d) frame
and H = I - 1 1^T / n. H = T T^T for the fixed (n, n-1) matrix T of ``simplex_matrix`` (orthonormal
columns spanning the complement of 1), so H V = T (T^T V). T^T V are the first n - 1 rows of O^T V
for the orthogonal O = [T, 1/sqrt(n)], and a Haar frame stays Haar under a fixed orthogonal mixing of
its vectors; so U = T^T V is a Haar (n-1)-frame orthogonal to w and u1, and conversely the points
M + |r| (-u1/n + sqrt((n+1)/n) T U) built from any Haar (n-1)-frame U have exactly the distribution
of the construction as docs/see.md section 5.3 writes it (tests/test_spherical_expansion.py compares the two). That is 1/n fewer
random numbers and a smaller QR. Fewer still would gain little: the (n-1)-frames of the (d-2)-dim
complement form a manifold of dimension (n-1)(d-2) - n(n-1)/2, within 1% of the (n-1) d numbers drawn
at d = 512; and the loss needs the points in full, as the proxies' gradient depends on all their
coordinates, not only on their cosines.

U comes from Gaussian rows with w and u1 projected out, orthonormalised by Cholesky QR (U = L^-1 G for
G G^T = L L^T). Any distribution of G invariant under rotations of the complement gives a Haar U, as
the QR commutes with those rotations; i.i.d. Gaussian entries are the simplest such. The QR is done
twice so that float32 rows stay orthogonal to ~1e-7 even for d close to n ("twice is enough", Fukaya
et al. 2014); the second L^-1 is applied together with T, as one small (n, n-1) factor.
"""
import numpy as np
import mxnet as mx
from mxnet.gluon import HybridBlock

# L2Normalization's epsilon for u1: r / sqrt(|r|^2 + eps) is unit for |r| >> 1e-10 and 0 for r = 0.
TINY = 1e-20


def gaussian(shape, dtype=np.float32, ctx=None):
    """An NDArray of i.i.d. N(0, 1) of ``shape`` (float32 or float64), drawn by NumPy: a PCG64 stream
    seeded from NumPy's global generator, so ``np.random.seed`` repeats it (main.py seeds it per worker).

    Box-Muller with both outputs of each pair, exact: for independent uniforms u, v on [0, 1),
    sqrt(-2 log(1 - u)) (cos 2 pi v, sin 2 pi v) are two independent standard normals. u is float64
    (53 bits, so |g| reaches 8.6 sigma), v in ``dtype``; log, cos and sin run vectorised in ``dtype``,
    several times cheaper than MXNet's CPU Gaussian sampler (bench/see_bench.py).
    """
    size = int(np.prod(shape))
    half = (size + 1) // 2
    rng = np.random.Generator(np.random.PCG64(np.random.randint(2 ** 32, size=4, dtype=np.uint64)))
    u = rng.random(half)
    radius = np.log(np.subtract(1, u, out=u).astype(dtype))      # in place where possible: ~10% faster
    np.sqrt(np.multiply(radius, -2, out=radius), out=radius)
    angle = np.multiply(rng.random(half, dtype=dtype), 2 * np.pi, dtype=dtype)
    out = np.empty((2, half), dtype)
    np.multiply(np.cos(angle, out=out[0]), radius, out=out[0])
    np.multiply(np.sin(angle, out=out[1]), radius, out=out[1])
    return mx.nd.array(out.reshape(-1)[:size].reshape(shape), ctx=ctx, dtype=dtype)


def row_dots(F, a, b):
    """``sum(a * b, axis=1, keepdims=True)`` of (k, d) arrays, as a product with ones: MXNet's CPU
    reductions are ~3x slower."""
    return F.dot(a * b, F.ones_like(F.slice_axis(a, axis=0, begin=0, end=1)), transpose_b=True)


def orthonormal_rows(F, g):
    """Rows of g (k, m, d) -> orthonormal rows spanning the same space: L^-1 g for g g^T = L L^T."""
    return F.linalg.trsm(F.linalg.potrf(F.batch_dot(g, g, transpose_b=True)), g)


def simplex_matrix(F, like, n):
    """T (k, n, n-1), the same for every row of ``like`` (k, n-1, n-1): rows t_j = e_j - 1/(n + sqrt n)
    for j < n and t_n = -1/sqrt(n) (all entries), so that T^T T = I and T T^T = I - 1 1^T / n.

    For orthonormal rows U (n-1, d), T U are the centred vertices of a regular simplex, each of norm
    sqrt((n-1)/n) (module docstring).
    """
    ones = F.ones_like(F.slice_axis(like, axis=1, begin=0, end=1))                        # (k, 1, n-1)
    return F.concat(F.linalg.makediag(F.reshape(ones, (0, -1))) - 1 / (n + n ** 0.5), ones / -n ** 0.5, dim=1)


def expansion_basis(F, z, w, noise, n):
    """The n synthetic points of each row as ``batch_dot(weights, basis)``: (k, n, n) x (k, n, d).

    z, w (k, d) unit embeddings and own proxies (detached by the caller); ``noise`` (k, n-1, d) standard
    normal, None for n = 1. The basis is n-1 orthonormal rows U orthogonal to w and u1, then the centre
    M - |r| u1 / n; the weights are |r| sqrt((n+1)/n) T on U and 1 on the centre (n = 1: the centre
    M - |r| u1 with weight 1). Products with the basis, the points' or their cosines to the proxies,
    are one batch_dot each; the centre rides along instead of a broadcast add, which is slow here.
    """
    M = F.broadcast_mul(row_dots(F, z, w), w)                                             # (k, d)
    r = z - M
    r_norm = F.sqrt(row_dots(F, r, r))                                                    # (k, 1) = |r|
    # r projected off w once more: rounding leaves ~1e-7 of w in it, which u1 must not carry
    u1 = F.L2Normalization(r - F.broadcast_mul(row_dots(F, r, w), w), eps=TINY)
    centre = F.expand_dims(M - F.broadcast_mul(r_norm, u1) / n, 1)                        # (k, 1, d)
    if n == 1:
        return F.ones_like(F.slice_axis(centre, axis=2, begin=0, end=1)), centre
    axes = F.stack(w, u1, axis=1)                                                          # (k, 2, d)
    u = orthonormal_rows(F, noise - F.batch_dot(F.batch_dot(noise, axes, transpose_b=True), axes))
    # The second Cholesky QR pass, L^-1 u, is applied with the simplex as the small factor T L^-1
    second = F.linalg.potrf(F.batch_dot(u, u, transpose_b=True))                          # (k, n-1, n-1)
    mix = F.linalg.trsm(second, simplex_matrix(F, second, n), rightside=True)             # (k, n, n-1)
    scale = F.reshape(((n + 1.0) / n) ** 0.5 * r_norm, (-1, 1, 1))                         # (k, 1, 1)
    ones = F.ones_like(F.slice_axis(mix, axis=2, begin=0, end=1))                         # (k, n, 1)
    return F.concat(F.broadcast_mul(mix, scale), ones, dim=2), F.concat(u, centre, dim=1)


class SphericalExpansion(HybridBlock):
    """``block(z (B, d), w (B, d)) -> x (B, n, d)``: n = ``n_expansion`` synthetic points per row.

    z are unit embeddings and w the unit proxies of their classes (NDArrays: the block draws its random
    numbers, by ``gaussian`` from NumPy's global generator, before running its graph), d >= n + 2 (the
    w, u1 and n directions of docs/see.md section 5.3). Both are detached: the points carry no gradient. When z is parallel
    to w (r = 0), u1 = 0 and the points collapse to M = z; for tiny |r| they stay within |r| of M.
    """

    def __init__(self, n_expansion=8, **kwargs):
        super().__init__(**kwargs)
        if n_expansion < 1:
            raise ValueError('n_expansion must be >= 1, got %d' % n_expansion)
        self.n_expansion = int(n_expansion)

    def forward(self, z, w):
        n = self.n_expansion
        if z.shape[1] < n + 2:
            raise ValueError('%d directions orthogonal to the proxy and to z need embeddings of at least %d '
                             'dimensions, got %d' % (n, n + 2, z.shape[1]))
        if n == 1:
            return super().forward(z, w)
        return super().forward(z, w, gaussian((z.shape[0], n - 1, z.shape[1]), z.dtype, z.context))

    def hybrid_forward(self, F, z, w, noise=None):
        return F.batch_dot(*expansion_basis(F, F.BlockGrad(z), F.BlockGrad(w), noise, self.n_expansion))
