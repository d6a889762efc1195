"""The example configurations in examples/ load, and their networks fit their data."""

from pathlib import Path

import pytest
import torch

from paramreuse.config import load_toml
from paramreuse.models import build_model
from paramreuse.study import StudyConfig

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))


def test_there_are_the_two_segmentation_examples():
    assert {p.stem for p in EXAMPLES} >= {"autoencoder-to-segmentation", "segmentation-to-segmentation"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_loads_and_builds(path):
    config = load_toml(StudyConfig, path)
    assert config.target.shots == 10 and config.source.classes == "0-4" and config.target.classes == "5-9"
    assert config.target.data.startswith("fashion-mnist-seg")
    model = build_model(config.arch, 1, 2).eval()
    with torch.no_grad():  # one output map per mask label, at the size of Fashion-MNIST's images
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 2, 28, 28)
