"""Retrieval metrics: Recall@K, MAP@R and R-precision, exact and blocked (docs/evaluation.md).

Queries are processed in blocks of rows against the whole gallery, so memory grows with
``block_size * n``, never ``n * n``.  Per block the numpy path does one GEMM and one pass of
minima over groups of columns; per-row thresholds derived from those minima pick the few groups
that can hold the items each metric needs (see _stats_numpy).  So the whole evaluation costs
little more than the GEMM X.X^T (BENCHMARKS.md).  With an MXNet context the GEMM, counts and
top-k run with mx.nd on that device (mxnet is imported only then).

Distances are squared Euclidean.  Per query row the code ranks by ``|x|^2 - 2 q.x``, which differs
from ``|q - x|^2`` by the per-row constant ``|q|^2`` and so gives the same order (up to float32
rounding, as any float32 evaluation).

Ties are scored fairly: the official EE code ranks with ``argpartition``/``argsort``, which
breaks ties arbitrarily, so a collapsed model (all embeddings equal) may score anything up to 1.
Every metric here is instead its exact expected value under a uniformly random order of the items
at exactly equal distance, in closed form (docs/evaluation.md, section 6.9, derives the formulas:
``_hit_probability`` for Recall@K, ``_map_and_rp`` for MAP@R and R-precision).  Identical
embeddings score at chance (10 classes x 10: R@1 = 9/99), and ties within one class (DBA's
copies of mutual neighbours) change nothing.  Untied embeddings score as under any tie rule.
When more than TIE_WARN_FRACTION of the queries have an item of another class tied with one of
their own at their deciding distance (nearest same-label item, R-th neighbour), one line goes to
stderr; it asks whether the embeddings collapsed only when more than COLLAPSE_WARN_FRACTION
("most") of the queries do.
"""
import sys

import numpy as np

# warn when more than this fraction of the queries is tied at its deciding distance (docs/evaluation.md 6.9)
TIE_WARN_FRACTION = 0.01
# "most" queries: above this fraction the warning asks whether the embeddings collapsed
COLLAPSE_WARN_FRACTION = 0.5


class Gallery(object):
    """The items searched, sorted by label so that each class is one contiguous column range.

    Attributes (n = number of gallery items, d = embedding size):
      xa: (n, d+1) float32, rows ``[-2 x, |x|^2]``; with query rows ``[q, 1]`` one GEMM gives the
          ranking score ``|x|^2 - 2 q.x`` without a separate pass over the (block, n) result.
      order: (n,) int, original index of each sorted column.
      labels: (n,) sorted labels.
      classes, start, count: the distinct labels, first column and size of each class.
    """

    def __init__(self, emb, labels):
        self.order = np.argsort(labels, kind='stable')
        self.labels = labels[self.order]
        x = emb[self.order]
        n, d = x.shape
        self.xa = np.empty((n, d + 1), dtype=np.float32)
        np.multiply(x, -2.0, out=self.xa[:, :d])
        self.xa[:, d] = np.einsum('ij,ij->i', x, x)
        self.classes, self.start, self.count = np.unique(
            self.labels, return_index=True, return_counts=True)

    def positives(self, query_labels):
        """First column and number of gallery items with each query's label; (m,), (m,)."""
        pos = np.searchsorted(self.classes, query_labels)
        pos_c = np.minimum(pos, len(self.classes) - 1)
        found = self.classes[pos_c] == query_labels
        return np.where(found, self.start[pos_c], 0), np.where(found, self.count[pos_c], 0)


def _augment_queries(q):
    """(m, d) queries -> (m, d+1) rows ``[q, 1]``."""
    qa = np.empty((q.shape[0], q.shape[1] + 1), dtype=np.float32)
    qa[:, :-1] = q
    qa[:, -1] = 1.0
    return qa


def _group_min(a, g):
    """Minima of (B, n) ``a`` over groups of columns; returns (B, n // g + n % g).

    Group j holds the g columns j, j+L, ..., j+(g-1)L with L = n // g (a strided view, so the
    reduction is g-1 elementwise minima of contiguous slabs: cheap); the n % g leftover columns
    are groups of one.  Only the fact that the groups partition the columns is used: if the
    k-th smallest group minimum is t, at least k items score <= t.
    """
    if g <= 1:
        return a
    b, n = a.shape
    size = n // g
    mins = a[:, :g * size].reshape(b, g, size).min(axis=1)
    return np.concatenate([mins, a[:, g * size:]], axis=1) if n % g else mins


