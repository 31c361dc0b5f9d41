"""Losses for deep metric learning, with Embedding Expansion (EE) as a reusable piece."""
from .embedding_expansion import EmbeddingExpansion
from .hphn_triplet import HPHNTripletLoss
from .proxy_anchor import ProxyAnchorLoss

# --loss names of main.py
LOSSES = {
    'hphn_triplet': HPHNTripletLoss,
    'proxy_anchor': ProxyAnchorLoss,
}

__all__ = ['EmbeddingExpansion', 'HPHNTripletLoss', 'LOSSES', 'ProxyAnchorLoss']
