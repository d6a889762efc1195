"""``paramreuse train``: train one model (optionally from a checkpoint) and save it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from paramreuse.cli.common import (
    MIN_STEPS_HELP,
    STEPS_HELP,
    DataDirOpt,
    Device,
    DeviceOpt,
    Format,
    FormatOpt,
    OutOpt,
    QuietOpt,
    SeedOpt,
    SizeOpt,
    TaskOpt,
    check_length,
    clean_errors,
    emit,
    on_own_cores,
    table,
)  # fmt: skip
from paramreuse.cli.progress_bar import ProgressBar
from paramreuse.data import load_task
from paramreuse.devices import resolve_device
from paramreuse.training.loop import TrainConfig
from paramreuse.training.run import RunSpec, run_training
from paramreuse.vocabulary import classes_text


@clean_errors
@on_own_cores
def train_command(
    arch: Annotated[str, typer.Option(help="Architecture spec: builtin:cnn, torchvision:resnet18, timm:NAME, smp:Unet/resnet18, py:FILE.py:FACTORY; torchvision:NAME?weights=DEFAULT and timm:NAME?pretrained=true start from the weights in the local cache.")] = "builtin:cnn",
    data: Annotated[str, typer.Option(help="Data set: fashion-mnist, digits, folder:PATH; for segmentation fashion-mnist-seg, fashion-mnist-seg-multi or segfolder:PATH (images/ + masks/).")] = "fashion-mnist",
    task: TaskOpt = None,
    size: SizeOpt = None,
    classes: Annotated[str | None, typer.Option(help="Classes to use, e.g. 5-9, 5,6,7 or class names such as Sandal,Shirt or cat,dog (default: all); relabelled 0..C-1.")] = None,
    shots: Annotated[int | None, typer.Option(help="Training images per class (few-shot); default: all.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the training set (default 5); --min-steps may raise it, and the summary says so.", show_default=False)] = None,
    steps: Annotated[int | None, typer.Option(help=STEPS_HELP)] = None,
    min_steps: Annotated[int, typer.Option(help=MIN_STEPS_HELP)] = 150,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 128,
    lr: Annotated[float, typer.Option(help="Learning rate (AdamW, cosine schedule).")] = 1e-3,
    init: Annotated[Path | None, typer.Option(help="Start from this checkpoint (a plain state dict of --arch, or a pretrained spec); its head is replaced by a fresh one.")] = None,
    keep_head: Annotated[bool, typer.Option("--keep-head", help="With --init, keep the checkpoint's head too.")] = False,
    limit_per_class: Annotated[int | None, typer.Option(help="Use at most this many training images per class.")] = None,
    out: OutOpt = Path("runs/train"),
    fmt: FormatOpt = Format.human,
    seed: SeedOpt = 0,
    device: DeviceOpt = Device.auto,
    data_dir: DataDirOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a model and write model.safetensors (architecture and task inside) and train.json to --out.

    Example: paramreuse train --arch builtin:cnn --data fashion-mnist --classes 0-4 --epochs 3 --out runs/S

    Segmentation: paramreuse train --arch builtin:unet --data fashion-mnist-seg --classes 0-4 --out runs/S;
    an auto-encoder: add --task reconstruction to any image data.
    """
    check_length(epochs, steps, min_steps)
    dev = resolve_device(device.value)
    task_data = load_task(data, classes, shots, seed=seed, limit_per_class=limit_per_class, data_dir=data_dir,
                          task=task, size=size)  # fmt: skip
    config = TrainConfig(epochs=epochs or 5, batch_size=batch_size, lr=lr, min_steps=min_steps, steps=steps)
    spec = RunSpec(arch, config, seed, init=str(init) if init else None, keep_head=keep_head)
    with ProgressBar(enabled=not quiet and fmt is Format.human) as bar:
        _, record = run_training(spec, task_data, out, dev, progress=bar, stage="train")

    def human(console) -> None:
        status = "resumed from" if record["resumed"] else "saved to"
        rows = [["val " + record["metric"], record["val_metric"]], ["test " + record["metric"], record["test_metric"]],
                ["epochs", record["training"]["epochs"]], ["steps", record["training"]["steps"]],
                ["seconds", record["training"]["seconds"]]]  # fmt: skip
        classes = classes_text(record["data"]["classes"], record["data"].get("class_names", ()))
        console.print(table(f"{arch} on {data} classes {classes}", ["", "value"], rows))
        if record["training"].get("note"):  # the floor trained longer than asked
            console.print(record["training"]["note"], highlight=False)
        if "images" in record["data"]:  # the image rule of data read from files (folder:, segfolder:)
            console.print(f"images: {record['data']['images']}")
        console.print(f"model {status} {record['model']}")

    emit(record, fmt, human, quiet)
