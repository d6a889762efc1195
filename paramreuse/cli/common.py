"""What every verb shares: options, clean errors (exit 2), output formats, the progress bar."""

from __future__ import annotations

import functools
import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from paramreuse.errors import ParamreuseError
from paramreuse.results import json_safe  # the same rules as the result files: NaN -> null
from paramreuse.train import ProgressEvent

err = Console(stderr=True)
out_console = Console()


class Format(str, Enum):
    human = "human"
    json = "json"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder for results (created if missing).")]
FormatOpt = Annotated[Format, typer.Option("--format", help="human: tables; json: machine-readable result on stdout.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for sampling, initialisation and training order.")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto uses CUDA when present, else the CPU.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Folder with the Fashion-MNIST IDX files (else $PARAMREUSE_DATA).")
]


def clean_errors(fn: Callable) -> Callable:
    """Turn bad-input errors into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ParamreuseError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted; finished stages are on disk and a re-run resumes from them")
            raise typer.Exit(130) from None

    return wrapper


class ProgressBar:
    """A rich progress bar fed by the library's ProgressEvent callbacks, one row per stage."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err,
            disable=not enabled,
        )
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> "ProgressBar":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: ProgressEvent) -> None:
        if event.stage not in self.tasks:
            self.tasks[event.stage] = self.progress.add_task(event.stage, total=event.total, info="")
        info = "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in event.info.items())
        self.progress.update(self.tasks[event.stage], completed=event.completed, total=event.total, info=info)


def emit(result: dict, fmt: Format, human: Callable[[Console], None], quiet: bool = False) -> None:
    """Print ``result`` as JSON (alone on stdout, as the result files store it), or call ``human``, unless quiet."""
    if fmt is Format.json:
        print(json.dumps(json_safe(result), indent=2, default=str))
    elif not quiet:
        human(out_console)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    return t


ArchOpt = Annotated[
    str | None, typer.Option("--arch", help="Architecture of plain state-dict checkpoints (paramreuse files record it).")
]
AlignOpt = Annotated[
    str, typer.Option("--align", help="auto: align independent pairs by weight matching; none|weights|activations.")
]
LineageOpt = Annotated[
    str | None, typer.Option("--lineage", help="State the pair's lineage (finetuned|independent) instead of detecting it.")
]
ClassesOpt = Annotated[str | None, typer.Option("--classes", help="Target classes, e.g. 5-9 or 5,6,7 (default: all).")]
ShotsOpt = Annotated[int | None, typer.Option("--shots", help="Target training images per class (BN recalibration data).")]


def load_models(source: Path, target: Path, arch: str | None):
    """Load S and T; ``--arch`` applies to plain state dicts (and confirms a recorded py: spec)."""
    from paramreuse.models import load_checkpoint, read_info

    models = []
    for path in (source, target):
        recorded = read_info(path) if path.suffix == ".safetensors" and path.is_file() else None
        models.append(load_checkpoint(path, arch=None if recorded and arch is None else arch)[0].eval())
    return models[0], models[1]


def layer_table(comparison: dict) -> Table:
    rows = [
        [r["name"], r["kind"], "x".join(map(str, r["shape"])), r["rmse_raw"], r["rmse"], r["rmse_normalized"],
         r["rmse_null"], r["null_position"]]
        for r in comparison["layers"]
    ]  # fmt: skip
    columns = ["unit", "kind", "shape", "rmse_raw", "rmse", "rmse_normalized", "rmse_null", "rmse/null"]
    return table(f"Kernel distances (lineage {comparison['lineage']}, alignment {comparison['alignment']['method']})", columns, rows)


TaskOpt = Annotated[
    str | None,
    typer.Option("--task", help="classification, segmentation, segmentation-dice (Dice loss) or reconstruction; "
                 "default: segmentation for data with masks, else classification (or the target checkpoint's task)."),
]  # fmt: skip
SizeOpt = Annotated[
    int | None, typer.Option("--size", help="Resize images (and masks) to SIZE x SIZE, e.g. 32 for smp encoders.")
]


def target_data(data: str, classes, shots, seed: int, data_dir, task: str | None, size: int | None, target: Path | None = None):
    """Load the target data; the task and image size default to what the target checkpoint records."""
    return target_spec(data, classes, shots, seed, data_dir, task, size, target).load()


def target_spec(data: str, classes, shots, seed: int, data_dir, task: str | None, size: int | None, target: Path | None = None):
    """The target data as a spec (what :func:`target_data` loads), for jobs that load it themselves."""
    from paramreuse.executor import DataSpec
    from paramreuse.models import read_info

    info = read_info(target) if target is not None and target.suffix == ".safetensors" and target.is_file() else None
    if info is not None:
        task = task or (info.task if info.task != "classification" else None)
        size = size or (info.input_size[0] if info.input_size[0] == info.input_size[1] else None)
    return DataSpec.of(data, classes=classes, shots=shots, seed=seed, data_dir=data_dir, task=task, size=size)


class Backend(str, Enum):
    local = "local"
    ray = "ray"


BackendOpt = Annotated[
    Backend,
    typer.Option("--backend", help="Where independent jobs run: local (this process) or ray (Ray tasks; "
                 "pip install 'paramreuse\\[ray]'; see docs/ray.md)."),
]  # fmt: skip
AddressOpt = Annotated[
    str | None,
    typer.Option("--address", help="With --backend ray: the cluster to join (HOST:6379, or auto); "
                 "default: a new local Ray instance."),
]  # fmt: skip
CpusPerJobOpt = Annotated[
    float, typer.Option("--cpus-per-job", help="With --backend ray: CPUs (torch threads) each job reserves.")
]
GpusPerJobOpt = Annotated[
    float | None,
    typer.Option("--gpus-per-job", help="With --backend ray: GPUs each job reserves "
                 "(default: 1 with a CUDA --device, else 0)."),
]  # fmt: skip


def open_executor(backend: Backend, address: str | None, cpus_per_job: float, gpus_per_job: float | None, device):
    """The executor the options ask for (a context manager: a Ray instance it starts is shut down after)."""
    from paramreuse.executor import make_executor

    return make_executor(backend.value, address, cpus_per_job, gpus_per_job, device)
