"""Tasks: what the head outputs, the loss, and the metric (torchmetrics), with its direction."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchmetrics


@dataclass(frozen=True)
class Task:
    """A task knows its loss and its metric, including whether higher is better and its units."""

    name: str
    metric_name: str
    higher_is_better: bool
    units: str

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.name == "classification":
            return F.cross_entropy(outputs, targets)
        raise NotImplementedError(self.name)

    def scores(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-sample scores whose mean is the metric (for paired bootstrap CIs and early stopping)."""
        if self.name == "classification":
            return (outputs.argmax(1) == targets).to(torch.float64)
        raise NotImplementedError(self.name)

    def metric(self, num_classes: int) -> torchmetrics.Metric:
        if self.name == "classification":
            return torchmetrics.classification.MulticlassAccuracy(num_classes=num_classes, average="micro")
        raise NotImplementedError(self.name)


CLASSIFICATION = Task("classification", "accuracy", higher_is_better=True, units="fraction")
TASKS = {t.name: t for t in (CLASSIFICATION,)}


def get_task(name: str) -> Task:
    from paramreuse.errors import SpecError

    if name not in TASKS:
        raise SpecError(f"unknown task {name!r}; use one of {', '.join(TASKS)}")
    return TASKS[name]
