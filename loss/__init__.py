"""Losses for deep metric learning, with Embedding Expansion (EE) as a reusable piece."""
from .embedding_expansion import EmbeddingExpansion
from .hphn_triplet import HPHNTripletLoss
from .proxy_anchor import ProxyAnchorLoss
from .see_proxy_anchor import SEEProxyAnchorLoss

# --loss names of main.py
LOSSES = {
    'hphn_triplet': HPHNTripletLoss,
    'proxy_anchor': ProxyAnchorLoss,
    'see_proxy_anchor': SEEProxyAnchorLoss,
}

__all__ = ['EmbeddingExpansion', 'HPHNTripletLoss', 'LOSSES', 'ProxyAnchorLoss', 'SEEProxyAnchorLoss']
