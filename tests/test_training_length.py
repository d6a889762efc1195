"""Training length in the user's hands: --epochs, --steps and the --min-steps floor in train, transfer
and study (and the study config's [training] table), and a summary that says when the floor raised it."""

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from paramreuse.cli import app
from paramreuse.cli.study import with_length
from paramreuse.config import ConfigError, from_mapping, load_toml
from paramreuse.models import build_model
from paramreuse.study import StudyConfig, apply_length, quick
from paramreuse.training.loop import FEWSHOT, TrainConfig, length_note, train, training_length
from tests.conftest import TINY_ARCH, synthetic_set

runner = CliRunner()
TRAIN = ["train", "--arch", TINY_ARCH, "--classes", "0-4", "--shots", "2", "--device", "cpu"]


def test_steps_are_exact_and_the_floor_only_raises_epochs():
    data = synthetic_set(32)  # 2 steps per epoch at batch 16
    model = build_model(TINY_ARCH, 1, 5)
    exact = train(model, data, TrainConfig(epochs=5, batch_size=16, min_steps=150, steps=7))
    assert (exact.epochs, exact.steps, exact.note) == (4, 7, None)  # the last epoch stops part-way
    assert exact.asked == {"epochs": 5, "steps": 7, "min_steps": 150}
    raised = train(model, data, TrainConfig(epochs=1, batch_size=16, min_steps=9))
    assert (raised.epochs, raised.steps) == (5, 10)
    assert raised.note == "trained 5 epochs (asked 1): --min-steps 9 raised it; pass --min-steps 0 to train exactly 1"
    plain = train(model, data, TrainConfig(epochs=3, batch_size=16, min_steps=0))
    assert (plain.epochs, plain.steps, plain.note) == (3, 6, None)
    assert training_length(TrainConfig(epochs=3, batch_size=16, min_steps=6), 32) == (3, 6)  # the floor is met
    assert length_note(TrainConfig(epochs=3, min_steps=6), 3) is None


def test_a_last_batch_of_one_image_joins_the_one_before_so_batch_norm_at_1x1_trains():
    # resnet18's last stage is 1x1 at 32 px: batch norm in training mode refuses one value per channel,
    # which is what 17 images at batch 16 used to leave (the 3-fold design at 5 shots x 5 classes)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 5))
    done = train(model, synthetic_set(17), TrainConfig(epochs=2, batch_size=16, min_steps=0))
    assert (done.epochs, done.steps) == (2, 2)  # one batch of 17 per epoch
    assert training_length(TrainConfig(epochs=1, batch_size=16, min_steps=0), 18) == (1, 2)  # 16 + 2 stay apart


def test_train_records_the_asked_and_the_actual_length(fake_fmnist, tmp_path):
    result = runner.invoke(app, [*TRAIN, "--steps", "3", "--out", str(tmp_path / "steps")])
    assert result.exit_code == 0, result.output
    done = json.loads((tmp_path / "steps" / "train.json").read_text())["training"]
    assert done["steps"] == 3 and done["asked"]["steps"] == 3 and done["note"] is None
    assert "trained" not in result.stdout  # nothing raised: no note

    # 10 images at batch 128: one step an epoch, so --min-steps 4 makes 2 epochs 4
    raised = runner.invoke(app, [*TRAIN, "--epochs", "2", "--min-steps", "4", "--out", str(tmp_path / "raised")])
    assert raised.exit_code == 0, raised.output
    line = "trained 4 epochs (asked 2): --min-steps 4 raised it; pass --min-steps 0 to train exactly 2"
    assert line in " ".join(raised.stdout.split())
    done = json.loads((tmp_path / "raised" / "train.json").read_text())["training"]
    assert (done["epochs"], done["asked"]["epochs"], done["note"]) == (4, 2, line)
    exact = runner.invoke(app, [*TRAIN, "--epochs", "2", "--min-steps", "0", "--out", str(tmp_path / "exact")])
    assert exact.exit_code == 0 and "trained" not in exact.stdout
    assert json.loads((tmp_path / "exact" / "train.json").read_text())["training"]["epochs"] == 2


