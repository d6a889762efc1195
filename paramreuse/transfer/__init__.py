"""Reuse strategies and the seeds x shots transfer grid that proves a plan."""
