"""Alignment: channel spaces, per-operation rules, probes, permutation specs and matching."""
