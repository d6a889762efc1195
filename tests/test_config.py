import pytest

from paramreuse.config import ConfigError, load_toml
from paramreuse.study import StudyConfig
from paramreuse.train import TrainConfig


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
