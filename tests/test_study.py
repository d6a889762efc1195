"""The main job end to end on the tiny data set, through the CLI."""

import json

import pytest
from typer.testing import CliRunner

from paramreuse.cli import app
from tests.conftest import TINY_ARCH

runner = CliRunner()
TINY_STUDY = f"""
arch = "{TINY_ARCH}"
[source]
classes = "0-4"
[target]
classes = "5-9"
shots = 5
[training.source]
epochs = 3
batch_size = 32
lr = 0.01
[training.fewshot]
min_steps = 10
[training.full]
epochs = 1
batch_size = 32
[sweep]
params = ["conv.weight", "bn.stats", "unit"]
bootstrap = 100
[transfer]
seeds = 2
"""


@pytest.fixture(scope="module")
def study_run(tmp_path_factory, fake_fmnist_dir):
    folder = tmp_path_factory.mktemp("study")
    config = folder / "tiny.toml"
    config.write_text(TINY_STUDY)
    args = ["study", "--config", str(config), "--out", str(folder / "run"), "--device", "cpu",
            "--data-dir", str(fake_fmnist_dir)]  # fmt: skip
    first = runner.invoke(app, [*args, "--format", "json"])
    assert first.exit_code == 0, first.output
    return folder / "run", args, first


def test_study_writes_every_result(study_run):
    run, _, first = study_run
    results = json.loads((run / "results.json").read_text())
    assert json.loads(first.stdout) == results
    assert set(results["models"]) == {"source", "target", "scratch", "full"}
    models = results["models"]
    for name, model in models.items():
        assert model["test_metric"] == json.loads((run / name / "train.json").read_text())["test_metric"], name
    for a, b in (("target", "scratch"), ("full", "scratch")):  # per-image differences on the same test set
        assert results["gains"][f"{a}_vs_{b}"]["mean"] == pytest.approx(models[a]["test_metric"] - models[b]["test_metric"])
    plan = json.loads((run / "plan.json").read_text())
    assert json.loads((run / "replacement.json").read_text())["baseline"] == pytest.approx(plan["baseline"])
    for file in ("comparison.json", "comparison-full.json", "comparison-scratch.json"):  # the same units, head last
        names = [layer["name"] for layer in json.loads((run / file).read_text())["layers"]]
        assert names == [layer["name"] for layer in plan["layers"]], file
    assert (run / "report.html").read_text().count("<img") >= 3
    transfer = json.loads((run / "transfer" / "transfer.json").read_text())
    assert transfer["shots"] == [5] and transfer["seeds"] == 2
    assert results["transfer"]["strategies"]["plan"]["mean"] == transfer["strategies"]["plan"]["mean"]
    layers = results["comparisons"]["target"]["layers"]
    assert [layer["name"] for layer in layers][:2] == ["features.0.0", "features.1.0"]
    assert {"rmse_raw", "rmse", "rmse_normalized", "rmse_null"} <= set(layers[0])


def test_study_lineages(study_run):
    results = json.loads((study_run[0] / "results.json").read_text())
    lineages = {name: c["lineage"] for name, c in results["comparisons"].items()}
    assert lineages == {"target": "finetuned", "full": "finetuned", "scratch": "independent"}


def test_plan_follows_the_contract(study_run):
    plan = json.loads((study_run[0] / "plan.json").read_text())
    assert {"network_reusable", "network_value", "thresholds", "layers"} <= set(plan)
    assert all({"name", "reusable_by_replacement", "reusable_by_rmse", "decision"} <= set(layer) for layer in plan["layers"])
    assert plan["layers"][-1] == plan["layers"][-1] | {"name": "head", "decision": "reinit"}
    replacement = json.loads((study_run[0] / "replacement.json").read_text())
    assert {"metric", "baseline", "rows", "cumulative", "timing"} <= set(replacement)
    assert all({"layer", "params", "value", "drop", "ci"} <= set(row) for row in replacement["rows"])


def test_rerun_skips_finished_stages(study_run):
    run, args, _ = study_run
    stamps = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.suffix in (".safetensors", ".json") and p.name != "results.json"}
    again = runner.invoke(app, [*args, "--quiet"])
    assert again.exit_code == 0, again.output
    results = json.loads((run / "results.json").read_text())
    assert all(model["resumed"] for model in results["models"].values())
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_report_rerenders_from_files(study_run):
    run = study_run[0]
    (run / "report.html").unlink()
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0 and (run / "report.html").is_file()


