"""Clustering metrics: k-means on the embeddings, then NMI and the pairwise F1 (docs/evaluation.md)."""
import numpy as np

# Above this many clusters k-means++ seeding is skipped: sklearn seeds one centre at a time with
# a small GEMM against all n points, which took over 14 minutes at SOP scale (11,316 clusters) on
# 2 cores, against about 17 s for random seeding plus Lloyd (BENCHMARKS.md).
_KMEANS_PP_MAX_CLUSTERS = 1000


def kmeans_assign(emb, n_clusters, seed=0):
    """Cluster (n, d) embeddings into n_clusters with sklearn's Lloyd k-means; returns (n,) ids.

    One initialisation (n_init=1) keeps CARS/CUB-scale clustering near one second.  Up to
    _KMEANS_PP_MAX_CLUSTERS clusters: k-means++ seeding, up to 300 iterations (sklearn's defaults).
    Beyond (SOP): random seeding and at most 10 Lloyd iterations of about 8 s each at SOP scale;
    MiniBatchKMeans was both slower and far worse there.
    """
    from sklearn.cluster import KMeans
    if n_clusters <= _KMEANS_PP_MAX_CLUSTERS:
        km = KMeans(n_clusters=n_clusters, init='k-means++', n_init=1, random_state=seed)
    else:
        km = KMeans(n_clusters=n_clusters, init='random', n_init=1, max_iter=10,
                    random_state=seed)
    return km.fit_predict(emb)


def pairwise_f1(labels, clusters):
    """Pairwise F-measure of a clustering; labels, clusters: (n,) ints.

    A pair is predicted positive when both items share a cluster, truly positive when they share a
    class.  Counted from the sparse contingency table: O(n) instead of O(n^2) pairs.
    """
    from sklearn.metrics.cluster import contingency_matrix
    cont = contingency_matrix(labels, clusters, sparse=True)

    def pairs(c):
        c = np.asarray(c, dtype=np.float64)
        return float((c * (c - 1) / 2).sum())

    tp = pairs(cont.data)
    pred_pos = pairs(np.asarray(cont.sum(axis=0)).ravel())
    true_pos = pairs(np.asarray(cont.sum(axis=1)).ravel())
    precision = tp / pred_pos if pred_pos else 0.0
    recall = tp / true_pos if true_pos else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def clustering_metrics(emb, labels, metrics, seed=0):
    """'NMI' and/or 'F1' (as listed in ``metrics``) of k-means with one cluster per class.

    emb: (n, d) float32; labels: (n,) ints; seed: k-means seed.  Returns a dict of floats.
    """
    from sklearn.metrics import normalized_mutual_info_score
    clusters = kmeans_assign(emb, len(np.unique(labels)), seed)
    out = {}
    if 'nmi' in metrics:
        out['NMI'] = float(normalized_mutual_info_score(labels, clusters))
    if 'f1' in metrics:
        out['F1'] = float(pairwise_f1(labels, clusters))
    return out
