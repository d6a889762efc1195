"""The factory: an architecture spec -> a model, its builder composed with the pretrained weights it names."""

from __future__ import annotations

from torch import nn

from paramreuse.errors import SpecError
from paramreuse.models.pretrained import pretrained_into
from paramreuse.models.registry import architecture_of, build_fresh, split_spec, wants_pretrained


def build_model(spec: str, in_channels: int, num_classes: int, *, strict: bool = True) -> nn.Module:
    """Build the architecture named by ``spec``: fresh parameters, or the pretrained ones it names
    (input layer adapted to ``in_channels``, a fresh head when ``num_classes`` differs).

    ``strict=False`` skips the check that a ``py:`` factory honoured ``in_channels`` (used to
    find which tensors follow the sizes).
    """
    if in_channels < 1 or num_classes < 1:
        raise SpecError(f"in_channels and num_classes must be positive, got {in_channels}, {num_classes}")
    split_spec(spec)
    if not wants_pretrained(spec):
        return build_fresh(spec, in_channels, num_classes, strict=strict)
    base = architecture_of(spec)
    return pretrained_into(build_model(base, in_channels, num_classes), spec, base)
