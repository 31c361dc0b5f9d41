"""The evaluation's front door: embeddings and labels in, a dict of metrics out (docs/evaluation.md).

Checks its inputs once, then hands the retrieval metrics to metrics/retrieval.py and the
clustering metrics to metrics/clustering.py.

Queries without any other same-label item (classes of size 1) never score for Recall@K and count in
its denominator, as in the official code; MAP@R and R-precision are undefined for them (R = 0), so
they are left out of those means.  K larger than the number of neighbours means "all neighbours".
"""
import numpy as np

from metrics.clustering import clustering_metrics
from metrics.retrieval import Gallery, retrieval_metrics

# retrieval metrics (also for queries against a separate gallery), then clustering metrics
RETRIEVAL_METRICS = ('recall', 'map_at_r', 'r_precision')
METRICS = RETRIEVAL_METRICS + ('nmi', 'f1')


def format_metrics(metrics):
    """'R@1 71.60  NMI 63.00' of a metrics dict (fractions), in its order: printed metrics are in
    percent with two decimals, as the papers and every command print them; files (TensorBoard, JSON)
    keep the fractions."""
    return '  '.join('%s %.2f' % (key, 100 * value) for key, value in metrics.items())


def _as_array(x, name, ndim, dtype):
    """Convert a numpy array or mx.nd.NDArray to a numpy array of ``ndim`` dimensions."""
    if hasattr(x, 'asnumpy'):
        x = x.asnumpy()
    x = np.asarray(x)
    if x.ndim != ndim:
        raise ValueError('%s must have %d dimensions, got shape %s' % (name, ndim, x.shape))
    return np.ascontiguousarray(x, dtype=dtype)


def _check_metrics(metrics, allowed):
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in allowed]
    if unknown:
        raise ValueError('unknown metric(s) %s; choose from %s' % (unknown, ', '.join(allowed)))
    return metrics


def _check_pair(emb, labels, name):
    """Embeddings (n, d) and labels (n,) must match, be non-empty and finite."""
    if emb.shape[0] != labels.shape[0]:
        raise ValueError('%s have %d rows but their labels have %d entries'
                         % (name, emb.shape[0], labels.shape[0]))
    if emb.shape[0] == 0:
        raise ValueError('%s are empty' % name)
    if not np.isfinite(emb).all():
        raise ValueError('%s contain NaN or inf' % name)


def _check_recallk(recallk):
    recallk = tuple(int(k) for k in recallk)
    if any(k < 1 for k in recallk):
        raise ValueError('recallk must be positive integers, got %s' % (recallk,))
    return recallk



def evaluate(embeddings, labels, metrics=('recall', 'nmi'), recallk=(1, 2, 4, 8), ctx=None,
             seed=0, block_size=None, queries=None):
    """Evaluate embeddings by self-retrieval (each item queries all others) and by clustering.

    embeddings: (n, d) float numpy array or mx.nd.NDArray; labels: (n,) ints.
    metrics: subset of METRICS; recallk: positive ints; ctx: None for numpy on the CPU, or an
    MXNet context for the block GEMM and reductions; seed: k-means seed; block_size: query rows
    per block (default: about 64 MB of float32 scores per block); queries: optional (n, d), row i
    queries all embeddings but row i (retrieval metrics only; metrics.query_expansion).
    Returns a dict of floats in [0, 1] with keys 'R@k' per k ('recall'), 'MAP@R', 'RP', 'NMI', 'F1'.
    """
    metrics = _check_metrics(metrics, METRICS)
    recallk = _check_recallk(recallk)
    emb = _as_array(embeddings, 'embeddings', 2, np.float32)
    labels = _as_array(labels, 'labels', 1, np.int64)
    _check_pair(emb, labels, 'embeddings')
    out = {}
    retrieval = [m for m in metrics if m in RETRIEVAL_METRICS]
    if retrieval:
        self_q = None if queries is None else _as_array(queries, 'queries', 2, np.float32)
        out.update(retrieval_metrics(Gallery(emb, labels), recallk, retrieval, ctx, block_size,
                              self_q=self_q))
    if 'nmi' in metrics or 'f1' in metrics:
        out.update(clustering_metrics(emb, labels, metrics, seed))
    return out


def evaluate_query_gallery(query_emb, query_labels, gallery_emb, gallery_labels,
                           recallk=(1, 10, 20, 30, 40, 50), metrics=('recall',), ctx=None,
                           block_size=None):
    """Retrieval of queries against a separate gallery (In-Shop); no item is excluded.

    query_emb: (m, d), query_labels: (m,), gallery_emb: (n, d), gallery_labels: (n,).
    metrics: subset of RETRIEVAL_METRICS; R = number of gallery items of the
    query's label.  Returns a dict of floats like evaluate().
    """
    metrics = _check_metrics(metrics, RETRIEVAL_METRICS)
    recallk = _check_recallk(recallk)
    q = _as_array(query_emb, 'query embeddings', 2, np.float32)
    ql = _as_array(query_labels, 'query labels', 1, np.int64)
    g = _as_array(gallery_emb, 'gallery embeddings', 2, np.float32)
    gl = _as_array(gallery_labels, 'gallery labels', 1, np.int64)
    _check_pair(q, ql, 'query embeddings')
    _check_pair(g, gl, 'gallery embeddings')
    if q.shape[1] != g.shape[1]:
        raise ValueError('query embeddings are %d-d but gallery embeddings are %d-d'
                         % (q.shape[1], g.shape[1]))
    return retrieval_metrics(Gallery(g, gl), recallk, metrics, ctx, block_size, q, ql)
