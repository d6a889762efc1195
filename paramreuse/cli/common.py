"""What every verb shares: options, clean errors (exit 2), output formats; the progress bar is in progress_bar."""

from __future__ import annotations

import functools
import inspect
import json
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from torch import nn

from paramreuse.backends import DataSpec, make_executor, own_threads
from paramreuse.cli.tables import FittedTable, table
from paramreuse.cores import CORES_VARIABLE, own_cores
from paramreuse.errors import ParamreuseError, SpecError
from paramreuse.models import is_pretrained, read_info
from paramreuse.models.loading import check_one_architecture, check_takes, fit_to, load_source
from paramreuse.report import Answer
from paramreuse.results import json_safe  # the same rules as the result files: NaN -> null
from paramreuse.transfer.config import Source

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


def on_own_cores(fn: Callable) -> Callable:
    """Run a verb that computes on the free cores of the machine's core budget (paramreuse.cores): at least one, up
    to every usable core (``OMP_NUM_THREADS``, when set); beside other runs it waits for a core rather than
    share one. Under :func:`clean_errors`, so that Ctrl-C while it waits ends cleanly."""

    def waiting() -> None:
        err.print(f"waiting for a free core: other paramreuse runs on this machine use them all "
                  f"({CORES_VARIABLE}=off runs at once, sharing them)", highlight=False)  # fmt: skip

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with own_cores(own_threads(), on_wait=waiting):
            return fn(*args, **kwargs)

    return wrapper


LOAD_HINT = "load it with `paramreuse train --init FILE` or paramreuse.load_checkpoint(FILE)"


def print_model(console: Console, what: str, path: str | Path) -> None:
    """Where a trained model is (its path whole, never folded), and how to load it: two lines within 80 columns."""
    console.print(f"{what}: {path}", highlight=False, soft_wrap=True)
    console.print(LOAD_HINT, highlight=False)


def print_answer(console: Console, box: Answer) -> None:
    """The first box, closing the output: a rule, then one labelled line each, wrapped at spaces within the
    console's width (80 in a pipe), continued two spaces in; a path or a call longer than a line stays whole."""
    console.rule("The answer", align="left", style="bold")
    for label, text in box.lines():
        lines = textwrap.wrap(f"{label}: {text}", width=console.width, subsequent_indent="  ", break_long_words=False,
                              break_on_hyphens=False)  # fmt: skip
        lines[0] = f"[bold]{escape(label)}:[/]{escape(lines[0][len(label) + 1 :])}"
        for line in lines:
            console.print(line if line is lines[0] else escape(line), highlight=False, soft_wrap=True)


def emit(result: dict, fmt: Format, human: Callable[[Console], None], quiet: bool = False) -> None:
    """Print ``result`` as JSON (alone on stdout, as the result files store it), or call ``human``, unless quiet."""
    if fmt is Format.json:
        print(json.dumps(json_safe(result), indent=2, default=str))
    elif not quiet:
        human(out_console)


ArchOpt = Annotated[
    str | None,
    typer.Option("--arch", help="Architecture of plain state dicts (.safetensors/.pt/.pth, any key order; paramreuse "
                 "files record it), e.g. torchvision:resnet18 or py:net.py:build."),
]  # fmt: skip
AlignOpt = Annotated[
    str, typer.Option("--align", help="auto: align independent pairs by weight matching; none|weights|activations.")
]
LineageOpt = Annotated[
    str | None, typer.Option("--lineage", help="State the pair's lineage (finetuned|independent) instead of detecting it.")
]
ClassesOpt = Annotated[str | None, typer.Option("--classes", help="Target classes, e.g. 5-9, 5,6,7 or class names such as Sandal,Shirt or cat,dog (default: all).")]
ShotsOpt = Annotated[int | None, typer.Option("--shots", help="Target training images per class (BN recalibration data).")]
InputSizeOpt = Annotated[
    str | None,
    typer.Option("--input-size", help="Image size a plain state dict's network takes, N or H,W (default: recorded, "
                 "else 28); with --data the data's size is used."),
]  # fmt: skip
SOURCE_HELP = ("a paramreuse checkpoint, a plain state dict with --arch, or pretrained weights from the local cache: "
               "torchvision:NAME?weights=DEFAULT or timm:NAME?pretrained=true")  # fmt: skip


