"""Described options: a dataclass field that carries what it is for and what it may hold.

The training recipe's defaults live once, on the dataclasses that use them (TrainerConfig,
SessionConfig, TripletRules); the training node's parameters are generated from these fields
(nodes.parameters.params_of), and config/*.yaml are tested to hold the same values.
"""
from __future__ import annotations

import dataclasses
from typing import Any


def option(default: Any, description: str, *, low: float | None = None, high: float | None = None,
           choices: tuple[str, ...] = ()) -> Any:
    """A dataclass field with `default`, described by `description`, bounded by `low`/`high`
    (inclusive) or limited to `choices`."""
    metadata = {'help': description, 'low': low, 'high': high, 'choices': choices}
    return dataclasses.field(default=default, metadata=metadata)


def redefault(cls: type, name: str, default: Any) -> Any:
    """The option `name` of dataclass `cls` with another default: a subclass's recipe keeps the
    description and range."""
    base = next(f for f in dataclasses.fields(cls) if f.name == name)
    return dataclasses.field(default=default, metadata=base.metadata)


def described(cls: type) -> dict[str, dataclasses.Field]:
    """The fields of dataclass `cls` that are options, by name."""
    return {f.name: f for f in dataclasses.fields(cls) if 'help' in f.metadata}
