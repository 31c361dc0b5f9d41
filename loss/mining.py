"""Distances and hard negative pair mining over an expanded batch: docs/mining.md.

Group of original i: G(i) = {e[i]} U {s_k(i), k = 1..n}. The mined B x B matrices are

    Dn[i, j] = min_{a in G(i), b in G(j)} D(a, b)        Sn[i, j] = max_{a in G(i), b in G(j)} a.b

with D(a, b) = sqrt(clip(|a|^2 + |b|^2 - 2 a.b, 1e-12, 1e12)). Positive terms of every loss read the
originals' block (D, S); negative terms read Dn or Sn. With n_inner_pts = 0, Dn = D and Sn = S.

Why not build the (n+1)B points and one (n+1)B x (n+1)B matrix, as the official code does: each
synthetic point is A e[i] + B e[p(i)] (EmbeddingExpansion.factors), so every block of the big Gram
matrix is a weighted sum of four B x B matrices (G and its row/column partner permutations). One
B x B GEMM replaces an (n+1)^2 times larger one, and the min/max over the (n+1)^2 blocks is a chain
of elementwise minimum/maximum, whose gradient reaches exactly one block (MXNet's reduce-min would
pass it to every tied element, and every synthetic point stands twice in the expanded batch).
"""
from functools import reduce

from .embedding_expansion import partner

CLIP_MIN, CLIP_MAX = 1e-12, 1e12


def outer(F, u, v):
    """u[i] * v[j] (R, C) from u (R,), v (C,): a rank-1 GEMM, whose backward is far cheaper in MXNet
    than broadcast_mul's (a generic reduction)."""
    return F.dot(u.expand_dims(1), v.expand_dims(0))


def outer_sum(F, u, v):
    """u[i] + v[j] (R, C) from u (R,), v (C,), as a rank-2 GEMM for the same reason."""
    return F.dot(F.stack(u, F.ones_like(u), axis=1), F.stack(F.ones_like(v), v, axis=1), transpose_b=True)


def euclidean(F, sq_rows, sq_cols, gram):
    """D from squared norms (R,), (C,) and inner products (R, C) -> (R, C)."""
    return F.sqrt(F.clip(outer_sum(F, sq_rows, sq_cols) - 2 * gram, CLIP_MIN, CLIP_MAX))


def hard_min(F, x, axis=1):
    """min along ``axis`` whose gradient goes to one element only (the first minimum)."""
    return F.pick(x, F.argmin(x, axis=axis), axis=axis)


def hard_max(F, x, axis=1):
    """max along ``axis`` whose gradient goes to one element only (the first maximum)."""
    return F.pick(x, F.argmax(x, axis=axis), axis=axis)