def test_study_writes_the_recommended_model_that_train_init_and_the_api_load(study_run, tmp_path):
    import io

    from rich.console import Console

    from paramreuse.cli.study import summary
    from paramreuse.models import load_checkpoint

    run = study_run[0]
    results = json.loads((run / "results.json").read_text())
    record = json.loads((run / "model.json").read_text())
    transfer = json.loads((run / "transfer" / "transfer.json").read_text())
    assert results["model"]["path"] == str(run / "model.safetensors")
    assert record["strategy"] == results["model"]["strategy"] == "plan"  # 2 seeds: no proof to say otherwise
    assert (run / "model.safetensors").read_bytes() == (run / "transfer" / transfer["model_files"]["plan"]).read_bytes()
    _, info = load_checkpoint(run / "model.safetensors")
    assert info.extra["test_metric"] == record["test_metric"] == transfer["strategies"]["plan"]["runs"][0]
    assert info.extra["decisions"] == record["decisions"] and (info.extra["seed"], info.extra["shots"]) == (0, 5)
    console = Console(file=io.StringIO(), width=80)
    summary(console, results, run)
    printed = " ".join(console.file.getvalue().split())
    assert f"Model: plan, seed 0, 5 shots per class, test accuracy {record['test_metric']:.4f}; load it with" in printed
    assert f"Model: {run / 'model.safetensors'}; load: paramreuse.load_checkpoint(path)." in printed  # the first box
    init = ["train", "--arch", TINY_ARCH, "--classes", "5-9", "--shots", "2", "--epochs", "1", "--min-steps", "1",
            "--init", str(run / "model.safetensors"), "--device", "cpu", "--quiet", "--out", str(tmp_path / "T")]  # fmt: skip
    assert runner.invoke(app, init).exit_code == 0


def test_a_study_whose_proof_names_another_strategy_keeps_that_model(study_run, tmp_path, monkeypatch):
    """The verdict says "use finetune-all instead": its first seed's run is trained again for the model alone."""
    import shutil

    from paramreuse.study import run as study

    run, args, _ = study_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    monkeypatch.setattr(study, "recommended_strategy", lambda transfer, style: "finetune-all")
    out = args.index("--out") + 1
    result = runner.invoke(app, [*args[:out], str(copy), *args[out + 1 :], "--quiet"])
    assert result.exit_code == 0, result.output
    record = json.loads((copy / "model.json").read_text())
    assert record["strategy"] == "finetune-all" and "clearly below finetune-all" in record["why"]
    transfer = json.loads((copy / "transfer" / "transfer.json").read_text())
    assert set(transfer["model_files"]) == {"plan", "finetune-all"}
    assert (copy / "model.safetensors").read_bytes() == (copy / "transfer" / "models" / "finetune-all.safetensors").read_bytes()


