"""Errors that mean "the input is wrong": the CLI turns them into one line and exit code 2."""

from __future__ import annotations


class ParamreuseError(Exception):
    """Bad input from the user: say what is wrong and how to fix it, in one line."""


class SpecError(ParamreuseError):
    """An architecture or data spec that cannot be understood or built."""


class DataError(ParamreuseError):
    """Missing data, impossible class selections or shot counts."""


class CheckpointError(ParamreuseError):
    """A checkpoint that cannot be read, does not match, or is unsafe."""


class PlanError(ParamreuseError):
    """A plan.json that cannot be read, or whose units do not match the model it is applied to."""
