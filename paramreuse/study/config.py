"""The study's configuration (S, the target, training, transfer, thresholds) and its data."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from paramreuse.align.matching import METHODS
from paramreuse.backends import DataSpec
from paramreuse.config import ConfigError, check_at_least, check_choice, one_length
from paramreuse.data import TaskData
from paramreuse.errors import DataError
from paramreuse.judge.replacement import SweepConfig
from paramreuse.judge.verdicts import Thresholds
from paramreuse.tasks import TASKS
from paramreuse.training.loop import TrainConfig, with_length
from paramreuse.transfer.grid import FEWSHOT, TransferConfig
from paramreuse.vocabulary import BUDGETS, Budget

ALIGNMENTS = ("auto", *METHODS)


@dataclass(frozen=True)
class DataConfig:
    """One side of the study: data set, classes, how much of it to use, the task and the image size.

    ``task``: classification, segmentation, segmentation-dice or reconstruction; default: the
    data's own (segmentation for data with masks). ``size``: resize images (and masks) to
    ``size`` x ``size`` pixels, e.g. 32 for smp encoders that need sides divisible by 32.
    """

    data: str | None = "fashion-mnist"
    classes: str = "0-4"
    shots: int | None = None
    limit_per_class: int | None = None
    task: str | None = None
    size: int | None = None
    checkpoint: str | None = None  # [source] only: an existing S (file or pretrained spec); not trained, no data read

    def __post_init__(self) -> None:
        if self.task is not None:
            check_choice("task", self.task, tuple(TASKS))
        check_at_least(self, ("shots", "limit_per_class", "size"), 1)

    def spec(self, **options) -> DataSpec:
        """This side's data as :func:`paramreuse.data.load_task` arguments (what remote jobs load)."""
        return DataSpec.of(self.data, classes=self.classes, task=self.task, size=self.size, **options)


@dataclass(frozen=True)
class StudyTraining:
    """Training settings per stage: S on the source, few-shot T and T_scratch, and T_full.

    ``epochs``, ``steps`` and ``min_steps`` (the ``[training]`` table's own keys; ``--epochs``,
    ``--steps``, ``--min-steps``) set the length of every few-shot training on the target shots:
    T, T_scratch, the cross-fitted evidence of the plan and every transfer run. ``epochs`` counts
    passes over the shots and ``min_steps`` may raise it; ``steps`` is the exact number of
    optimiser steps. Unset, each keeps its table's ([training.fewshot], [transfer.training]).
    S and T_full keep [training.source] and [training.full].
    """

    source: TrainConfig = TrainConfig(epochs=4, batch_size=128, lr=2e-3)
    fewshot: TrainConfig = FEWSHOT
    full: TrainConfig = TrainConfig(epochs=3, batch_size=128, lr=1e-3)
    epochs: int | None = None
    steps: int | None = None
    min_steps: int | None = None

    def __post_init__(self) -> None:
        check_at_least(self, ("epochs", "steps"), 1)
        check_at_least(self, ("min_steps",), 0)
        one_length(self.epochs, self.steps)

    def to_dict(self) -> dict:
        """The fields; the length keys only when set (older run folders' fingerprints stay valid)."""
        stages = {name: getattr(self, name).to_dict() for name in ("source", "fewshot", "full")}
        return stages | {k: v for k, v in self.asked().items() if v is not None}

    def asked(self) -> dict:
        """The target trainings' length as the user set it (None: not set)."""
        return {"epochs": self.epochs, "steps": self.steps, "min_steps": self.min_steps}

    def applied(self, config: TrainConfig) -> TrainConfig:
        """A few-shot training ``config`` with the asked length, when one is set."""
        return with_length(config, **self.asked())


@dataclass(frozen=True)
class RunOptions:
    """How the study runs, not what it computes (left out of its fingerprint): ``jobs`` trainings at once in
    worker processes (1: one at a time in this process; unset: ``--jobs``, ``$PARAMREUSE_JOBS``, else one per
    usable core; docs/speed.md)."""

    jobs: int | None = None

    def __post_init__(self) -> None:
        check_at_least(self, ("jobs",), 1)


