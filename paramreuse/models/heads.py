"""Find a model's task head: the layer whose outputs are the classes."""

from __future__ import annotations

from torch import nn


def head_module_name(model: nn.Module) -> str:
    """Dotted name of the head module: timm's classifier, smp's segmentation head, else the last Linear."""
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        classifier = get_classifier()
        for name, module in model.named_modules():
            if module is classifier:
                return name
    if hasattr(model, "segmentation_head"):
        return "segmentation_head"
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1]
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if convs:
        return convs[-1]
    raise ValueError("model has no Linear or Conv2d layer to act as its head")


def in_head(module_name: str, head: str) -> bool:
    """Whether a module is the head or lies inside it (smp's ``segmentation_head.0`` is its conv)."""
    return module_name == head or module_name.startswith(head + ".")


def head_names(model: nn.Module) -> list[str]:
    """State-dict keys that belong to the head."""
    prefix = head_module_name(model) + "."
    return [k for k in model.state_dict() if k.startswith(prefix)]


def head_size(model: nn.Module) -> int:
    """The number of outputs of a model's task head (classes, mask labels or channels)."""
    state = model.state_dict()
    return int(next(state[k].shape[0] for k in head_names(model) if state[k].ndim >= 1))
