"""paramreuse: which parameters of a trained CNN can be reused for a new task, and how much it helps."""

from paramreuse.data import TaskData, load_task, parse_classes
from paramreuse.devices import resolve_device
from paramreuse.errors import CheckpointError, DataError, ParamreuseError, PlanError, SpecError
from paramreuse.models import ModelInfo, build_model, load_checkpoint, save_checkpoint
from paramreuse.study import StudyConfig, run_study
from paramreuse.tasks import get_task
from paramreuse.training.loop import TrainConfig, evaluate, train
from paramreuse.training.run import RunSpec, run_training
from paramreuse.transfer.reuse import AppliedPlan, apply_plan, load_plan, param_groups
from paramreuse.version import __version__

__all__ = [
    "AppliedPlan",
    "CheckpointError",
    "DataError",
    "ModelInfo",
    "ParamreuseError",
    "PlanError",
    "RunSpec",
    "SpecError",
    "StudyConfig",
    "TaskData",
    "TrainConfig",
    "__version__",
    "apply_plan",
    "build_model",
    "evaluate",
    "get_task",
    "load_checkpoint",
    "load_plan",
    "load_task",
    "param_groups",
    "parse_classes",
    "resolve_device",
    "run_study",
    "run_training",
    "save_checkpoint",
    "train",
]
