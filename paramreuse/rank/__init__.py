"""Transferability scores (LogME, LEEP, NCE, H-score, ...), features, and ranking of sources and layers."""

from paramreuse.rank.ranking import Ranking, rank_layers, rank_sources
from paramreuse.rank.scores import SCORES, register_score

__all__ = ["SCORES", "Ranking", "rank_layers", "rank_sources", "register_score"]
