"""What every data set loader returns: the split lists of ``(source, label)`` items."""
from typing import NamedTuple, Optional


class Splits(NamedTuple):
    """The splits of one data set; train and test are class-disjoint.

    train: training items with labels 0..C-1 (Proxy-Anchor indexes its proxies by label).
    test: every evaluation item; for In-Shop, query followed by gallery.
    query, gallery: None, except for data sets evaluated as queries against a separate gallery
        (In-Shop): then Recall@K ranks the gallery for each query, and test is only their union.
    """
    train: list
    test: list
    query: Optional[list] = None
    gallery: Optional[list] = None


def label_map(class_ids, start=0):
    """Each distinct class id -> start, start+1, ... in sorted id order."""
    return {cid: start + i for i, cid in enumerate(sorted(set(class_ids)))}
