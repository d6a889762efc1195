import pytest
import torch

from paramreuse.stats import difference_bounds, t_interval
from paramreuse.tasks import CLASSIFICATION, RECONSTRUCTION, SEGMENTATION, TASKS, metric_bounds


def test_every_task_knows_its_metric_bounds():
    assert CLASSIFICATION.bounds == (0.0, 1.0) and SEGMENTATION.bounds == (0.0, 1.0)
    assert SEGMENTATION.extra_bounds == (0.0, 1.0) and RECONSTRUCTION.extra_bounds == (-1.0, 1.0)
    assert RECONSTRUCTION.bounds is None and metric_bounds("unknown") is None
    assert all(task.higher_is_better for task in TASKS.values())
    assert difference_bounds(CLASSIFICATION.bounds) == (-1.0, 1.0)


@pytest.mark.parametrize("task", [CLASSIFICATION, SEGMENTATION])
def test_per_image_scores_lie_inside_the_bounds(task):
    gen = torch.Generator().manual_seed(0)
    outputs = torch.randn(16, 3, 8, 8, generator=gen) if task is SEGMENTATION else torch.randn(16, 3, generator=gen)
    shape = (16, 8, 8) if task is SEGMENTATION else (16,)
    scores = task.scores(outputs, torch.randint(0, 3, shape, generator=gen))
    low, high = task.bounds
    assert bool(((scores >= low) & (scores <= high)).all())
    lo, hi = t_interval([1.0, 0.9, 1.0], task.bounds)
    assert low <= lo and hi == high