STEPS_HELP = "Exactly N optimiser steps instead of --epochs (no floor; the last epoch may stop part-way)."
MIN_STEPS_HELP = "Raise --epochs until training takes at least this many optimiser steps (0: never)."


def check_length(epochs: int | None, steps: int | None, min_steps: int | None) -> None:
    """Refuse a training length that cannot be meant: a count below 1 (0 for --min-steps), or both
    --epochs and --steps."""
    for flag, value, low in (("--epochs", epochs, 1), ("--steps", steps, 1), ("--min-steps", min_steps, 0)):
        if value is not None and value < low:
            raise SpecError(f"{flag} must be at least {low}, got {value}")
    if epochs is not None and steps is not None:
        raise SpecError(f"--epochs {epochs} and --steps {steps} both given; give one: --epochs counts passes over "
                        "the training images (--min-steps may raise it), --steps exact optimiser steps")  # fmt: skip


def parse_input_size(text: str | None) -> tuple[int, int] | None:
    """``N`` or ``H,W`` as (H, W)."""
    if text is None:
        return None
    try:
        sides = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        sides = ()
    if len(sides) not in (1, 2) or min(sides) < 1:
        raise SpecError(f"--input-size takes N or H,W in pixels, e.g. 32 or 24,40, got {text!r}")
    return (sides[0], sides[-1])


@dataclass(frozen=True, eq=False)
class Pair:
    """S and T as the pair verbs compare them, and what was changed to pair them."""

    source: Any
    target: Any
    notes: tuple[str, ...]
    input_size: tuple[int, int]
    channels: int  # T's
    source_channels: int
    arch: str = ""  # T's architecture spec (S is built the same way)


def source_for_data(source: str | Path, arch: str | None, channels: Callable[[], int]) -> tuple[nn.Module, Source]:
    """S as a verb that trains from it reads it (``transfer``, ``apply``), as a model and as its tensors:
    loaded as every verb loads a model, its input layer adapted to the target's ``channels()`` (asked
    only then) when its weights are pretrained, as timm adapts them."""
    model, info = load_source(source, arch)
    if is_pretrained(info):
        model, _ = fit_to(model, info, channels=channels(), num_outputs=info.num_classes, keep_head=True,
                          where=str(source))  # fmt: skip
    return model, Source(info.arch, {k: v.detach() for k, v in model.state_dict().items()})


def load_models(source: Path, target: Path, arch: str | None, *, seed: int = 0, input_size: str | None = None) -> Pair:
    """Load S and T (``--arch`` for plain state dicts; it confirms a recorded py: spec).

    When T has another number of classes, S gets a fresh head for them (as the study pairs
    them); S from pretrained weights gets its input layer adapted to T's channels.
    """
    size = parse_input_size(input_size)
    check_one_architecture(source, target, arch)
    s, s_info = load_source(source, arch, input_size=size)
    t, t_info = load_source(target, arch, input_size=size)
    notes: tuple[str, ...] = ()
    channels = t_info.in_channels if is_pretrained(s_info) else s_info.in_channels
    if s_info.num_classes != t_info.num_classes or channels != s_info.in_channels:
        s, fit = fit_to(s, s_info, channels=channels, num_outputs=t_info.num_classes, seed=seed, keep_head=True,
                        where=f"source {source}")  # fmt: skip
        notes = tuple(fit.notes(f"S ({s_info.num_classes} classes; T has {t_info.num_classes})"))
    return Pair(s.eval(), t.eval(), notes, t_info.input_size, t_info.in_channels, channels, t_info.arch)


def print_notes(console, notes) -> None:
    for note in notes:
        console.print(f"note: {note}", highlight=False)


def check_pair_takes(pair: Pair, example, *, fix: str) -> None:
    """Run S and T once on ``example``: an input they cannot take is one line, not a torch traceback."""
    check_takes(pair.target, example, what="T", fix=fix)
    if pair.source_channels == example.shape[1]:  # else the pairing names the difference
        check_takes(pair.source, example, what="S", fix=fix)


ALIGNED_TEXT = {True: "yes", False: "no", None: "–"}  # None: a file from before units said it


