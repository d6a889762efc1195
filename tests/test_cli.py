"""The command line through typer's CliRunner, on the tiny data set and tiny models."""

import json

import pytest
from typer.testing import CliRunner

from paramreuse.cli import app
from paramreuse.models import ModelInfo, build_model, save_checkpoint
from tests.conftest import TINY_ARCH

runner = CliRunner()
TRAIN = ["train", "--arch", TINY_ARCH, "--classes", "0-4", "--shots", "5", "--epochs", "1", "--device", "cpu"]


def test_help_teaches_every_verb():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in ("study", "train", "report"):
        assert verb in result.output
    for verb in ("study", "train", "report"):
        assert "--format" in runner.invoke(app, [verb, "--help"]).output


def test_train_writes_files_and_json_matches(fake_fmnist, tmp_path):
    result = runner.invoke(app, [*TRAIN, "--out", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    stored = json.loads((tmp_path / "train.json").read_text())
    assert printed["test_metric"] == stored["test_metric"]
    assert printed["fingerprint"] == stored["fingerprint"]
    assert (tmp_path / "model.safetensors").is_file()


def test_train_human_summary(fake_fmnist, tmp_path):
    result = runner.invoke(app, [*TRAIN, "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0 and result.stdout == ""
    result = runner.invoke(app, [*TRAIN, "--out", str(tmp_path)])
    assert "test accuracy" in result.stdout and "resumed from" in result.stdout


def _bad_init(tmp_path):
    path = tmp_path / "wide.safetensors"
    model = build_model("builtin:cnn?width=8", 1, 5)
    save_checkpoint(path, model, ModelInfo(arch="builtin:cnn?width=8", in_channels=1, num_classes=5))
    return ["--init", str(path)]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--data", "mnist"], "unknown data set 'mnist'"),
        (["--arch", "keras:vgg"], "unknown architecture kind 'keras'"),
        (["--classes", "0-4,11"], "class 11 not present"),
        (["--shots", "500"], "asked for 500 shots per class"),
        (["--classes", "2"], "at least 2 classes"),
        (_bad_init, ("records architecture builtin:cnn?width=8 but --arch is builtin:cnn?width=4; a model keeps the "
                     "architecture it records, and S and T share one: pass --arch builtin:cnn?width=8")),
        (["--init", "missing.safetensors"], "missing.safetensors does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(fake_fmnist, tmp_path, args, message):
    args = args(tmp_path) if callable(args) else args
    result = runner.invoke(app, [*TRAIN, *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_unwritable_output_folder(fake_fmnist, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, [*TRAIN, "--out", str(blocker / "run")])
    assert result.exit_code == 2
    assert "choose a writable --out folder" in result.stderr


@pytest.fixture(scope="module")
def pair(tmp_path_factory, fake_fmnist_dir):
    folder = tmp_path_factory.mktemp("pair")
    common = ["--arch", TINY_ARCH, "--epochs", "2", "--device", "cpu", "--quiet", "--data-dir", str(fake_fmnist_dir)]
    assert runner.invoke(app, ["train", *common, "--classes", "0-4", "--out", str(folder / "S")]).exit_code == 0
    s = folder / "S" / "model.safetensors"
    args = ["train", *common, "--classes", "5-9", "--shots", "5", "--init", str(s), "--out", str(folder / "T")]
    assert runner.invoke(app, args).exit_code == 0
    return s, folder / "T" / "model.safetensors", fake_fmnist_dir


@pytest.mark.parametrize("verb,file", [("compare", "comparison.json"), ("replace", "replacement.json"), ("plan", "plan.json")])
def test_pair_verbs_print_what_they_write(pair, tmp_path, verb, file):
    s, t, data_dir = pair
    data = [] if verb == "compare" else ["--data", "fashion-mnist", "--classes", "5-9", "--shots", "5"]
    result = runner.invoke(app, [verb, str(s), str(t), *data, "--data-dir", str(data_dir), "--out", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    printed, stored = json.loads(result.stdout), json.loads((tmp_path / file).read_text())
    assert printed == stored
    if verb == "compare":
        assert printed["lineage"] == "finetuned" and printed["alignment"]["method"] == "none"


def test_plan_prints_its_thresholds(pair, tmp_path):
    s, t, data_dir = pair
    args = ["plan", str(s), str(t), "--data", "fashion-mnist", "--classes", "5-9", "--shots", "5",
            "--data-dir", str(data_dir), "--out", str(tmp_path), "--layer-tolerance", "0.05"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())  # rich wraps long lines
    assert "J2 drop <= 0.05" in text and "against the tolerance 0.02" in text
    assert text.startswith(("Network decision: Reuse S: S-initialised training scored",
                            "Network decision: Train the target from scratch"))  # fmt: skip
    closing = " ".join(text[text.index("The answer "):].replace("─", " ").split())  # the first box closes the output: no transfer runs or model yet
    assert closing.startswith(("The answer Decision: Reuse S", "The answer Decision: Train from scratch"))
    assert "Expected gain: not measured: `paramreuse transfer`" in closing and "Model: none yet:" in closing
    assert json.loads((tmp_path / "plan.json").read_text())["thresholds"]["layer_tolerance"] == 0.05


@pytest.mark.parametrize(
    "args,message",
    [
        (["--params", "conv.weight,gamma"], "unknown parameter group gamma"),
        (["--align", "magic"], "unknown alignment 'magic'"),
        (["wider T"], "is builtin:cnn?width=8; S and T must share one architecture"),
    ],
)
def test_replace_bad_input(pair, tmp_path, args, message):
    s, t, data_dir = pair
    base = ["replace", str(s), str(t), "--data", "fashion-mnist", "--classes", "5-9", "--data-dir", str(data_dir)]
    if args == ["wider T"]:  # another number of classes pairs (S gets a fresh head); other widths do not
        wide = tmp_path / "wide.safetensors"
        save_checkpoint(wide, build_model("builtin:cnn?width=8", 1, 5), ModelInfo(arch="builtin:cnn?width=8", in_channels=1, num_classes=5))
        base[2], args = str(wide), []
    result = runner.invoke(app, [*base, *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


VERBS = ("study", "train", "compare", "replace", "plan", "transfer", "apply", "rank", "report")


def test_every_verb_offers_out_format_and_quiet():
    for verb in VERBS:
        text = runner.invoke(app, [verb, "--help"]).output
        for option in ("--out", "--format", "--quiet"):
            assert option in text, f"{verb} has no {option}"


def test_train_json_is_the_stored_record(fake_fmnist, tmp_path):
    result = runner.invoke(app, [*TRAIN, "--out", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    stored = json.loads((tmp_path / "train.json").read_text())
    assert json.loads(result.stdout) == stored | {"resumed": False}  # plus whether it was loaded from disk


def test_progress_goes_to_stderr_with_an_eta(fake_fmnist, tmp_path):
    from rich.progress import TimeRemainingColumn

    from paramreuse.cli.common import err
    from paramreuse.cli.progress_bar import ProgressBar
    from paramreuse.progress import ProgressEvent

    bar = ProgressBar(plain=False)  # the live bar, as on a terminal
    assert bar.progress.console is err and any(isinstance(c, TimeRemainingColumn) for c in bar.progress.columns)
    with bar:
        for step in (1, 2, 3):
            bar(ProgressEvent("replace", step, 10, {"row": "features.0.0 conv.weight"}))
    task = bar.progress.tasks[0]
    assert (task.description, task.completed, task.total, task.fields["info"]) == ("replace", 3, 10, "row features.0.0 conv.weight")
    result = runner.invoke(app, [*TRAIN, "--out", str(tmp_path)])
    assert "150/150" in result.stderr and "eta" in result.stderr
    assert "150/150" not in result.stdout and "test accuracy" in result.stdout
    quiet = runner.invoke(app, [*TRAIN, "--out", str(tmp_path / "q"), "--quiet"])
    assert quiet.exit_code == 0 and quiet.stdout == "" and "150/150" not in quiet.stderr


def test_quiet_and_json_on_compare(pair, tmp_path):
    s, t, _ = pair
    quiet = runner.invoke(app, ["compare", str(s), str(t), "--out", str(tmp_path), "--quiet"])
    assert quiet.exit_code == 0 and quiet.stdout == ""
    both = runner.invoke(app, ["compare", str(s), str(t), "--out", str(tmp_path), "--quiet", "--format", "json"])
    assert json.loads(both.stdout)["layers"] == json.loads((tmp_path / "comparison.json").read_text())["layers"]


def test_transfer_and_rank_print_what_they_write(pair, tmp_path):
    s, t, data_dir = pair
    common = ["--data-dir", str(data_dir), "--device", "cpu"]
    target = ["fashion-mnist", "--classes", "5-9"]
    plan = runner.invoke(app, ["plan", str(s), str(t), "--data", *target, "--shots", "5", *common, "--out", str(tmp_path / "plan"), "--quiet"])
    assert plan.exit_code == 0, plan.output
    args = ["transfer", str(s), "--plan", str(tmp_path / "plan" / "plan.json"), "--data", *target, "--shots", "3",
            "--seeds", "2", "--strategies", "scratch,plan", *common, "--out", str(tmp_path / "transfer"), "--format", "json"]  # fmt: skip
    transfer = runner.invoke(app, args)
    assert transfer.exit_code == 0, transfer.output
    assert json.loads(transfer.stdout) == json.loads((tmp_path / "transfer" / "transfer.json").read_text())
    args = ["rank", str(s), str(t), "--target", *target, "--shots", "5", "--no-ours", *common, "--out", str(tmp_path / "rank"),
            "--format", "json"]  # fmt: skip
    rank = runner.invoke(app, args)
    assert rank.exit_code == 0, rank.output
    assert json.loads(rank.stdout) == json.loads((tmp_path / "rank" / "rank.json").read_text())
