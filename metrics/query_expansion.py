"""Average query expansion (QE) and database-side augmentation (DBA), exact and blocked.

Definitions (average form, no weights; similarity = inner product of the given embeddings):
  DBA K: every database item x_i becomes L2norm(x_i + sum of its K most similar *other* database
         items).
  QE K:  every query q becomes L2norm(q + sum of its K most similar database items), the database
         being the augmented one when DBA is asked too (neighbours found in it and their augmented
         vectors summed).
Self-retrieval (queries are the database items): an item is never its own neighbour, in either
step, and the expanded queries are then searched in the (augmented) database without their own
row.  Query/gallery (In-Shop): DBA of the gallery within the gallery, QE of each query over it.

Ties at the K-th similarity go to the lower database index, so the result is deterministic.
Memory: one (block, n) float32 similarity block at a time, never n x n.
"""
import numpy as np

from metrics.evaluation import RETRIEVAL_METRICS, evaluate, evaluate_query_gallery

# Similarity rows per block: about 64 MB of float32 scores, as metrics.evaluation's blocks.
_BLOCK_SCORES = 1 << 24


def top_k_rows(s, k, self_cols):
    """Columns (B, k) of the k largest entries per row of s (B, n), ties to the lower column.

    self_cols: (B,) column excluded per row (set to -inf in s), or None; k <= n (k < n with
    self_cols).  Each row's columns come in no particular order.
    """
    b, n = s.shape
    rows_b = np.arange(b)
    if self_cols is not None:
        s[rows_b, self_cols] = -np.inf
    # The k-th largest value per row by a value-only partition: cheaper than argpartition and
    # without its (B, n) int64 index array.  The items >= it are few (k, plus any tie).
    tau = np.partition(s, n - k, axis=1)[:, n - k]
    rows, cols = np.nonzero(s >= tau[:, None])
    tie = s[rows, cols] == tau[rows]
    # Per row: the items above tau, then the tied ones by column, the first k of them kept.
    order = np.lexsort((cols, tie, rows))
    rows, cols = rows[order], cols[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows_b)[rows]
    keep = rank < k
    top = np.empty((b, k), dtype=np.int64)
    top[rows[keep], rank[keep]] = cols[keep]
    return top


