"""Alignment: channel spaces, per-operation rules and their flow, probes, permutation specs and matching.

Independently trained networks are compared after their channels are matched (weight or activation
matching, Hungarian per layer, residual streams permuted consistently).
"""

from paramreuse.align.matching import AlignResult, UnitAlignment, activation_matching, align_models, weight_matching
from paramreuse.align.specs import AlignmentError, PermSpec, apply_permutation, permutation_spec, random_permutation

__all__ = ["AlignResult", "AlignmentError", "PermSpec", "UnitAlignment", "activation_matching", "align_models", "apply_permutation", "permutation_spec", "random_permutation", "weight_matching"]
