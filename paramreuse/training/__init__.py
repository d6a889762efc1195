"""The one training loop (``loop``: train, evaluate, the few-shot recipe) and a resumable training run (``run``)."""

from paramreuse.training.loop import FEWSHOT, TrainConfig, evaluate, predict, train
from paramreuse.training.run import MODEL_FILE, TRAIN_FILE, RunSpec, run_training

__all__ = ["FEWSHOT", "MODEL_FILE", "TRAIN_FILE", "RunSpec", "TrainConfig", "evaluate", "predict", "run_training", "train"]
