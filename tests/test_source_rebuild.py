"""S with a fresh head for T, built once: the same tensors as each place that used to build it by hand.

The ``*_as_written`` functions are the bodies the cross-fit, ``fit_to`` and the study's given S
had before they shared one builder; every architecture the tests and benchmarks use must give
the same state dict, tensor by tensor, and leave the caller's random stream where it was.
"""

from __future__ import annotations

import types

import pytest
import torch

from paramreuse.judge.crossfit import source_for
from paramreuse.models import build_model, fit_state
from paramreuse.models.checkpoint import ModelInfo
from paramreuse.models.loading import fit_to, rebuilt_for
from paramreuse.models.transplant import transplant, unit_names
from paramreuse.vocabulary import Decision

ARCHS = ["builtin:cnn?width=4", "builtin:unet?width=4", "torchvision:resnet18", "smp:PSPNet/resnet18"]


def crossfit_as_written(arch, state, data, seed):
    torch.manual_seed(seed)
    model = build_model(arch, data.channels, data.num_outputs)
    transplant(state, model, dict.fromkeys(unit_names(model), Decision.FINETUNED.value))
    return model


def fit_to_as_written(source, info, *, channels, num_outputs, seed=0, where, keep_head=False):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(info.arch, channels, num_outputs)
    fit = fit_state(source.state_dict(), model, info.arch, where=where, keep_head=keep_head, adapt_input=False)
    return model.eval(), fit


def given_as_written(state, arch, channels, num_classes, seed):
    torch.manual_seed(seed)
    model = build_model(arch, channels, num_classes)
    fit_state(state, model, arch, where="--source s", adapt_input=False)
    return model


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


def _source(arch: str, channels: int, classes: int) -> torch.nn.Module:
    torch.manual_seed(123)
    source = build_model(arch, channels, classes)
    with torch.no_grad():  # BN statistics S has learned, so that copying them shows
        for name, tensor in source.state_dict().items():
            if name.endswith(("running_mean", "running_var")):
                tensor.uniform_(0.5, 1.5)
    return source


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source_classes", [3, 5])
def test_crossfit_source_is_the_source_it_was(arch, source_classes):
    source = _source(arch, 3, source_classes)
    data = types.SimpleNamespace(channels=3, num_outputs=5)
    state = source.state_dict()
    # Transplanting every unit and fitting every tensor agree here; the cross-fit re-seeds (train, the
    # fresh networks) before any later draw, so the stream after S was never part of its result.
    assert_same_state(crossfit_as_written(arch, state, data, seed=7), source_for(arch, state, data, seed=7))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("keep_head", [False, True])
def test_fit_to_is_the_source_it_was(arch, keep_head):
    source = _source(arch, 3, 3)
    info = ModelInfo(arch=arch, in_channels=3, num_classes=3)
    torch.manual_seed(1)
    old, old_fit = fit_to_as_written(source, info, channels=3, num_outputs=5, seed=7, where="s", keep_head=keep_head)
    after_old = torch.rand(3)
    torch.manual_seed(1)
    new, new_fit = fit_to(source, info, channels=3, num_outputs=5, seed=7, where="s", keep_head=keep_head)
    assert torch.equal(torch.rand(3), after_old)  # the caller's random stream is untouched
    assert_same_state(old, new)
    assert old_fit == new_fit and not new.training


@pytest.mark.parametrize("arch", ARCHS)
def test_given_source_is_the_source_it_was(arch):
    source = _source(arch, 1, 4)
    old = given_as_written(source.state_dict(), arch, 1, 4, seed=3)
    new, fit = rebuilt_for(source.state_dict(), arch, channels=1, num_outputs=4, seed=3, where="--source s",
                           keep_head=True)  # as the study's given S calls it
    assert_same_state(old, new)
    assert fit.fresh == () and fit.adapted == ()