# The numpy path gathers the members of the selected groups (about 16 bytes each with the flat
# index); beyond this fraction of the block (weak or collapsed embeddings: many items closer than
# the threshold, or huge exact ties) it falls back to argpartition, so the gather stays below
# about the size of the score block.
_MAX_CANDIDATE_FRACTION = 1.0 / 4


def _stats_plain(s, pos_vals, r, k_top):
    """Exact statistics by brute force: a full compare-and-count and an argpartition per row.

    s: (B, n) scores, self +inf; pos_vals: (B, P) same-label scores (+inf padding); r: (B,) R per
    row; returns n_closer, n_tied (B,), top_vals, top_cols (B, k_top), n_at_tau (B,) as
    _stats_numpy (the last three None when k_top is 0).  Costs about twice the GEMM.
    """
    pos_min = pos_vals.min(axis=1)
    n_pos_tied = np.count_nonzero(pos_vals == pos_min[:, None], axis=1)
    n_tied = np.count_nonzero(s == pos_min[:, None], axis=1) - n_pos_tied
    n_closer = np.count_nonzero(s < pos_min[:, None], axis=1)
    if not k_top:
        return n_closer, n_tied, None, None, None
    top_cols = np.argpartition(s, k_top - 1, axis=1)[:, :k_top]
    top_vals = np.take_along_axis(s, top_cols, axis=1)
    tau = np.sort(top_vals, axis=1)[np.arange(len(r)), np.maximum(r, 1) - 1]
    return n_closer, n_tied, top_vals, top_cols, np.count_nonzero(s == tau[:, None], axis=1)


