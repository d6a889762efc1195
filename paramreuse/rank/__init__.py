"""Transferability scores, features, and ranking of sources and layers."""
