"""Metrics of embeddings: retrieval (Recall@K, MAP@R, R-precision), clustering (NMI, F1) and
query expansion / database augmentation. Plain numpy (and scikit-learn for k-means); MXNet is
imported only when a context is given."""
from metrics.evaluation import METRICS, RETRIEVAL_METRICS, evaluate, evaluate_query_gallery, format_metrics  # noqa: F401
