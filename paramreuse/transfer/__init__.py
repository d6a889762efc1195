"""Reuse strategies (a plan applied to a model, and the baselines) and the seeds x shots transfer grid that proves a plan."""

from paramreuse.transfer.config import Source, TransferConfig
from paramreuse.transfer.grid import run_transfer
from paramreuse.transfer.strategies import STRATEGIES, Strategy, lr_scales, strategy, transplant

__all__ = ["STRATEGIES", "Source", "Strategy", "TransferConfig", "lr_scales", "run_transfer", "strategy", "transplant"]