def neighbour_sum(queries, database, k, self_neighbours=False, block_size=None):
    """Each query plus the sum of its k most similar database rows; (m, d) float32.

    queries: (m, d), database: (n, d) float32; self_neighbours True: query i is database item i
    (m == n; the same item, possibly before augmentation) and never counts as its own neighbour.
    Blocks of block_size query rows.

    When queries is database (DBA) the k + 1 rows (self and neighbours) are added in increasing
    row order: DBA maps items with the same neighbourhood (mutual neighbours, common with small
    k) to the same vector, and a fixed order makes those copies bitwise equal, so that evaluation
    sees them as the exact ties they are rather than ordered by rounding.
    """
    m, n = queries.shape[0], database.shape[0]
    if block_size is None:
        block_size = max(1, min(m, _BLOCK_SCORES // max(n, 1)))
    out = np.empty(queries.shape, dtype=np.float32)
    buf = np.empty((min(block_size, m), n), dtype=np.float32)
    for lo in range(0, m, block_size):
        hi = min(lo + block_size, m)
        s = np.dot(queries[lo:hi], database.T, out=buf[:hi - lo])
        rows = top_k_rows(s, k, np.arange(lo, hi) if self_neighbours else None)
        acc = out[lo:hi]
        if queries is database:
            rows = np.sort(np.concatenate([np.arange(lo, hi)[:, None], rows], axis=1), axis=1)
            acc[:] = database[rows[:, 0]]
            rows = rows[:, 1:]
        else:
            acc[:] = queries[lo:hi]
        # One gather of (B, d) per neighbour, not a (B, k, d) temporary.
        for j in range(rows.shape[1]):
            acc += database[rows[:, j]]
    return out


def _l2norm(x):
    """(n, d) float32 rows scaled to unit length; the norm in float64 so that equal rows stay equal."""
    norm = np.sqrt(np.einsum('ij,ij->i', x, x, dtype=np.float64)).astype(np.float32)
    # A zero row (the item and its neighbours cancelling) stays zero instead of becoming NaN.
    return x / np.where(norm > 0, norm, np.float32(1.0))[:, None]


def _check_k(k, n_items, flag):
    if k is None or k == 0:
        return 0
    if int(k) != k or k < 0:
        raise ValueError('%s must be a non-negative integer, got %r' % (flag, k))
    if k > n_items:
        raise ValueError('%s %d asks for more neighbours than the %d other database items'
                         % (flag, k, n_items))
    return int(k)


def check_expansion(qe, dba, n_database, self_retrieval, names=('qe', 'dba')):
    """(qe, dba) as ints; ValueError (naming them as ``names``) when either is negative or asks for
    more neighbours than a database of ``n_database`` items has (itself left out when self_retrieval)."""
    return (_check_k(qe, n_database - (1 if self_retrieval else 0), names[0]),
            _check_k(dba, n_database - 1, names[1]))


def expand_queries_database(database, queries=None, qe=0, dba=0, block_size=None):
    """Apply DBA to the database, then QE to the queries; returns (queries', database').

    database: (n, d) embeddings (numpy or mx.nd); queries: (m, d) for query/gallery retrieval, or
    None for self-retrieval (the queries are the database items, never their own neighbours).
    qe, dba: K of each step, 0 to skip it.  Returns float32 numpy arrays, (m, d) or (n, d)
    queries and (n, d) database; a skipped step leaves its array as given (as float32).
    """
    self_retrieval = queries is None
    x = np.ascontiguousarray(getattr(database, 'asnumpy', lambda: database)(), dtype=np.float32)
    q = x if self_retrieval else np.ascontiguousarray(
        getattr(queries, 'asnumpy', lambda: queries)(), dtype=np.float32)
    # A NaN would match no threshold in top_k_rows and leave its neighbour slots unset.
    if not (np.isfinite(x).all() and np.isfinite(q).all()):
        raise ValueError('embeddings contain NaN or inf')
    qe, dba = check_expansion(qe, dba, x.shape[0], self_retrieval)
    if dba:
        x = _l2norm(neighbour_sum(x, x, dba, True, block_size))
    if qe:
        q = _l2norm(neighbour_sum(q, x, qe, self_retrieval, block_size))
    return q, x


def suffix(qe, dba):
    """Metric-name suffix of an expansion: '_qe', '_dba', '_qe_dba' ('' for none)."""
    return ''.join(part for part, k in (('_qe', qe), ('_dba', dba)) if k)


def evaluate_expanded(embeddings, labels, qe=0, dba=0, metrics=RETRIEVAL_METRICS,
                      recallk=(1, 2, 4, 8), ctx=None, block_size=None, query_emb=None,
                      query_labels=None):
    """Retrieval metrics after QE/DBA, keys suffixed with suffix(qe, dba), e.g. 'R@1_qe'.

    embeddings: (n, d) database (self-retrieval) or gallery, labels: (n,); query_emb (m, d) and
    query_labels (m,) for query/gallery.  metrics: the retrieval ones are used (clustering does
    not apply to an expanded query set).  Other arguments as metrics.evaluation.evaluate.
    """
    metrics = [m for m in metrics if m in RETRIEVAL_METRICS]
    if not metrics:
        return {}
    q, x = expand_queries_database(embeddings, query_emb, qe, dba, block_size)
    if query_emb is None:
        # With DBA alone the queries are still the original items, searched in the augmented set.
        result = evaluate(x, labels, metrics, recallk, ctx, block_size=block_size,
                          queries=q if qe or dba else None)
    else:
        result = evaluate_query_gallery(q, query_labels, x, labels, recallk, metrics, ctx,
                                        block_size)
    tag = suffix(qe, dba)
    return {key + tag: value for key, value in result.items()}