def _mine(F, expansion, gram, squared_distances):
    """The closest pair of every two groups, split by the source of b = x_l(j): returns
    (from_original, from_synthetic), each (B, B), over the blocks l = 0 and over the blocks l >= 1.

    squared_distances: True mines the minimum of |x_k(i)|^2 + |x_l(j)|^2 - 2 x_k(i).x_l(j) (D^2),
    False the maximum of x_k(i).x_l(j). ``gram`` is the originals' E E^T (B, B).
    """
    pick = F.minimum if squared_distances else F.maximum
    scale = -2.0 if squared_distances else 1.0
    g_pe = partner(F, gram)               # e[p(i)] . e[j]
    # norms and pair products from the Gram matrix: reductions over d are slow in MXNet
    factors = expansion.factors(F, F.diag(gram), F.diag(g_pe))
    g_ep = F.transpose(g_pe)              # e[i] . e[p(j)]
    g_pp = partner(F, g_ep)               # e[p(i)] . e[p(j)]
    ones = F.ones_like(factors[0][2])
    # x_k(i) . x_l(j) = A_k[i] * cols_l[i, j] + B_k[i] * pcols_l[i, j]
    cols, pcols = [gram], [g_pe]
    for a_l, b_l, _ in factors[1:]:
        a_l, b_l = outer(F, ones, a_l), outer(F, ones, b_l)
        cols.append(gram * a_l + g_ep * b_l)
        pcols.append(g_pe * a_l + g_pp * b_l)
    # Block (l, k) is block (k, l) transposed: compute k <= l only, transpose where needed.
    block = {}
    for k, (a_k, b_k, sq_k) in enumerate(factors):
        if k:
            a_k, b_k = outer(F, scale * a_k, ones), outer(F, scale * b_k, ones)
        for l in range(k, len(factors)):
            if k == 0:
                g = scale * cols[l] if squared_distances else cols[l]
            else:
                g = a_k * cols[l] + b_k * pcols[l]
            if squared_distances:
                g = g + outer_sum(F, sq_k, factors[l][2])
            block[k, l] = g
    n = expansion.n_inner_pts
    # b original: blocks (k, 0) = (0, k) transposed
    from_original = pick(block[0, 0], F.transpose(reduce(pick, [block[0, l] for l in range(1, n + 1)])))
    # b synthetic: blocks (k, l), l >= 1, as computed for k <= l, transposed for 1 <= l < k
    from_synthetic = reduce(pick, [block[k, l] for k in range(n + 1) for l in range(max(k, 1), n + 1)])
    if n > 1:
        lower = reduce(pick, [block[k, l] for k in range(1, n + 1) for l in range(k + 1, n + 1)])
        from_synthetic = pick(from_synthetic, F.transpose(lower))
    return from_original, from_synthetic


def _originals(F, embeddings):
    """(E E^T, D) of the originals, each (B, B)."""
    gram = F.dot(embeddings, embeddings, transpose_b=True)
    sq = F.diag(gram)                     # |e_i|^2, without a slow reduction over d
    return gram, euclidean(F, sq, sq, gram)


def _distance(F, d2):
    return F.sqrt(F.clip(d2, CLIP_MIN, CLIP_MAX))


def mined_distances(F, expansion, embeddings):
    """(D, Dn), each (B, B): distances among the originals and the mined negative-pair distances.

    embeddings: (B, d) originals e; expansion: an EmbeddingExpansion (its n_inner_pts and l2_norm).
    """
    gram, dist = _originals(F, embeddings)
    if expansion.n_inner_pts == 0:
        return dist, dist
    # sqrt and clip are monotone: the min of D is D of the min of D^2
    return dist, _distance(F, F.minimum(*_mine(F, expansion, gram, squared_distances=True)))


def mined_distances_by_source(F, expansion, embeddings):
    """(D, Dn_original, Dn_synthetic), each (B, B): as mined_distances, with Dn split by the source
    of the point b of G(j) in the closest pair: an original (b = e[j]) or a synthetic point; Dn is
    their minimum. Needs n_inner_pts >= 1.
    """
    gram, dist = _originals(F, embeddings)
    from_original, from_synthetic = _mine(F, expansion, gram, squared_distances=True)
    return dist, _distance(F, from_original), _distance(F, from_synthetic)


def mined_similarities(F, expansion, embeddings):
    """(S, Sn), each (B, B): inner products among the originals and the mined (largest) ones."""
    gram = F.dot(embeddings, embeddings, transpose_b=True)
    if expansion.n_inner_pts == 0:
        return gram, gram
    return gram, F.maximum(*_mine(F, expansion, gram, squared_distances=False))


def label_masks(F, labels):
    """(same, diff), each (B, B) float: 1 where labels[i] == labels[j] (resp. !=)."""
    same = F.broadcast_equal(labels.expand_dims(1), labels.expand_dims(0))
    return same, 1 - same


def pair_masks(F, labels):
    """(positive, negative), each (B, B) float: positive pairs j != i of one label, negative pairs."""
    same, diff = label_masks(F, labels)
    index = F.contrib.arange_like(labels)
    return same - F.broadcast_equal(index.expand_dims(1), index.expand_dims(0)), diff
