"""The package version (pyproject.toml states the same; every run folder records it)."""

__version__ = "0.1.0"