def layer_table(comparison: dict) -> FittedTable:
    """The comparison's units: lead columns, whether S's unit was aligned to T's, then the distances."""
    rows = [
        [r["name"], r["kind"], "x".join(map(str, r["shape"])), ALIGNED_TEXT[r.get("aligned")], r["rmse_raw"],
         r["rmse"], r["rmse_normalized"], r["rmse_null"], r["null_position"]]
        for r in comparison["layers"]
    ]  # fmt: skip
    columns = ["unit", "kind", "shape", "aligned", "rmse_raw", "rmse", "rmse_normalized", "rmse_null", "rmse/null"]
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
JobsOpt = Annotated[
    int | None,
    typer.Option("--jobs", "-j", help="Trainings run at once, each in a worker process on one thread "
                 "(default: one per usable core; 1: one at a time in this process; see docs/speed.md).",
                 show_default=False),
]  # fmt: skip
GpusPerJobOpt = Annotated[
    float | None,
    typer.Option("--gpus-per-job", help="With --backend ray: GPUs each job reserves "
                 "(default: 1 with a CUDA --device, else 0)."),
]  # fmt: skip


@dataclass(frozen=True)
class BackendChoice:
    """The backend options of a verb, as one value (declared once, by :func:`with_backend`)."""

    backend: Backend = Backend.local
    address: str | None = None
    cpus_per_job: float = 1.0
    gpus_per_job: float | None = None
    jobs: int | None = None

    def open(self, device, jobs: int | None = None):
        """The executor these options ask for (see :func:`open_executor`); ``jobs``: a config's, which --jobs overrides."""
        chosen = self.jobs if self.jobs is not None else jobs if self.backend is Backend.local else None
        return open_executor(self.backend, self.address, self.cpus_per_job, self.gpus_per_job, device, chosen)


def with_backend(command: Callable) -> Callable:
    """Give a verb --backend, --address, --cpus-per-job, --gpus-per-job and --jobs, declared here once.

    The verb takes one keyword ``backend: BackendChoice``; typer sees the five options in its place.
    """
    options = (("backend", BackendOpt, Backend.local), ("address", AddressOpt, None),
               ("cpus_per_job", CpusPerJobOpt, 1.0), ("gpus_per_job", GpusPerJobOpt, None),
               ("jobs", JobsOpt, None))  # fmt: skip
    signature = inspect.signature(command, eval_str=True)
    kept = [p for p in signature.parameters.values() if p.name != "backend"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
             for name, kind, default in options]  # fmt: skip

    @functools.wraps(command)
    def wrapper(*args: Any, backend=Backend.local, address=None, cpus_per_job=1.0, gpus_per_job=None, jobs=None,
                **kwargs: Any):  # fmt: skip
        return command(*args, backend=BackendChoice(backend, address, cpus_per_job, gpus_per_job, jobs), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*kept, *added])
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
    return wrapper


def open_executor(backend: Backend, address: str | None, cpus_per_job: float, gpus_per_job: float | None, device,
                  jobs: int | None = None):  # fmt: skip
    """The executor the options ask for (a context manager: a Ray instance or worker processes it starts are
    stopped after)."""
    return make_executor(backend.value, address, cpus_per_job, gpus_per_job, device, jobs)


class _PlainFlags:
    """``--help`` that shows flags plainly (no ``<bool>`` type beside ``--quiet`` or ``--help``) and arguments
    by their names in capitals (``SOURCE TARGET``).

    The type column then stays as narrow as the value options need, which leaves the help
    column room for specs such as ``torchvision:NAME?weights=DEFAULT`` at 80 columns.
    """

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # typer prints an option's metavar in place of its type
        return params

    def collect_usage_pieces(self, ctx):
        """Required arguments as ``SOURCE TARGET``, as help conventions write them (typer writes ``{SOURCE}``)."""
        return [re.sub(r"^\{(.+)\}", lambda m: m[1].upper(), piece) for piece in super().collect_usage_pieces(ctx)]


class HelpCommand(_PlainFlags, typer.core.TyperCommand):
    """A verb (``app.command(cls=HelpCommand)``) whose help shows plain flags."""


class HelpGroup(_PlainFlags, typer.core.TyperGroup):
    """The ``paramreuse`` command (``typer.Typer(cls=HelpGroup)``), whose help shows plain flags."""