def test_the_config_training_table_is_read_and_the_flags_override_it(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text("[training]\nepochs = 3\nmin_steps = 20\n[training.source]\nepochs = 2\n")
    cfg = load_toml(StudyConfig, path)
    assert cfg.training.asked() == {"epochs": 3, "steps": None, "min_steps": 20} and cfg.training.source.epochs == 2
    applied = apply_length(cfg)
    for training in (applied.training.fewshot, applied.transfer.training):  # T, T_scratch and every transfer run
        assert (training.epochs, training.min_steps, training.steps) == (3, 20, None)
    assert applied.training.source == cfg.training.source and applied.training.full == cfg.training.full
    stepped = apply_length(with_length(cfg, epochs=None, steps=40, min_steps=None))  # --steps replaces the file's epochs
    assert stepped.training.asked() == {"epochs": None, "steps": 40, "min_steps": 20}
    assert stepped.training.fewshot.steps == 40 and stepped.transfer.training.steps == 40
    flagged = with_length(cfg, epochs=5, steps=None, min_steps=0)
    assert flagged.training.asked() == {"epochs": 5, "steps": None, "min_steps": 0}
    # --quick shrinks the floor to 80; an asked length still wins
    assert apply_length(quick(StudyConfig())).training.fewshot.min_steps == 80
    assert apply_length(quick(flagged)).training.fewshot.min_steps == 0
    assert apply_length(StudyConfig()).training.fewshot == FEWSHOT  # nothing asked: the recipe as it was


def test_a_config_with_epochs_and_steps_is_refused():
    with pytest.raises(ConfigError, match=r"^c.training: epochs \(2\) and steps \(40\) are both set; give one"):
        from_mapping(StudyConfig, {"training": {"epochs": 2, "steps": 40}}, "c")
    with pytest.raises(ConfigError, match="steps must be at least 1, got 0"):
        from_mapping(StudyConfig, {"training": {"steps": 0}}, "c")


@pytest.mark.parametrize(
    "args,line",
    [
        (["train", "--epochs", "0"], "error: --epochs must be at least 1, got 0"),
        (["train", "--steps", "-3"], "error: --steps must be at least 1, got -3"),
        (["study", "--min-steps", "-1"], "error: --min-steps must be at least 0, got -1"),
        (["study", "--epochs", "2", "--steps", "40"], "error: --epochs 2 and --steps 40 both given; give one"),
        (["transfer", "s.safetensors", "--data", "digits", "--steps", "0"], "error: --steps must be at least 1, got 0"),
    ],
)
def test_bad_lengths_exit_2_with_one_line(tmp_path, args, line):
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), lines


def test_transfer_runs_the_steps_asked(fake_fmnist, tmp_path):
    assert runner.invoke(app, [*TRAIN, "--steps", "2", "--out", str(tmp_path / "S"), "--quiet"]).exit_code == 0
    args = ["transfer", str(tmp_path / "S" / "model.safetensors"), "--data", "fashion-mnist", "--classes", "5-9",
            "--shots", "2", "--seeds", "1", "--strategies", "scratch,finetune-all", "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, [*args, "--steps", "3", "--out", str(tmp_path / "steps"), "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "steps" / "transfer.json").read_text())
    assert doc["config"]["training"]["steps"] == 3 and doc["length"]["2"]["steps"] == 3
    # 10 images at batch 16: --epochs 2 is raised to 4 by --min-steps 4, and the summary says so
    raised = runner.invoke(app, [*args, "--epochs", "2", "--min-steps", "4", "--out", str(tmp_path / "raised")])
    assert raised.exit_code == 0, raised.output
    assert "2 shots: trained 4 epochs (asked 2): --min-steps 4 raised it" in " ".join(raised.stdout.split())
    assert json.loads((tmp_path / "raised" / "transfer.json").read_text())["length"]["2"]["epochs"] == 4
    # a --config file's [training] table sets the length; a flag wins over it
    config = tmp_path / "transfer.toml"
    config.write_text("seeds = 1\nshots = [2]\nstrategies = ['scratch']\n[training]\nsteps = 4\n")
    base = args[:2] + ["--data", "fashion-mnist", "--classes", "5-9", "--device", "cpu", "--config", str(config)]
    from_file = runner.invoke(app, [*base, "--out", str(tmp_path / "file"), "--quiet"])
    assert from_file.exit_code == 0, from_file.output
    doc = json.loads((tmp_path / "file" / "transfer.json").read_text())
    assert doc["length"] == {"2": {"epochs": 4, "steps": 4, "note": None}} and doc["seeds"] == 1
    assert list(doc["strategies"]) == ["scratch"]
    flagged = runner.invoke(app, [*base, "--steps", "3", "--out", str(tmp_path / "flag"), "--quiet"])
    assert flagged.exit_code == 0, flagged.output
    assert json.loads((tmp_path / "flag" / "transfer.json").read_text())["length"]["2"]["steps"] == 3


