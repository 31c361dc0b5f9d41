"""Losses for deep metric learning, with Embedding Expansion (EE) as a reusable piece."""
from .embedding_expansion import EmbeddingExpansion
from .hphn_triplet import HPHNTripletLoss

# --loss names of main.py
LOSSES = {
    'hphn_triplet': HPHNTripletLoss,
}

__all__ = ['EmbeddingExpansion', 'HPHNTripletLoss', 'LOSSES']