def _stats_numpy(s, pos_vals, r, k_top, k_recall):
    """Recall counts and k_top nearest from a (B, n) score block, without a full partition.

    s: (B, n) scores, self already +inf; pos_vals: (B, P) scores of the other same-label items
    (+inf padding); r: (B,) R per row; k_top = max(r) or 0; k_recall = max K of Recall@K or 0.
    Returns n_closer, n_tied (B,), top_vals, top_cols (B, k_top), n_at_tau (B,) as in
    _block_stats, except that n_closer may be any value >= k_recall (and n_tied 0) when the
    nearest same-label item is provably beyond every K.

    Per row a threshold t selects candidates s <= t, read only from the groups (of g1 columns)
    whose minimum is <= t, so that after the GEMM only the group minimum reads all of s:
      Recall: t >= nearest same-label score; n_closer and n_tied are then counted among the
        candidates.
        Rows with at least k_recall group minima (groups of g1) strictly below that score have
        at least k_recall closer other-label items: they miss every K and need no candidates.
      MAP@R: t >= the R-th smallest score: the R-th smallest of coarser group minima (groups of
        g1*g2), or the farthest same-label score, whichever is smaller.
    Group sizes keep those bounds tight (several groups per needed item) and the partition of the
    (B, n/(g1*g2)) minima cheap.
    """
    b, n = s.shape
    pos_min = pos_vals.min(axis=1)
    n_pos_tied = np.count_nonzero(pos_vals == pos_min[:, None], axis=1)
    need = max(k_recall, k_top, 1)
    g1 = int(np.clip(n // (4 * need), 1, 16))
    mins = _group_min(s, g1)
    t = np.full(b, -np.inf, dtype=np.float32)
    n_closer = np.zeros(b, dtype=np.int64)
    n_tied = np.zeros(b, dtype=np.int64)
    exact = np.zeros(b, dtype=bool)
    if k_recall:
        n_closer = np.count_nonzero(mins < pos_min[:, None], axis=1)
        exact = (n_closer < k_recall) & np.isfinite(pos_min)
        t[exact] = pos_min[exact]
    if k_top:
        g2 = int(np.clip(mins.shape[1] // (8 * k_top), 1, 8))
        coarse = np.partition(_group_min(mins, g2), k_top - 1, axis=1)[:, :k_top]
        coarse.sort(axis=1)
        rows = r > 0
        # -inf of pos_vals' own dtype: numpy 2 (NEP 50) would make a bare -np.inf float64 here
        pos_max = np.where(np.isfinite(pos_vals), pos_vals, pos_vals.dtype.type(-np.inf)).max(axis=1)
        tau = np.full(b, -np.inf, dtype=np.float32)
        tau[rows] = np.minimum(coarse[rows, r[rows] - 1], pos_max[rows])
        t = np.maximum(t, tau)
    parts = _candidate_groups(s, mins, t, g1)
    if parts is None:
        return _stats_plain(s, pos_vals, r, k_top)
    if k_recall:
        closer = sum(np.bincount(rows_, np.count_nonzero(v < pos_min[rows_, None], axis=1), b)
                     for rows_, _, v in parts)
        tied = sum(np.bincount(rows_, np.count_nonzero(v == pos_min[rows_, None], axis=1), b)
                   for rows_, _, v in parts)
        n_tied[exact] = (tied - n_pos_tied)[exact]
        n_closer[exact] = closer[exact]
    if not k_top:
        return n_closer, n_tied, None, None, None
    return (n_closer, n_tied) + _top_from_candidates(parts, tau, r, k_top, b)


def _candidate_groups(s, mins, t, g1):
    """[(rows, cols, values)] of the members of every group whose minimum is <= t of its row:
    (groups, g1) for the regular groups, (groups, 1) for the leftover columns, one 2-d gather
    each, no per-member index arrays; None when they would exceed _MAX_CANDIDATE_FRACTION of s."""
    n = s.shape[1]
    sel_rows, sel_groups = np.divmod(np.flatnonzero(mins <= t[:, None]), mins.shape[1])
    size = n // g1
    regular = sel_groups < size
    if np.count_nonzero(regular) * g1 > _MAX_CANDIDATE_FRACTION * s.size:
        return None
    return [(rows_, cols_, s.reshape(-1).take(rows_[:, None] * n + cols_))
            for rows_, cols_ in ((sel_rows[regular], sel_groups[regular, None] + size * np.arange(g1)),
                                 (sel_rows[~regular], sel_groups[~regular, None] + (g1 - 1) * size))]


def _top_from_candidates(parts, tau, r, k_top, b):
    """(top_vals, top_cols (b, k_top), n_at_tau (b,)) from the candidate groups of _stats_numpy.

    parts: [(rows, cols, values)] of the selected groups; tau: (b,) threshold >= the R-th smallest
    score of each row, so every item at that score is a candidate and n_at_tau counts them all.
    """
    found = []
    for rows_, cols_, v in parts:
        group, member = np.nonzero(v <= tau[rows_, None])
        found.append((rows_[group], cols_[group, member], v[group, member]))
    rows, cols, vals = (np.concatenate(a) for a in zip(*found))
    order = np.lexsort((vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    first = np.searchsorted(rows, np.arange(b))
    rank = np.arange(len(rows)) - first[rows]
    keep = rank < k_top
    has_r = r > 0
    tau_r = np.full(b, np.nan, dtype=np.float32)
    tau_r[has_r] = vals[first[has_r] + r[has_r] - 1]
    n_at_tau = np.bincount(rows, vals == tau_r[rows], b).astype(np.int64)
    top_vals = np.full((b, k_top), np.inf, dtype=np.float32)
    top_cols = np.zeros((b, k_top), dtype=np.int64)
    top_vals[rows[keep], rank[keep]] = vals[keep]
    top_cols[rows[keep], rank[keep]] = cols[keep]
    return top_vals, top_cols, n_at_tau


def _block_stats(qa, xa, self_cols, pos_start, pos_count, r, k_top, k_recall, ctx, out=None):
    """Per-row statistics of one block of B queries against the whole gallery of n items.

    qa: (B, d+1) augmented queries; xa: (n, d+1) augmented gallery (numpy, or mx.nd on ctx);
    self_cols: (B,) column of each query itself in the gallery, or None (query/gallery mode);
    pos_start, pos_count: (B,) column range of each query's class in the gallery (self included);
    r: (B,) R per row; k_top: how many nearest neighbours to return per row (0: none);
    k_recall: largest K of Recall@K (0: recall not wanted); ctx: None for numpy, else the MXNet
    context of xa; out: optional (>= B, n) float32 numpy buffer for the scores.

    Returns numpy arrays:
      pos_vals: (B, P) scores of the query's class members, +inf for padding and for self;
      n_closer: (B,) number of items (self excluded) strictly closer than the nearest same-label
                item, all of other labels: ``a`` of docs/evaluation.md 6.9 (numpy path: any
                value >= k_recall once beyond every K);
      n_tied: (B,) number of other-label items at exactly its distance: ``t`` (numpy path: 0
                once beyond every K);
      top_vals, top_cols: (B, k_top) scores and columns of k_top nearest items (self excluded), in
                no particular order, +inf padded; ties at the boundary are cut arbitrarily;
      n_at_tau: (B,) number of items (self excluded) whose score equals the R-th smallest, r[i]
                of row i (None when k_top is 0).
    """
    b = qa.shape[0]
    n = xa.shape[0]
    p = max(int(pos_count.max()), 1)
    ar = np.arange(p)
    pos_pad = ar[None, :] >= pos_count[:, None]
    # Padding repeats a valid column (then masked with +inf) so one gather serves ragged classes.
    pos_cols = pos_start[:, None] + np.minimum(ar[None, :], np.maximum(pos_count - 1, 0)[:, None])
    if ctx is None:
        s = np.dot(qa, xa.T, out=None if out is None else out[:b])
        if self_cols is not None:
            s[np.arange(b), self_cols] = np.inf
        pos_vals = np.take_along_axis(s, pos_cols, axis=1)
        pos_vals[pos_pad] = np.inf
        return (pos_vals,) + _stats_numpy(s, pos_vals, r, k_top, k_recall)
    import mxnet as mx
    s = mx.nd.dot(mx.nd.array(qa, ctx=ctx), xa, transpose_b=True)
    if self_cols is not None:
        s = s + mx.nd.one_hot(mx.nd.array(self_cols, ctx=ctx), n, on_value=np.inf, off_value=0.0)
    flat = (np.arange(b)[:, None] * n + pos_cols).reshape(-1)
    pos_vals = mx.nd.take(s.reshape((-1,)), mx.nd.array(flat, ctx=ctx, dtype='int64'))
    pos_vals = pos_vals.reshape((b, p)) + mx.nd.array(np.where(pos_pad, np.inf, 0.0), ctx=ctx)
    pos_min = pos_vals.min(axis=1, keepdims=True)
    n_pos_tied = mx.nd.sum(mx.nd.broadcast_equal(pos_vals, pos_min), axis=1)
    n_tied = mx.nd.sum(mx.nd.broadcast_equal(s, pos_min), axis=1) - n_pos_tied
    n_closer = mx.nd.sum(mx.nd.broadcast_lesser(s, pos_min), axis=1)
    top_vals = top_cols = n_at_tau = None
    if k_top:
        top_vals, top_cols = mx.nd.topk(s, axis=1, k=k_top, ret_typ='both', is_ascend=True,
                                       dtype='int64')
        tau = mx.nd.pick(top_vals, mx.nd.array(np.maximum(r, 1) - 1, ctx=ctx), axis=1, keepdims=True)
        n_at_tau = mx.nd.sum(mx.nd.broadcast_equal(s, tau), axis=1).asnumpy().astype(np.int64)
        top_vals, top_cols = top_vals.asnumpy(), top_cols.asnumpy()
    return (pos_vals.asnumpy(), n_closer.asnumpy().astype(np.int64), n_tied.asnumpy().astype(np.int64),
            top_vals, top_cols, n_at_tau)


def _hit_probability(a, t, g, ks):
    """Expected Recall@K per query: the chance that a same-label item is among the K nearest when
    the items tied at the nearest same-label distance come in a uniformly random order.

    a, t, g: (m,) ints, per query: other-label items strictly closer than its nearest same-label
    item, other-label and same-label items at exactly that distance (g >= 1 where R >= 1);
    ks: the K values.  Returns (m, len(ks)) float64.

    docs/evaluation.md, section 6.9: with f = K - a free places, clipped to [0, t + 1], the query
    misses when all f go to other-label items, with probability prod_{i < f} (t - i) / (t + g - i)
    (the factor at i = t is 0: beyond t free places the hit is certain).
    """
    free = np.clip(np.asarray(ks, dtype=np.int64)[None, :] - a[:, None], 0, (t + 1)[:, None])
    miss = np.ones(free.shape)
    # One step per free place, over the rows with a place left: untied rows need at most one.
    for i in range(int(free.max(initial=0))):
        rows = np.flatnonzero((free > i).any(axis=1))
        step = (t[rows] - i) / np.maximum(t[rows] + g[rows] - i, 1)
        miss[rows] = np.where(free[rows] > i, miss[rows] * step[:, None], miss[rows])
    return 1.0 - miss


def _map_and_rp(pos_vals, top_vals, top_rel, r, n_at_tau):
    """Expected MAP@R and R-precision per row under a random order of tied items.

    pos_vals: (B, P) scores of the other same-label items (+inf padding);
    top_vals, top_rel: (B, k) scores and same-label flags of the k >= max(r) nearest neighbours;
    r: (B,) R per row, >= 1; n_at_tau: (B,) number of items at the R-th smallest score.
    Returns (B,) MAP@R, (B,) R-precision, (B,) whether the tie at the R-th smallest score mixes
    labels.

    docs/evaluation.md, section 6.9: the item at rank j + 1 lies in a tie group of m items, g of
    them same-label, which starts after p items of which H are same-label; it is same-label with
    probability g / m, and its expected rel * hits is (g / m) (H + 1 + (j - p) (g - 1) / (m - 1)).
    Groups closer than tau (the R-th smallest score) are whole in the list; the group at tau may
    be cut arbitrarily at the list's end, so its m is n_at_tau and its g comes from pos_vals.
    """
    b, k = top_vals.shape
    order = np.argsort(top_vals, axis=1, kind='stable')
    sv = np.take_along_axis(top_vals, order, axis=1)
    srel = np.take_along_axis(top_rel, order, axis=1)
    j = np.arange(k)[None, :]
    tau = sv[np.arange(b), r - 1]
    new = np.ones((b, k), dtype=bool)
    new[:, 1:] = sv[:, 1:] != sv[:, :-1]
    last = np.ones((b, k), dtype=bool)
    last[:, :-1] = new[:, 1:]
    start = np.maximum.accumulate(np.where(new, j, 0), axis=1)
    end = np.minimum.accumulate(np.where(last, j, k)[:, ::-1], axis=1)[:, ::-1]
    hits = np.zeros((b, k + 1), dtype=np.int64)
    np.cumsum(srel, axis=1, out=hits[:, 1:])
    h = np.take_along_axis(hits, start, axis=1)
    g = np.take_along_axis(hits, end + 1, axis=1) - h
    m = end + 1 - start
    at_tau = sv == tau[:, None]
    g = np.where(at_tau, np.count_nonzero(pos_vals == tau[:, None], axis=1)[:, None], g)
    m = np.where(at_tau, n_at_tau[:, None], m)
    inside = j < r[:, None]
    p_rel = g / m
    share = (g - 1) / np.maximum(m - 1, 1)      # m = 1: multiplied by j - start = 0
    ap = np.where(inside, p_rel * (h + 1 + (j - start) * share) / (j + 1), 0.0).sum(axis=1) / r
    rp = np.where(inside, p_rel, 0.0).sum(axis=1) / r
    return ap, rp, ((g > 0) & (g < m) & at_tau).any(axis=1)


def retrieval_metrics(gallery, recallk, metrics, ctx, block_size, q=None, q_labels=None, self_q=None):
    """Recall@K / MAP@R / R-precision of queries against a prepared Gallery.

    q: (m, d) queries and q_labels: (m,), or None for self-retrieval: every gallery item queries
    all others (its own column excluded).  self_q: (n, d) in the gallery's original row order,
    self-retrieval with these rows as the queries instead of the gallery's own (query expansion).
    Returns a dict of Python floats.
    """
    self_retrieval = q is None
    if self_retrieval:
        q_labels = gallery.labels
    else:
        # Label-sorted queries: a block then holds few classes, which keeps the per-block top-R
        # list (max R in the block) short.
        order = np.argsort(q_labels, kind='stable')
        q, q_labels = q[order], q_labels[order]
    m = len(q_labels)
    n = gallery.xa.shape[0]
    want_map = 'map_at_r' in metrics or 'r_precision' in metrics
    pos_start, pos_count = gallery.positives(q_labels)
    r_all = pos_count - (1 if self_retrieval else 0)
    if block_size is None:
        block_size = max(1, min(m, (1 << 24) // max(n, 1)))
    if ctx is None:
        xa = gallery.xa
    else:
        import mxnet as mx
        xa = mx.nd.array(gallery.xa, ctx=ctx)
    k_recall = max(recallk) if 'recall' in metrics else 0
    # One score buffer for all blocks: a fresh (B, n) array per block would pay page faults.
    buf = np.empty((min(block_size, m), n), dtype=np.float32) if ctx is None else None
    # a, t, g of _hit_probability per query
    closer, tied, pos_tied = (np.zeros(m, dtype=np.int64) for _ in range(3))
    map_tie = np.zeros(m, dtype=bool)
    ap_sum = rp_sum = 0.0
    for lo in range(0, m, block_size):
        hi = min(lo + block_size, m)
        r = r_all[lo:hi]
        k_top = int(r.max()) if want_map and r.max() > 0 else 0
        if self_q is not None:
            qa = _augment_queries(self_q[gallery.order[lo:hi]])
        elif self_retrieval:
            # The gallery rows are the queries: recover [x, 1] from [-2x, |x|^2] (exact scaling)
            # instead of keeping a second copy of the embeddings.
            qa = gallery.xa[lo:hi] * np.float32(-0.5)
            qa[:, -1] = 1.0
        else:
            qa = _augment_queries(q[lo:hi])
        pos_vals, closer[lo:hi], tied[lo:hi], top_vals, top_cols, n_at_tau = _block_stats(
            qa, xa, np.arange(lo, hi) if self_retrieval else None,
            pos_start[lo:hi], pos_count[lo:hi], r, k_top, k_recall, ctx, buf)
        pos_tied[lo:hi] = np.count_nonzero(pos_vals == pos_vals.min(axis=1)[:, None], axis=1)
        if k_top:
            has = r > 0
            top_rel = gallery.labels[top_cols[has]] == q_labels[lo:hi][has][:, None]
            ap, rp, mixed = _map_and_rp(pos_vals[has], top_vals[has], top_rel, r[has], n_at_tau[has])
            ap_sum += ap.sum()
            rp_sum += rp.sum()
            map_tie[lo:hi][has] = mixed
    out = {}
    recall_tie = np.zeros(m, dtype=bool)
    if k_recall:
        valid = r_all > 0
        ks = np.asarray(recallk)
        hit = np.zeros((m, len(ks)))
        hit[valid] = _hit_probability(closer[valid], tied[valid], pos_tied[valid], ks)
        # The order of the tie matters for Recall@K when K falls inside it (a < K <= a + t).
        recall_tie = valid & ((closer[:, None] < ks) & (ks <= (closer + tied)[:, None])).any(axis=1)
        for i, k in enumerate(recallk):
            out['R@%d' % k] = float(hit[:, i].sum() / m)
    _warn_ties(int(np.count_nonzero(recall_tie | map_tie)), m)
    n_valid = int(np.count_nonzero(r_all > 0))
    if 'map_at_r' in metrics:
        out['MAP@R'] = float(ap_sum / n_valid) if n_valid else 0.0
    if 'r_precision' in metrics:
        out['RP'] = float(rp_sum / n_valid) if n_valid else 0.0
    return out


def _warn_ties(n_tied, m):
    """One stderr line when more than TIE_WARN_FRACTION of the m queries are tied at their deciding
    distance; it suggests a collapse only when more than COLLAPSE_WARN_FRACTION ("most") are."""
    if m and n_tied > TIE_WARN_FRACTION * m:
        print('warning: %d of %d queries (%.1f%%) have an item of another class tied with one of '
              'their own at the distance deciding a metric; they score the average over every order%s'
              % (n_tied, m, 100.0 * n_tied / m,
                 ' (most queries: are the embeddings collapsed?)'
                 if n_tied > COLLAPSE_WARN_FRACTION * m else ''),
              file=sys.stderr)