@dataclass(frozen=True)
class StudyConfig:
    """The default: Fashion-MNIST classes 0-4 as source, classes 5-9 with 10 shots as target.

    ``budget``: the labelled target images every judgement may use. ``shots`` (default): only
    the target shots; T is judged by cross-fitting on them and the transfer grid makes the plan
    from each run's shots. ``validation-set``: plus a carved validation set (10% of each class,
    up to 500 images), far more labels than a few-shot user has; a labelled reference.
    """

    arch: str = "builtin:cnn"
    seed: int = 0
    source: DataConfig = DataConfig(classes="0-4")
    target: DataConfig = DataConfig(classes="5-9", shots=10)
    full_limit_per_class: int | None = None
    test_per_class: int | None = None
    val_per_class: int | None = None
    data_dir: str | None = None
    align: str = "auto"
    training: StudyTraining = field(default_factory=StudyTraining)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    thresholds: Thresholds = field(default_factory=Thresholds)
    transfer: TransferConfig = field(default_factory=lambda: TransferConfig(shots=(), seeds=5))
    budget: str = "shots"
    run: RunOptions = RunOptions()

    def __post_init__(self) -> None:
        check_choice("budget", self.budget, BUDGETS)
        check_choice("align", self.align, ALIGNMENTS)

    def to_dict(self) -> dict:
        """What the study computes from: every field but ``run`` (how many jobs at once changes no result)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "run"}
        return fields | {"training": self.training.to_dict(), "transfer": self.transfer.to_dict()}


def quick(config: StudyConfig) -> StudyConfig:
    """A shrunk study: fewer source and full-target images, shorter training, a smaller test set."""
    fewshot = dataclasses.replace(config.training.fewshot, min_steps=min(config.training.fewshot.min_steps, 80))
    return dataclasses.replace(
        config,
        source=dataclasses.replace(config.source, limit_per_class=config.source.limit_per_class or 1000),
        full_limit_per_class=config.full_limit_per_class or 1000,
        test_per_class=config.test_per_class or 400,
        transfer=dataclasses.replace(config.transfer, seeds=min(config.transfer.seeds, 2), training=fewshot),
        training=dataclasses.replace(
            config.training,
            source=dataclasses.replace(config.training.source, epochs=min(config.training.source.epochs, 3)),
            fewshot=fewshot,
            full=dataclasses.replace(config.training.full, epochs=min(config.training.full.epochs, 2)),
        ),
    )


def apply_length(config: StudyConfig) -> StudyConfig:
    """The config with ``[training]``'s asked length applied to every few-shot training (T, T_scratch, transfer)."""
    tr = config.training
    transfer = dataclasses.replace(config.transfer, training=tr.applied(config.transfer.training))
    return dataclasses.replace(config, training=dataclasses.replace(tr, fewshot=tr.applied(tr.fewshot)), transfer=transfer)


@dataclass(frozen=True, eq=False)
class StudyData:
    source: TaskData | None  # None when S is given (``source.checkpoint``) without source data
    target: TaskData
    target_full: TaskData


def _common(config: StudyConfig) -> dict:
    return {"seed": config.seed, "test_per_class": config.test_per_class, "val_per_class": config.val_per_class,
            "data_dir": config.data_dir}  # fmt: skip


def target_spec(config: StudyConfig) -> DataSpec:
    """The study's few-shot target as a spec that remote jobs load (what ``load_study_data`` loads).

    With the shots budget the target has no validation set: only the shots are labelled.
    """
    common = _common(config) | Budget(config.budget).data_options
    return config.target.spec(shots=config.target.shots, limit_per_class=config.target.limit_per_class, **common)


def load_study_data(config: StudyConfig) -> StudyData:
    src = config.source
    target = target_spec(config).load()
    full = config.target.spec(shots=None, limit_per_class=config.full_limit_per_class, **_common(config)).load()
    if src.checkpoint is not None:  # S is given: it is not trained, so no source data are needed
        return StudyData(None, target, full)
    if not src.data:
        raise ConfigError("[source] needs data (a data set to train S on) or checkpoint (an existing S); give one")
    source = src.spec(shots=src.shots, limit_per_class=src.limit_per_class, **_common(config)).load()
    if source.channels != target.channels or source.size != target.size:
        raise DataError(
            f"source images are {source.channels}x{source.size[0]}x{source.size[1]} but target images are "
            f"{target.channels}x{target.size[0]}x{target.size[1]}; set the same size in [source] and [target]"
        )
    return StudyData(source, target, full)
