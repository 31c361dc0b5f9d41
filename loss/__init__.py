"""Losses for deep metric learning, with Embedding Expansion (EE) as a reusable piece."""
from .embedding_expansion import EmbeddingExpansion
from .hphn_triplet import HPHNTripletLoss
from .lifted_structure import LiftedStructureLoss
from .multi_similarity import MultiSimilarityLoss
from .npair import NPairLoss
from .proxy_anchor import ProxyAnchorLoss
from .see_proxy_anchor import SEEProxyAnchorLoss
from .triplet import TripletLoss
from .registry import LOSSES, build_loss

__all__ = ['EmbeddingExpansion', 'HPHNTripletLoss', 'LiftedStructureLoss', 'LOSSES', 'MultiSimilarityLoss',
           'NPairLoss', 'ProxyAnchorLoss', 'SEEProxyAnchorLoss', 'TripletLoss', 'build_loss']