def test_study_bad_config_key(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[target]\nshot = 3\n")
    result = runner.invoke(app, ["study", "--config", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "unknown key 'shot'; did you mean 'shots'?" in result.stderr


def test_study_with_a_different_number_of_target_classes(tmp_path, fake_fmnist_dir):
    config = tmp_path / "c.toml"
    config.write_text(TINY_STUDY.replace('classes = "5-9"', 'classes = "5-7"').replace("seeds = 2", "seeds = 1"))
    args = ["study", "--config", str(config), "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet",
            "--data-dir", str(fake_fmnist_dir)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert plan["layers"][-1]["name"] == "head" and plan["layers"][-1]["decision"] == "reinit"
    assert json.loads((tmp_path / "run" / "results.json").read_text())["data"]["target"]["classes"] == [5, 6, 7]


def image_folder(root, classes=("cat", "dog", "owl"), train=12, test=6):
    """A train/ + test/ image folder of grey 28x28 PNGs whose classes differ by a bright stripe."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 60, (28, 28), dtype=np.uint8)
                pixels[8 * c : 8 * c + 6] = 220
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def test_study_from_a_users_plain_state_dict_and_image_folder(tmp_path, trained_pair):
    import random

    import torch

    from paramreuse.models import load_checkpoint

    s, _ = trained_pair
    state = list(s.state_dict().items())
    random.Random(0).shuffle(state)  # any key order
    torch.save(dict(state), tmp_path / "mine.pt")
    folder = image_folder(tmp_path / "imgs")
    config = tmp_path / "c.toml"
    config.write_text(TINY_STUDY.replace("seeds = 2", "seeds = 1\nstrategies = ['finetune-all', 'plan']"))
    args = ["study", "--config", str(config), "--source", str(tmp_path / "mine.pt"), "--arch", TINY_ARCH,
            "--target", f"folder:{folder}", "--shots", "4", "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet"]  # fmt: skip
    result = runner.invoke(app, args)
    import traceback
    assert result.exit_code == 0, "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else result.output
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert results["models"]["source"]["test_metric"] is None and "source" not in results["data"]
    assert results["data"]["target"]["class_names"] == ["cat", "dog", "owl"]
    given, _ = load_checkpoint(run / "source" / "model.safetensors")
    assert all(torch.equal(v, s.state_dict()[k]) for k, v in given.state_dict().items())  # S is the user's, untrained
    assert json.loads((run / "comparison.json").read_text())["lineage"] == "finetuned"  # T was fine-tuned from it
    plan = json.loads((run / "plan.json").read_text())
    assert plan["layers"][-1]["name"] == "head" and plan["layers"][-1]["decision"] == "reinit"  # 5 -> 3 classes
    rerun = runner.invoke(app, args)
    assert rerun.exit_code == 0 and json.loads((run / "source" / "train.json").read_text())["given"].endswith("mine.pt")


def test_a_given_source_reads_no_source_data(tmp_path):
    """[source] checkpoint = ... in a config: S is not trained, so its data are never loaded (here they could not be)."""
    from paramreuse.config import load_toml
    from paramreuse.study import StudyConfig, load_study_data

    folder = image_folder(tmp_path / "imgs")
    config = tmp_path / "c.toml"
    config.write_text(f'[source]\ncheckpoint = "s.pt"\ndata = "folder:{tmp_path}/nowhere"\n'
                      f'[target]\ndata = "folder:{folder}"\nclasses = "all"\nshots = 4\n')  # fmt: skip
    study = load_toml(StudyConfig, config)
    data = load_study_data(study)
    assert data.source is None and data.target.train.class_names == ("cat", "dog", "owl") and len(data.target.train) == 12


def test_study_from_a_recorded_checkpoint_names_classes_and_the_given_source(tmp_path, trained_pair):
    """Issue 21 item 6: a paramreuse S without --arch keeps its architecture; the output, results.json,
    transfer.json and the report name the classes (cat, owl) and say what S was, with no None; an
    unchosen class folder holding an undecodable file is never read."""
    from paramreuse.data.sources import FASHION_MNIST_CLASSES
    from paramreuse.models import ModelInfo, save_checkpoint

    s, _ = trained_pair
    info = ModelInfo(arch=TINY_ARCH, in_channels=1, num_classes=5, data="fashion-mnist", classes=(0, 1, 2, 3, 4),
                     class_names=FASHION_MNIST_CLASSES[:5])  # fmt: skip
    save_checkpoint(tmp_path / "s.safetensors", s, info)
    folder = image_folder(tmp_path / "imgs")
    for split in ("train", "test"):
        (folder / split / "bat").mkdir()
        (folder / split / "bat" / "0.png").write_bytes(b"not a png")
    config = tmp_path / "c.toml"
    config.write_text(TINY_STUDY.replace(f'arch = "{TINY_ARCH}"\n', "").replace("seeds = 2", "seeds = 1\nstrategies = ['plan']"))
    run = tmp_path / "run"
    args = ["study", "--config", str(config), "--source", str(tmp_path / "s.safetensors"), "--target", f"folder:{folder}",
            "--classes", "cat,owl", "--shots", "4", "--out", str(run), "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert f"target: folder:{folder} classes cat, owl (1, 3);" in result.stdout
    assert "source: " in result.stdout and "given (not trained by this study); architecture builtin:cnn?width=4" in result.stdout
    results = json.loads((run / "results.json").read_text())
    assert results["data"]["target"]["classes"] == [1, 3] and results["data"]["target"]["class_names"] == ["cat", "owl"]
    given = results["models"]["source"]["given_model"]
    assert given["arch"] == TINY_ARCH and given["outputs"] == 5 and given["weights"] == "the file"
    transfer = json.loads((run / "transfer" / "transfer.json").read_text())
    assert transfer["class_ids"] == [1, 3] and transfer["class_names"] == ["cat", "owl"]
    report = (run / "report.html").read_text()
    assert "classes cat, owl (1, 3)" in report and "None" not in report
    assert ("s.safetensors, given (not trained by this study); architecture builtin:cnn?width=4, weights from the file, "
            "a head of 5 outputs; trained on fashion-mnist classes T-shirt/top, Trouser, Pullover, Dress, Coat (0-4)") in report


def test_a_grey_source_and_an_rgb_target_name_the_channels_and_the_option_that_pairs_them(tmp_path, fake_fmnist_dir):
    """The dead end of issue 29: the sizes match, the channels differ. The error says so and names --channels;
    with it (either value) the study's data load and pair."""
    from PIL import Image

    from paramreuse.cli.study import with_overrides
    from paramreuse.study import StudyConfig, load_study_data

    folder = image_folder(tmp_path / "imgs")
    for png in folder.rglob("*.png"):  # the same images as RGB files
        Image.open(png).convert("RGB").save(png)
    args = ["study", "--target", f"folder:{folder}", "--shots", "4", "--data-dir", str(fake_fmnist_dir),
            "--out", str(tmp_path / "run"), "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert line.count("\n") == 0 and "Traceback" not in result.output
    assert ("source images have 1 channel(s) (grey) but target images have 3 (RGB): convert both to one with "
            "--channels 3 or --channels 1") in line, line
    assert "size" not in line.split(":")[1]  # the sizes match: no word about them
    for channels in (3, 1):
        config = with_overrides(StudyConfig(data_dir=str(fake_fmnist_dir)), source=None, arch=None,
                                target=f"folder:{folder}", classes=None, shots=4, size=None, budget=None,
                                channels=channels)  # fmt: skip
        data = load_study_data(config)
        assert data.source.channels == data.target.channels == data.target_full.channels == channels
        assert data.target.test.channels == channels and data.source.test.channels == channels


def test_plan_with_the_studys_shots_and_seed_makes_the_studys_network_decision(tmp_path):
    """One question, one answer: `plan S T --shots 5` and the study that made S and T draw the same shots
    (the study judges on the shots alone, plan carves a validation set too) and measure the same evidence.
    Noisy images, so that held-out shots are not all right and two draws would give two answers."""
    from tests.conftest import make_fake_fashion_mnist

    data_dir = make_fake_fashion_mnist(tmp_path / "noisy", noise=210)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_STUDY.replace("seeds = 2", "seeds = 1\nstrategies = ['plan']"))
    run = tmp_path / "run"
    study = runner.invoke(app, ["study", "--config", str(config), "--out", str(run), "--device", "cpu", "--quiet",
                                "--data-dir", str(data_dir)])  # fmt: skip
    assert study.exit_code == 0, study.output
    study_plan = json.loads((run / "plan.json").read_text())
    args = ["plan", str(run / "source" / "model.safetensors"), str(run / "target" / "model.safetensors"),
            "--data", "fashion-mnist", "--classes", "5-9", "--shots", "5", "--seed", "0", "--min-steps", "10",
            "--params", "conv.weight", "--data-dir", str(data_dir), "--device", "cpu", "--quiet",
            "--out", str(tmp_path / "plan")]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert study_plan["network"] is not None and plan["network"] is not None
    assert 0 < study_plan["network"]["reuse_value"] < 1  # evidence that can tell two draws apart
    assert plan["network"]["choice"] == study_plan["network"]["choice"]
    evidence = [json.loads((folder / "replacement.json").read_text())["network_evidence"] for folder in (run, tmp_path / "plan")]
    assert evidence[0]["reuse"] == evidence[1]["reuse"] and evidence[0]["fresh"] == evidence[1]["fresh"]  # image by image
    for key in ("difference", "n", "reuse_value", "fresh_value"):
        assert plan["network"][key] == pytest.approx(study_plan["network"][key], abs=1e-9), key
