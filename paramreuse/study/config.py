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
from paramreuse.training.loop import FEWSHOT, TrainConfig, training_length, with_length
from paramreuse.transfer.config import TransferConfig
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
    channels: int | None = None  # convert the images to 1 (grey) or 3 (RGB) channels; None: as they are

    def __post_init__(self) -> None:
        if self.task is not None:
            check_choice("task", self.task, tuple(TASKS))
        check_at_least(self, ("shots", "limit_per_class", "size"), 1)
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels!r}")

    def spec(self, **options) -> DataSpec:
        """This side's data as :func:`paramreuse.data.load_task` arguments (what remote jobs load)."""
        return DataSpec.of(self.data, classes=self.classes, task=self.task, size=self.size, **self.conversion, **options)

    @property
    def conversion(self) -> dict:
        """The channel conversion as a :func:`~paramreuse.data.load_task` option (none when unset: specs stay as they were)."""
        return {} if self.channels is None else {"channels": self.channels}


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
        """What the study computes from: every field but ``run`` (how many jobs at once changes no result); a side's
        ``channels`` only when set (older run folders' fingerprints stay valid)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "run"}
        sides = {name: {k: v for k, v in dataclasses.asdict(getattr(self, name)).items() if k != "channels" or v is not None}
                 for name in ("source", "target")}  # fmt: skip
        return fields | sides | {"training": self.training.to_dict(), "transfer": self.transfer.to_dict()}


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


def full_length(training: StudyTraining, shots_images: int) -> TrainConfig:
    """T_full's training with the few-shot floor: at least as many optimiser steps as a few-shot training takes
    on the ``shots_images`` shots (a small full set trains longer than its epochs say); exact steps stay as asked."""
    full = training.full
    floor = training_length(training.fewshot, shots_images)[1]
    if full.steps is not None or full.min_steps >= floor:
        return full
    return dataclasses.replace(full, min_steps=floor)


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
    mismatch = pairing_mismatch(source, target)
    if mismatch:
        raise DataError(mismatch)
    return StudyData(source, target, full)


def pairing_mismatch(source: TaskData, target: TaskData) -> str | None:
    """What differs between S's and T's images (channels, size) and the option that makes them one; None if nothing."""
    differs, fixes = [], []
    if source.channels != target.channels:
        names = {1: "grey", 3: "RGB"}
        differs.append(f"source images have {source.channels} channel(s) ({names.get(source.channels, '?')}) but target "
                       f"images have {target.channels} ({names.get(target.channels, '?')})")  # fmt: skip
        fixes.append(f"convert both to one with --channels {target.channels} or --channels {source.channels} "
                     "(channels = N in [source] and [target])")  # fmt: skip
    if source.size != target.size:
        differs.append(f"source images are {source.size[0]}x{source.size[1]} pixels but target images are "
                       f"{target.size[0]}x{target.size[1]}")  # fmt: skip
        fixes.append(f"resize both with --size {max(target.size)} (size = N in [source] and [target])")
    return f"{'; '.join(differs)}: {' and '.join(fixes)}" if differs else None
