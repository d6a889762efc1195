import pytest

from paramreuse.config import ConfigError, load_toml
from paramreuse.study import StudyConfig
from paramreuse.training.loop import TrainConfig


def test_toml_fills_nested_dataclasses(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('arch = "builtin:cnn?width=4"\n[target]\nclasses = "5,6"\nshots = 3\n[training.source]\nepochs = 2\nlr = 1\n')
    config = load_toml(StudyConfig, path)
    assert config.arch == "builtin:cnn?width=4"
    assert config.target.classes == "5,6" and config.target.shots == 3
    assert config.training.source == TrainConfig(epochs=2, batch_size=128, lr=1.0)
    assert config.training.fewshot == StudyConfig().training.fewshot


@pytest.mark.parametrize(
    "text,message",
    [
        ("shot = 3", "unknown key 'shot'"),
        ("[target]\nshot = 3", r"config.toml.target: unknown key 'shot'; did you mean 'shots'\?"),
        ("[training.source]\nepoch = 3", "did you mean 'epochs'"),
        ("seed = 'zero'", "seed must be int"),
        ("[target]\nshots = 2.5", "shots must be int"),
        ("arch = ", "not valid TOML"),
        # choices and ranges are checked by the dataclasses themselves, before any work
        ("[sweep]\nparams = ['conv.weights']", r"config.toml.sweep: params: unknown value 'conv.weights'; did you mean 'conv.weight'\?"),
        ("[transfer]\nstrategies = ['lpft']", r"config.toml.transfer: strategies: .*did you mean 'lp-ft'\?"),
        ("[training.fewshot]\noptimizer = 'adamw'", r"config.toml.training.fewshot: optimizer: .*did you mean 'adam'\?"),
        ("[training.full]\nschedule = 'cosin'", r"schedule: unknown value 'cosin'; did you mean 'cosine'\?"),
        ("[thresholds]\nlayer_tolerance = -0.02", r"config.toml.thresholds: layer_tolerance must be >= 0"),
        ("[thresholds]\nfreeze_on = 'median'", r"freeze_on: unknown value 'median'"),
        ("align = 'weight'", r"config.toml: align: unknown value 'weight'; did you mean 'weights'\?"),
        ("budget = 'all'", r"budget: unknown value 'all'"),
        ("[target]\nshots = 0", r"config.toml.target: shots must be at least 1"),
        ("[target]\ntask = 'segment'", r"task: unknown value 'segment'; did you mean 'segmentation'\?"),
        ("[sweep]\ntolerance = -1", r"tolerance must be >= 0"),
    ],
)
def test_bad_config(tmp_path, text, message):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_toml(StudyConfig, path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(StudyConfig, tmp_path / "nope.toml")


def test_nested_table_keeps_the_parent_defaults(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[transfer]\nseeds = 2\n[training.fewshot]\nlr = 0.5\n")
    config = load_toml(StudyConfig, path)
    assert config.transfer.seeds == 2 and config.transfer.shots == StudyConfig().transfer.shots == ()
    assert config.training.fewshot.lr == 0.5 and config.training.fewshot.min_steps == StudyConfig().training.fewshot.min_steps


def test_bad_config_is_one_line_and_exit_2_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from paramreuse.cli import app

    path = tmp_path / "config.toml"
    path.write_text("[transfer]\nstrategies = ['plan', 'magic']\n")
    result = CliRunner().invoke(app, ["study", "--config", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "strategies: unknown value 'magic'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # refused before any folder or training