def test_a_study_trains_the_steps_asked(fake_fmnist_dir, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(f'arch = "{TINY_ARCH}"\n[target]\nclasses = "5-9"\nshots = 2\n[training]\nepochs = 4\n'
                      "[training.source]\nepochs = 1\nbatch_size = 64\n[training.full]\nepochs = 1\nbatch_size = 64\n"
                      '[sweep]\nparams = ["unit"]\nbootstrap = 20\n'
                      "[transfer]\nseeds = 1\nstrategies = ['finetune-all', 'plan']\n")  # fmt: skip
    args = ["study", "--config", str(config), "--out", str(tmp_path / "run"), "--device", "cpu", "--data-dir",
            str(fake_fmnist_dir), "--steps", "3"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["training"]["asked"] == {"epochs": None, "steps": 3, "min_steps": None}  # the flag over the file
    assert results["training"]["steps"] == 3 and results["training"]["note"] is None
    for model in ("target", "scratch"):
        assert json.loads((tmp_path / "run" / model / "train.json").read_text())["training"]["steps"] == 3
    assert json.loads((tmp_path / "run" / "transfer" / "transfer.json").read_text())["length"]["2"]["steps"] == 3
    assert "few-shot training" not in result.stdout  # nothing raised: no note
    assert "few-shot training</td><td class='n'>3 epochs, 3 steps (asked: steps 3)</td>" in (tmp_path / "run" / "report.html").read_text()
    # --epochs 1 on 10 shots is one step an epoch: --min-steps 6 raises it to 6, and the summary says so
    args[args.index("--steps") : args.index("--steps") + 2] = ["--epochs", "1", "--min-steps", "6"]
    raised = runner.invoke(app, [*args[:4], str(tmp_path / "raised"), *args[5:]])
    assert raised.exit_code == 0, raised.output
    line = "trained 6 epochs (asked 1): --min-steps 6 raised it; pass --min-steps 0 to train exactly 1"
    assert f"few-shot training (T, T_scratch, transfer runs): {line}" in " ".join(raised.stdout.split())
    raised_results = json.loads((tmp_path / "raised" / "results.json").read_text())
    assert raised_results["training"]["note"] == line
    # T_full (1 epoch of 5 steps asked) trains the few-shot floor; S (5 steps) is below it and named
    assert json.loads((tmp_path / "raised" / "full" / "train.json").read_text())["training"]["steps"] >= 6
    short = [w for w in raised_results["warnings"] if "optimiser steps" in w]
    assert len(short) == 1 and short[0].startswith("S trained 5 optimiser steps (1 epoch over 270 images), fewer "
                                                   "than the 6 steps of each few-shot training"), short  # fmt: skip


def test_t_full_on_a_500_image_folder_trains_at_least_the_few_shot_floor():
    """Issue 29: 488 images at the default [training.full] (3 epochs of 128) were 12 steps against the 150 of
    each 25-shot training; now T_full trains at least those 150, and a model below them is named."""
    from paramreuse.judge.caveats import short_training_warnings
    from paramreuse.study.config import StudyTraining, full_length

    training = StudyTraining()
    assert training_length(training.full, 488) == (3, 12)  # the old length
    fewshot_steps = training_length(training.fewshot, 25)[1]
    assert fewshot_steps == 150
    epochs, steps = training_length(full_length(training, 25), 488)
    assert steps >= fewshot_steps and epochs == 38
    big = full_length(training, 25)  # a full set large enough keeps its own epochs: the floor only raises
    assert training_length(big, 60_000)[0] == 3
    exact = StudyTraining(full=TrainConfig(epochs=3, steps=7))
    assert training_length(full_length(exact, 25), 488)[1] == 7  # exact steps are the user's, kept (and warned)
    warned = short_training_warnings({"S": {"steps": 400, "epochs": 2, "images": 25_000},
                                      "T_full": {"steps": 7, "epochs": 2, "images": 488}}, floor=fewshot_steps)
    assert len(warned) == 1 and warned[0].startswith("T_full trained 7 optimiser steps (2 epochs over 488 images), "
                                                     "fewer than the 150 steps of each few-shot training (the threshold")


def test_an_unset_length_leaves_the_fingerprinted_config_as_it_was():
    """Run folders written before --steps existed still resume: unset length keys are not in to_dict()."""
    assert "steps" not in TrainConfig().to_dict() and TrainConfig(steps=5).to_dict()["steps"] == 5
    plain = StudyConfig().to_dict()
    assert "steps" not in plain["training"]["fewshot"] and "steps" not in plain["transfer"]["training"]
    assert not {"epochs", "steps", "min_steps"} & set(plain["training"])
    asked = apply_length(with_length(StudyConfig(), epochs=None, steps=9, min_steps=None)).to_dict()
    assert asked["training"]["steps"] == 9 and asked["transfer"]["training"]["steps"] == 9
