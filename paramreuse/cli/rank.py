"""``paramreuse rank --target DATA SOURCE...``: transferability baselines and ours, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box

from paramreuse.backends import DataSpec, RunContext
from paramreuse.cli.common import (
    SOURCE_HELP,
    ArchOpt,
    BackendChoice,
    ClassesOpt,
    DataDirOpt,
    Device,
    DeviceOpt,
    Format,
    FormatOpt,
    OutOpt,
    QuietOpt,
    SeedOpt,
    clean_errors,
    emit,
    on_own_cores,
    table,
    with_backend,
)  # fmt: skip
from paramreuse.cli.progress_bar import ProgressBar
from paramreuse.devices import resolve_device
from paramreuse.errors import ParamreuseError
from paramreuse.models.checkpoint import pretrained_spec
from paramreuse.rank.ranking import OURS_LAYER, OURS_SOURCE, RANK_FILE, Ranking, columns, rank_layers, rank_sources
from paramreuse.rank.scores import SCORES
from paramreuse.results import write_json
from paramreuse.vocabulary import classes_text


@with_backend
@clean_errors
@on_own_cores
def rank_command(
    sources: Annotated[list[Path], typer.Argument(help=f"The candidate sources, each {SOURCE_HELP}.")],
    target: Annotated[str, typer.Option("--target", help="Target data: fashion-mnist, digits or folder:PATH.")],
    classes: ClassesOpt = None,
    shots: Annotated[int | None, typer.Option("--shots", help="Target training images per class (T is fine-tuned on them).")] = None,
    val_per_class: Annotated[int | None, typer.Option("--val-per-class", help="Labelled target validation images per class (default: 10%, at most 500).")] = None,
    layers: Annotated[bool, typer.Option("--layers", help="Rank the layers of one SOURCE (reuse units 1..k) instead of sources.")] = False,
    by: Annotated[str | None, typer.Option("--by", help="Column to rank by (default: ours, j1_value or cumulative_value).")] = None,
    no_ours: Annotated[bool, typer.Option("--no-ours", help="Baselines only: no fine-tuning, no replacement sweep.")] = False,
    arch: ArchOpt = None,
    out: OutOpt = Path("runs/rank"),
    fmt: FormatOpt = Format.human,
    seed: SeedOpt = 0,
    device: DeviceOpt = Device.auto,
    data_dir: DataDirOpt = None,
    quiet: QuietOpt = False,
    backend: BackendChoice = BackendChoice(),  # --backend, --address, --cpus-per-job, --gpus-per-job
) -> None:
    """Rank candidate sources for a target with LogME, LEEP, NCE, H-score (plain and shrinkage),
    leave-one-out k-NN and a linear probe, plus ours: the J1 value, reusable depth and RMSE
    position of S against T, S fine-tuned briefly on the target shots.

    Every baseline sees the labelled target images ours sees (shots and validation set).
    With --layers, one SOURCE's units are ranked as reuse depths 1..k. Writes rank.json.
    """
    if layers and len(sources) != 1:
        raise ParamreuseError(f"--layers ranks the layers of one source, got {len(sources)}; pass a single SOURCE")
    for path in sources:
        if not path.is_file() and pretrained_spec(path) is None:
            raise ParamreuseError(f"checkpoint {path} does not exist; pass model files or pretrained specs")
    possible = (*SCORES, *(() if no_ours else OURS_LAYER if layers else OURS_SOURCE))
    if by is not None and by not in possible:  # checked before any work
        raise ParamreuseError(f"cannot rank by {by!r}; choose one of {', '.join(possible)}")
    dev = resolve_device(device.value)
    spec = DataSpec.of(target, classes=classes, shots=shots, seed=seed, val_per_class=val_per_class, data_dir=data_dir)
    data = spec.load()
    if data.kind.name != "classification":
        raise ParamreuseError(f"rank scores classification targets (LogME, LEEP, ... need class labels); {target} is "
                              f"{data.kind.name}: use paramreuse plan and transfer for it")  # fmt: skip
    executor = backend.open(dev)
    with executor, ProgressBar(enabled=not quiet and fmt is Format.human) as bar:
        run = RunContext(out, device=dev, progress=bar, executor=executor)
        options = {"with_ours": not no_ours, "by": by, "seed": seed, "data_spec": spec, "arch": arch}
        if layers:
            ranking = rank_layers(sources[0], data, run, **options)
        else:
            ranking = rank_sources(sources, data, run, **options)
    result = ranking.to_dict()
    write_json(out / RANK_FILE, result)
    emit(result, fmt, lambda console: print_ranking(console, ranking, out), quiet)


SHORT = {"hscore": "hs", "hscore_shrinkage": "hs_shr", "knn_loo": "knn", "linear_probe": "probe", "j1_value": "J1",
         "reusable_depth": "depth", "rmse_position": "rmse_pos", "cumulative_value": "reuse1..k", "unit_value": "unit"}  # fmt: skip


def _cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def print_ranking(console, ranking: Ranking, out: Path) -> None:
    cols = columns(ranking.rows)
    ours = [c for c in cols if c in OURS_SOURCE + OURS_LAYER]
    lead = ["layer", "k"] if ranking.mode == "layers" else ["source", "params"]
    subject = "layers (reuse units 1..k)" if ranking.mode == "layers" else "sources"
    classes = classes_text(ranking.target["classes"], ranking.target.get("class_names", ()))
    console.print(
        f"Ranking {subject} for {ranking.target['data']} classes {classes} by {ranking.by}; "
        f"every score sees the same {ranking.scored_on} labelled target images",
        highlight=False,
    )
    groups = (("Baselines", [c for c in cols if c not in ours]), ("Ours (S vs T = S fine-tuned on the shots)", ours))
    for title, group in groups:
        if group:
            rows = [_lead(ranking, row) + [_cell(row.values().get(c, "-")) for c in group] for row in ranking.rows]
            console.print(table(title, lead + [SHORT.get(c, c) for c in group], rows, ruled=box.SIMPLE))
    notes = {f"{row.name} {name}: {s.note}" for row in ranking.rows for name, s in row.scores.items() if s.note}
    for note in sorted(notes)[:5]:
        console.print(f"note: {note}", highlight=False)
    console.print(f"rmse_pos: lower is better; every other column: higher is better. written: {out / RANK_FILE}")


def _lead(ranking: Ranking, row) -> list:
    return [row.name, row.depth] if ranking.mode == "layers" else [row.name, f"{row.parameters / 1000:.1f}k"]
